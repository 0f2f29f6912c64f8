package statefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type doc struct {
	Version int      `json:"version"`
	Names   []string `json:"names"`
}

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.json")
	if err := Save(path, doc{Version: 2, Names: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	var got doc
	ver, err := Load(path, &got, 2)
	if err != nil || ver != 2 || strings.Join(got.Names, ",") != "a,b" {
		t.Fatalf("Load = %d %+v %v", ver, got, err)
	}
	// No temporary file is left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("directory holds %d files, want 1", len(ents))
	}
}

func TestLoadMissing(t *testing.T) {
	var d doc
	if _, err := Load(filepath.Join(t.TempDir(), "none.json"), &d, 1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want not-exist", err)
	}
}

func TestLoadUnversionedIsVersionZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.json")
	if err := os.WriteFile(path, []byte(`{"names":["x"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var d doc
	ver, err := Load(path, &d, 1)
	if err != nil || ver != 0 || len(d.Names) != 1 {
		t.Fatalf("Load = %d %+v %v", ver, d, err)
	}
}

func TestCorruptSetAsideOnce(t *testing.T) {
	for name, content := range map[string]string{
		"garbage": "{not json",
		"newer":   `{"version": 9}`,
		"shape":   `{"version": 1, "names": 7}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			var d doc
			_, err := Load(path, &d, 1)
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Aside != path+CorruptSuffix {
				t.Fatalf("err = %v, want a CorruptError set aside", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("corrupt file still in place: %v", err)
			}
			if b, _ := os.ReadFile(ce.Aside); string(b) != content {
				t.Errorf("set-aside file holds %q, want the original", b)
			}
			// The next load is a fresh start, not a second report.
			if _, err := Load(path, &d, 1); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("second load: %v, want not-exist", err)
			}
		})
	}
}
