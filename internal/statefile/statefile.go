// Package statefile is weft's one way to keep state on disk. Every file is
// one JSON object carrying a format version ("version", absent in the first
// formats: version 0), written atomically: a temporary file in the same
// directory, fsync, rename over the old file, fsync of the directory, so a
// crash leaves the old file or the new one, never a mix. A file that cannot
// be read as its format is set aside once, renamed with a ".corrupt" suffix
// so that the next save does not destroy the evidence, and reported to the
// caller, which logs it once and starts without it.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CorruptSuffix is appended to the name of a file set aside.
const CorruptSuffix = ".corrupt"

// CorruptError reports a state file that was unreadable and has been set
// aside.
type CorruptError struct {
	// Path is the file that was read.
	Path string
	// Aside is where it was moved; empty if it could not be moved.
	Aside string
	// Err says what was wrong with it.
	Err error
}

func (e *CorruptError) Error() string {
	if e.Aside == "" {
		return fmt.Sprintf("state file %s is unreadable (%v) and could not be set aside", e.Path, e.Err)
	}
	return fmt.Sprintf("state file %s is unreadable (%v); kept as %s", e.Path, e.Err, e.Aside)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Load reads the JSON document at path into v and returns its format
// version (0 when the file has none). A missing file returns an error that
// matches fs.ErrNotExist and leaves v untouched. A file that is not JSON,
// or whose version is above maxVersion (written by a newer weft), is set
// aside and reported as a *CorruptError; v is then left in an unspecified
// state, so callers decode into a fresh value.
func Load(path string, v any, maxVersion int) (version int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return 0, setAside(path, err)
	}
	if probe.Version < 0 || probe.Version > maxVersion {
		return 0, setAside(path, fmt.Errorf("format version %d, this weft reads up to %d", probe.Version, maxVersion))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return 0, setAside(path, err)
	}
	return probe.Version, nil
}

// SetAside moves an unusable state file out of the way (see Load) and
// returns the *CorruptError that says so, for callers that find a file
// unusable after decoding it (a required field missing, say).
func SetAside(path string, why error) error { return setAside(path, why) }

func setAside(path string, why error) error {
	aside := path + CorruptSuffix
	if err := os.Rename(path, aside); err != nil {
		return &CorruptError{Path: path, Err: why}
	}
	return &CorruptError{Path: path, Aside: aside, Err: why}
}

// Save replaces path with v encoded as JSON, atomically, readable by its
// owner only. The directory is created if needed. The caller puts its
// format version in v (a "version" field).
func Save(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return WriteAtomic(path, append(b, '\n'))
}

// WriteAtomic replaces path with data so that a crash leaves either the old
// or the new content, never a mix, and the new content is on disk when it
// returns.
func WriteAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create a temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
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
	// The rename is durable only once the directory is.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
