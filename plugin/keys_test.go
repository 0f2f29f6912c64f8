package plugin

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestKeyringSeedRotateAndControl(t *testing.T) {
	dir := t.TempDir()
	if kr, _, err := loadKeyring(dir, ""); err != nil || kr != nil {
		t.Fatalf("no key anywhere: %v, %v", kr, err)
	}
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	b1, _ := ParseKey(k1)
	b2, _ := ParseKey(k2)
	kr, _, err := loadKeyring(dir, k1)
	if err != nil || kr == nil || !slices.Equal(kr.list(), []string{Fingerprint(b1)}) {
		t.Fatalf("seeded from the environment: %v, %v", kr, err)
	}
	// The saved keyring wins over a different seed later.
	if again, _, err := loadKeyring(dir, k2); err != nil || again.list()[0] != Fingerprint(b1) {
		t.Fatalf("reload: %v, %v", again, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := serveControl(ctx, dir, kr, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := KeyCommand(ctx, dir, "use", k2); err == nil {
		t.Fatal("using a key that is not installed succeeded")
	}
	steps := []struct {
		op, key string
		want    []string
	}{
		{"install", k2, []string{Fingerprint(b1), Fingerprint(b2)}},
		{"use", k2, []string{Fingerprint(b2), Fingerprint(b1)}},
		{"remove", k1, []string{Fingerprint(b2)}},
	}
	for _, s := range steps {
		got, err := KeyCommand(ctx, dir, s.op, s.key)
		if err != nil || !slices.Equal(got, s.want) {
			t.Fatalf("%s: %v, %v; want %v", s.op, got, err, s.want)
		}
	}
	if _, err := KeyCommand(ctx, dir, "remove", k2); err == nil {
		t.Fatal("removing the primary key succeeded")
	}
	if _, err := KeyCommand(ctx, dir, "install", "not base64!"); err == nil {
		t.Fatal("a malformed key was installed")
	}
	// The rotation survives a restart.
	if again, _, err := loadKeyring(dir, ""); err != nil || !slices.Equal(again.list(), []string{Fingerprint(b2)}) {
		t.Fatalf("after restart: %v, %v", again, err)
	}
	if st, err := os.Stat(filepath.Join(dir, ControlSocket)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode: %v, %v", st, err)
	}
}

func TestKeyringFromFileAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	k, _ := GenerateKey()
	if err := os.WriteFile(filepath.Join(dir, keyFile), []byte(k+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, _, err := loadKeyring(dir, "")
	if err != nil || kr == nil {
		t.Fatalf("seeded from %s: %v", keyFile, err)
	}
	// A corrupt keyring is set aside and seeded again, with a note.
	if err := os.WriteFile(filepath.Join(dir, keysFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, note, err := loadKeyring(dir, "")
	if err != nil || kr == nil || note == "" {
		t.Fatalf("corrupt keyring with a seed: %v, %q, %v", kr, note, err)
	}
	if _, err := os.Stat(filepath.Join(dir, keysFile+".corrupt")); err != nil {
		t.Fatalf("corrupt keyring not kept aside: %v", err)
	}
	// Without any seed, a corrupt keyring is an error, never an open mesh.
	if err := os.Remove(filepath.Join(dir, keyFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keysFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if kr, _, err := loadKeyring(dir, ""); err == nil || kr != nil {
		t.Fatalf("corrupt keyring without a seed: %v, %v", kr, err)
	}
	for _, bad := range []string{"", "abc", "AAAA"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}
