package mesh

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestKeyringSeedAndRotate(t *testing.T) {
	dir := t.TempDir()
	if kr, _, err := LoadKeyring(dir, ""); err != nil || kr != nil {
		t.Fatalf("no key anywhere: %v, %v", kr, err)
	}
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	b1, _ := ParseKey(k1)
	b2, _ := ParseKey(k2)
	kr, _, err := LoadKeyring(dir, k1)
	if err != nil || kr == nil || !slices.Equal(kr.List(), []string{Fingerprint(b1)}) {
		t.Fatalf("seeded from the environment: %v, %v", kr, err)
	}
	// The saved keyring wins over a different seed later.
	if again, _, err := LoadKeyring(dir, k2); err != nil || again.List()[0] != Fingerprint(b1) {
		t.Fatalf("reload: %v, %v", again, err)
	}

	if err := kr.Apply("use", k2); err == nil {
		t.Fatal("using a key that is not installed succeeded")
	}
	for _, s := range []struct {
		op, key string
		want    []string
	}{
		{"install", k2, []string{Fingerprint(b1), Fingerprint(b2)}},
		{"use", k2, []string{Fingerprint(b2), Fingerprint(b1)}},
		{"remove", k1, []string{Fingerprint(b2)}},
	} {
		if err := kr.Apply(s.op, s.key); err != nil || !slices.Equal(kr.List(), s.want) {
			t.Fatalf("%s: %v, %v; want %v", s.op, kr.List(), err, s.want)
		}
	}
	if err := kr.Apply("remove", k2); err == nil {
		t.Fatal("removing the primary key succeeded")
	}
	if err := kr.Apply("install", "not base64!"); err == nil {
		t.Fatal("a malformed key was installed")
	}
	if err := kr.Apply("rotate", k2); err == nil {
		t.Fatal("an unknown operation succeeded")
	}
	// The rotation survives a restart.
	if again, _, err := LoadKeyring(dir, ""); err != nil || !slices.Equal(again.List(), []string{Fingerprint(b2)}) {
		t.Fatalf("after restart: %v, %v", again, err)
	}
}

// TestKeyringReadsFormatZero: a keyring saved before the format had a
// version is read as it is.
func TestKeyringReadsFormatZero(t *testing.T) {
	dir := t.TempDir()
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	b2, _ := ParseKey(k2)
	old := `{"primary":"` + k2 + `","keys":["` + k1 + `","` + k2 + `"]}`
	if err := os.WriteFile(filepath.Join(dir, KeysFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, note, err := LoadKeyring(dir, "")
	if err != nil || note != "" || kr == nil || len(kr.List()) != 2 || kr.List()[0] != Fingerprint(b2) {
		t.Fatalf("format 0: %v, %q, %v", kr, note, err)
	}
}

func TestKeyringFromFileAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	k, _ := GenerateKey()
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte(k+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, _, err := LoadKeyring(dir, "")
	if err != nil || kr == nil {
		t.Fatalf("seeded from %s: %v", KeyFile, err)
	}
	// A corrupt keyring is set aside and seeded again, with a note.
	for _, garbage := range []string{"{garbage", `{"keys":[]}`} {
		if err := os.WriteFile(filepath.Join(dir, KeysFile), []byte(garbage), 0o600); err != nil {
			t.Fatal(err)
		}
		kr, note, err := LoadKeyring(dir, "")
		if err != nil || kr == nil || note == "" {
			t.Fatalf("corrupt keyring %q with a seed: %v, %q, %v", garbage, kr, note, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, KeysFile+".corrupt")); err != nil || string(b) != garbage {
			t.Fatalf("corrupt keyring not kept aside: %q, %v", b, err)
		}
	}
	// Without any seed, a corrupt keyring is an error, never an open mesh.
	if err := os.Remove(filepath.Join(dir, KeyFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeysFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if kr, _, err := LoadKeyring(dir, ""); err == nil || kr != nil {
		t.Fatalf("corrupt keyring without a seed: %v, %v", kr, err)
	}
	for _, bad := range []string{"", "abc", "AAAA"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

// TestKeyringEncryptsTheMesh: members sharing a keyring talk; a member
// with another key is kept out; a rotation keeps the mesh together.
func TestKeyringEncryptsTheMesh(t *testing.T) {
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	rings := map[string]*Keyring{}
	for _, name := range []string{"n0", "n1", "x"} {
		seed := k1
		if name == "x" {
			seed = k2
		}
		kr, _, err := LoadKeyring(t.TempDir(), seed)
		if err != nil {
			t.Fatal(err)
		}
		rings[name] = kr
	}
	l := newLab(t)
	with := func(name string) func(*Config) { return func(c *Config) { c.Keyring = rings[name] } }
	n0 := l.start("n0", with("n0"))
	n1 := l.start("n1", with("n1"), "n0")
	waitAlive(t, converge, []*Mesh{n0, n1}, 2)
	x := l.start("x", with("x"), "n0")
	n1.Put("t", "k", []byte("v"))
	waitView(t, converge, []*Mesh{n0}, "t", []string{"k=v@n1"})
	if got := aliveCount(x); got != 1 {
		t.Fatalf("a member with another key sees %d alive", got)
	}
	// Rotate n0 and n1 to k2, the outsider's key: then it gets in.
	for _, step := range []string{"install", "use"} {
		for _, name := range []string{"n0", "n1"} {
			if err := rings[name].Apply(step, k2); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitAlive(t, converge, []*Mesh{n0, n1, x}, 3)
	waitView(t, converge, []*Mesh{x}, "t", []string{"k=v@n1"})
}
