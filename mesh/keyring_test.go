package mesh

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestKeyringSeedAndRotate(t *testing.T) {
	dir := t.TempDir()
	if kr, _, err := LoadKeyring(dir, ""); err != nil || !kr.Empty() || kr.HadKey() != "" {
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
	writeKeyFile := func() {
		if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte(k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeyFile()
	kr, _, err := LoadKeyring(dir, "")
	if err != nil || kr.Empty() {
		t.Fatalf("seeded from %s: %v", KeyFile, err)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); !os.IsNotExist(err) {
		t.Fatalf("%s not consumed: %v", KeyFile, err)
	}
	// A corrupt keyring is set aside and seeded again, with a note.
	for _, garbage := range []string{"{garbage", `{"keys":[]}`} {
		writeKeyFile()
		if err := os.WriteFile(filepath.Join(dir, KeysFile), []byte(garbage), 0o600); err != nil {
			t.Fatal(err)
		}
		kr, note, err := LoadKeyring(dir, "")
		if err != nil || kr.Empty() || note == "" {
			t.Fatalf("corrupt keyring %q with a seed: %v, %q, %v", garbage, kr, note, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, KeysFile+".corrupt")); err != nil || string(b) != garbage {
			t.Fatalf("corrupt keyring not kept aside: %q, %v", b, err)
		}
	}
	// Without any seed, a corrupt keyring leaves the keyring empty, and
	// says the host had a key: never an open mesh.
	if err := os.WriteFile(filepath.Join(dir, KeysFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if kr, _, err := LoadKeyring(dir, ""); err != nil || !kr.Empty() || kr.HadKey() == "" {
		t.Fatalf("corrupt keyring without a seed: %v, %v", kr, err)
	}
	// A malformed seed is an error.
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadKeyring(dir, ""); err == nil {
		t.Fatal("a malformed mesh.key was accepted")
	}
	for _, bad := range []string{"", "abc", "AAAA"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

// TestKeyedHostNeverReopens: a host whose keyring held a key records it in
// node.json; deleting the keyring and the seed then leaves the keyring
// empty with HadKey saying why, and a WEFT_MESH_KEY once used is not read
// again.
func TestKeyedHostNeverReopens(t *testing.T) {
	dir := t.TempDir()
	k, _ := GenerateKey()
	kb, _ := ParseKey(k)
	if kr, _, err := LoadKeyring(dir, k); err != nil || kr.Empty() {
		t.Fatalf("seeded from the environment: %v", err)
	}
	n, err := LoadNode(dir)
	if err != nil || n.Keyed == "" || !slices.Contains(n.Seeds, Fingerprint(kb)) {
		t.Fatalf("node.json after keying: %+v, %v", n, err)
	}
	if err := os.Remove(filepath.Join(dir, KeysFile)); err != nil {
		t.Fatal(err)
	}
	kr, note, err := LoadKeyring(dir, k)
	if err != nil || !kr.Empty() || kr.HadKey() == "" || !strings.Contains(note, "used once already") {
		t.Fatalf("keyring deleted, the used seed still set: empty=%v had=%q note=%q err=%v", kr.Empty(), kr.HadKey(), note, err)
	}
	kr, _, err = LoadKeyring(dir, "")
	if err != nil || !kr.Empty() || !strings.Contains(kr.HadKey(), "node.json") {
		t.Fatalf("keyring and seed deleted: empty=%v had=%q err=%v", kr.Empty(), kr.HadKey(), err)
	}
	// Another seed is read (a new cluster key, written on purpose).
	k2, _ := GenerateKey()
	if kr, _, err := LoadKeyring(dir, k2); err != nil || kr.Empty() {
		t.Fatalf("a new seed: %v", err)
	}
	// The node's other fields survive the marks.
	if err := UpdateNode(dir, func(n *Node) { n.Addr = "192.0.2.1" }); err != nil {
		t.Fatal(err)
	}
	if n2, _ := LoadNode(dir); n2.Name != n.Name || n2.Keyed != n.Keyed || n2.Addr != "192.0.2.1" {
		t.Fatalf("node.json %+v after an update, was %+v", n2, n)
	}
}

// TestKeyringRing: a whole keyring set by a key service survives a
// restart with its generations and floor; bad rings are refused with
// nothing changed; a mesh never starts on an empty keyring.
func TestKeyringRing(t *testing.T) {
	dir := t.TempDir()
	kr, _, err := LoadKeyring(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := NewSecret()
	s2, _ := NewSecret()
	now := time.Now().UTC().Truncate(time.Second)
	r := Ring{Keys: []RingKey{{ID: KeyID{1, "m1"}, Created: now, Secret: s1}, {ID: KeyID{2, "m2"}, Created: now, Secret: s2}}, Primary: s1, Floor: KeyID{1, "m1"}}
	for _, bad := range []Ring{
		{},
		{Keys: r.Keys, Primary: []byte("not one of them, not one of them!")},
		{Keys: []RingKey{r.Keys[1], r.Keys[0]}, Primary: s1},
		{Keys: r.Keys, Primary: s1, Floor: KeyID{Gen: 2}},
	} {
		if err := kr.SetRing(bad); err == nil {
			t.Fatalf("ring %+v accepted", bad)
		}
	}
	if !kr.Empty() {
		t.Fatal("a refused ring changed the keyring")
	}
	if err := kr.SetRing(r); err != nil {
		t.Fatal(err)
	}
	again, _, err := LoadKeyring(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	got := again.Ring()
	if len(got.Keys) != 2 || got.Keys[1].ID != (KeyID{2, "m2"}) || !got.Keys[1].Created.Equal(now) || got.Floor != r.Floor || !bytes.Equal(got.Primary, s1) {
		t.Fatalf("after a restart: %+v", got)
	}
	// Dropping a key and switching the primary in one step.
	r2 := Ring{Keys: r.Keys[1:], Primary: s2, Floor: KeyID{2, "m2"}}
	if err := again.SetRing(r2); err != nil || len(again.List()) != 1 || again.List()[0] != Fingerprint(s2) {
		t.Fatalf("retire: %v, %v", again.List(), err)
	}

	empty, _, _ := LoadKeyring(t.TempDir(), "")
	cfg := DefaultConfig()
	cfg.NodeName = "n"
	cfg.Keyring = empty
	cfg.Transport, _ = NewMemNetwork().NewTransport("")
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Start("", nil); err == nil {
		t.Fatal("a mesh started on an empty keyring")
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

// FuzzKeyringFile: whatever mesh-keys.json holds, loading it never panics,
// and a keyring it yields is one memberlist takes.
func FuzzKeyringFile(f *testing.F) {
	k, _ := GenerateKey()
	f.Add([]byte(`{"version":1,"primary":"` + k + `","keys":["` + k + `"],"meta":[{"fp":"x","gen":3,"origin":"m"}],"floor":{"gen":2}}`))
	f.Add([]byte(`{"primary":"` + k + `","keys":[]}`))
	f.Add([]byte(`{"version":1,"primary":"","keys":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, KeysFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		kr, _, err := LoadKeyring(dir, "")
		if err != nil || kr.Empty() {
			return
		}
		r := kr.Ring()
		if _, ok := r.PrimaryKey(); !ok {
			t.Fatalf("loaded keyring without its primary among its keys: %+v", r)
		}
	})
}

// TestKeyringReadyAfterCorruptRing: a host that has had a key (node.json
// says so) whose keyring file is corrupt starts empty and waits; the ring
// a key service hands it makes it ready, so its mesh starts (seen in the
// lab: the mesh stayed off after the keyring came back).
func TestKeyringReadyAfterCorruptRing(t *testing.T) {
	dir := t.TempDir()
	if err := UpdateNode(dir, func(n *Node) { n.Keyed = "2026-01-01T00:00:00Z" }); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeysFile), []byte("{garbled"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, _, err := LoadKeyring(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if !k.Empty() || k.HadKey() == "" {
		t.Fatalf("a corrupt keyring: empty %v, had %q", k.Empty(), k.HadKey())
	}
	select {
	case <-k.Ready():
		t.Fatal("ready without a key")
	default:
	}
	s := bytes.Repeat([]byte{7}, 32)
	r := Ring{Keys: []RingKey{{ID: KeyID{3, "m1"}, Created: time.Now(), Secret: s}}, Primary: s, Floor: KeyID{3, "m1"}}
	if err := k.SetRing(r); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.Ready():
	default:
		t.Fatal("not ready once the key service handed a ring over")
	}
}
