package driver

import (
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/weftnet/weft/internal/statefile"
)

// Files in the state directory.
const (
	// stateFile holds the networks and local endpoints.
	stateFile = "networks.json"
	// allocationsFile holds the VNIs handed out by AllocateNetwork.
	allocationsFile = "allocations.json"
)

// Format versions of the files (see internal/statefile).
const (
	stateVersion       = 1
	allocationsVersion = 1
)

type stateDoc struct {
	Version  int        `json:"version"`
	Networks []*Network `json:"networks"`
}

type allocationsDoc struct {
	Version int `json:"version"`
	// VNIs by network ID.
	VNIs map[string]uint32 `json:"vnis"`
}

// store persists the driver's networks and endpoints, and the leader's
// VNI allocations, in the state directory.
type store struct {
	dir string // empty: memory only
}

// load reads the networks. A missing file is an empty state; an unreadable
// one is set aside, logged, and an empty state.
func (s store) load(log *slog.Logger) []*Network {
	if s.dir == "" {
		return nil
	}
	var doc stateDoc
	ver, err := statefile.Load(filepath.Join(s.dir, stateFile), &doc, stateVersion)
	if err == nil && ver != stateVersion {
		err = statefile.SetAside(filepath.Join(s.dir, stateFile), errors.New("no format version"))
	}
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("state file unreadable; starting from an empty state (the engine's view is adopted on its first answer)", "err", err)
		}
		return nil
	}
	var out []*Network
	for _, n := range doc.Networks {
		if n == nil || n.ID == "" || n.VNI == 0 {
			continue
		}
		if n.Endpoints == nil {
			n.Endpoints = map[string]*Endpoint{}
		}
		out = append(out, n)
	}
	return out
}

// save writes the whole state.
func (s store) save(nets []*Network) error {
	if s.dir == "" {
		return nil
	}
	slices.SortFunc(nets, func(a, b *Network) int { return strings.Compare(a.ID, b.ID) })
	return statefile.Save(filepath.Join(s.dir, stateFile), stateDoc{Version: stateVersion, Networks: nets})
}

// loadAllocations reads the VNI allocations; a missing or unreadable file
// is an empty map (the latter logged). Version 0 is the first format: the
// bare map.
func (s store) loadAllocations(log *slog.Logger) map[string]uint32 {
	out := map[string]uint32{}
	if s.dir == "" {
		return out
	}
	path := filepath.Join(s.dir, allocationsFile)
	var doc allocationsDoc
	ver, err := statefile.Load(path, &doc, allocationsVersion)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		log.Warn("VNI allocations unreadable; starting empty", "err", err)
	case ver == 0:
		if _, err := statefile.Load(path, &out, 0); err != nil {
			log.Warn("VNI allocations unreadable; starting empty", "err", err)
			return map[string]uint32{}
		}
	default:
		if doc.VNIs != nil {
			out = doc.VNIs
		}
	}
	return out
}

// saveAllocations writes the VNI allocations.
func (s store) saveAllocations(a map[string]uint32) error {
	if s.dir == "" {
		return nil
	}
	return statefile.Save(filepath.Join(s.dir, allocationsFile), allocationsDoc{Version: allocationsVersion, VNIs: a})
}
