package driver

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// stateFile is the driver's file in the state directory.
const stateFile = "networks.json"

// stateVersion is bumped when the file's shape changes incompatibly.
const stateVersion = 1

type stateDoc struct {
	Version  int        `json:"version"`
	Networks []*Network `json:"networks"`
}

// store persists the driver's networks and endpoints as one JSON file,
// replaced atomically (write to a temporary file, fsync, rename).
type store struct {
	dir string
	log *slog.Logger
}

// load reads the state file. A missing file is an empty state; an
// unreadable or corrupt one is returned as an error together with an empty
// state, and set aside so that the next save does not lose the evidence.
func (s *store) load() ([]*Network, error) {
	if s.dir == "" {
		return nil, nil
	}
	path := filepath.Join(s.dir, stateFile)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil || doc.Version != stateVersion {
		bad := path + ".corrupt"
		_ = os.Rename(path, bad)
		if err == nil {
			err = fmt.Errorf("version %d, want %d", doc.Version, stateVersion)
		}
		return nil, fmt.Errorf("parse %s (moved to %s): %w", path, bad, err)
	}
	var out []*Network
	for _, n := range doc.Networks {
		if n == nil || n.ID == "" || n.VNI == 0 {
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// save writes the whole state.
func (s *store) save(nets []*Network) error {
	if s.dir == "" {
		return nil
	}
	slices.SortFunc(nets, func(a, b *Network) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.MarshalIndent(stateDoc{Version: stateVersion, Networks: nets}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return writeFileAtomic(filepath.Join(s.dir, stateFile), b)
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new content, never a mix.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// allocationsFile keeps the VNIs handed out by AllocateNetwork.
const allocationsFile = "allocations.json"

// loadAllocations reads the VNI allocations; a missing or unreadable file
// is an empty map (logged).
func (s *store) loadAllocations() map[string]uint32 {
	out := map[string]uint32{}
	if s.dir == "" {
		return out
	}
	b, err := os.ReadFile(filepath.Join(s.dir, allocationsFile))
	if err != nil {
		if !os.IsNotExist(err) {
			s.log.Warn("VNI allocations unreadable; starting empty", "err", err)
		}
		return out
	}
	if err := json.Unmarshal(b, &out); err != nil {
		s.log.Warn("VNI allocations corrupt; starting empty", "err", err)
		return map[string]uint32{}
	}
	return out
}

// saveAllocations writes the VNI allocations.
func (s *store) saveAllocations(a map[string]uint32) error {
	if s.dir == "" {
		return nil
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, allocationsFile), b)
}
