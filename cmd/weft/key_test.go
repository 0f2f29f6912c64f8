package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/mesh"
)

// TestKeyNeverOnTheCommandLine: install, use and remove read the key from
// standard input or a file; one given as an argument is refused before
// anything is sent.
func TestKeyNeverOnTheCommandLine(t *testing.T) {
	k, _ := mesh.GenerateKey()
	var out, errb bytes.Buffer
	if rc := runKey([]string{"--state", t.TempDir(), "install", k}, strings.NewReader(""), &out, &errb); rc != 2 || !strings.Contains(errb.String(), "never from the command line") {
		t.Fatalf("key as an argument: rc %d, %q", rc, errb.String())
	}
	if _, err := readKey(strings.NewReader(k+"\n"), ""); err != nil {
		t.Fatalf("from stdin: %v", err)
	}
	f := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(f, []byte(k), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readKey(strings.NewReader(""), f); err != nil || got != k {
		t.Fatalf("from a file: %q, %v", got, err)
	}
	for _, bad := range []string{"", "\n", "not a key\n"} {
		if _, err := readKey(strings.NewReader(bad), ""); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
}
