package mesh

// This file owns the keys that encrypt the mesh's gossip: the Keyring (a
// memberlist keyring plus its file in the state directory), how it is first
// seeded and how a seed is consumed, the mark that keeps a host that once
// had a key from ever running its mesh open by itself, the manual rotation
// steps, the whole-keyring replacement a key service uses (generations, and
// a floor below which keys are retired for good), and the key format.
// Keyring.mu serialises changes and their saving; it is never held with
// Mesh.mu (memberlist's keyring has its own lock, which memberlist takes
// while it encrypts).

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/weftnet/weft/internal/statefile"
)

// KeysFile holds the mesh's keyring in the state directory.
const KeysFile = "mesh-keys.json"

// KeyFile is where an operator may drop the cluster key (copied from a
// swarm secret, say); it seeds the keyring when there is none yet, and is
// removed once the keyring holds its key.
const KeyFile = "mesh.key"

// keysVersion is the format of KeysFile written now. Version 0 had no
// version field; version 1 added it, and later "meta" and "floor", which
// builds from before them ignore (and drop when they save).
const keysVersion = 1

// keysDoc is the keyring as stored: base64 keys, the primary first.
type keysDoc struct {
	Version int      `json:"version"`
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
	// Meta places the keys a key service handed out (by fingerprint).
	Meta  []keyMeta `json:"meta,omitempty"`
	Floor *KeyID    `json:"floor,omitempty"`
}

type keyMeta struct {
	Fingerprint string `json:"fp"`
	KeyID
	Created time.Time `json:"created,omitzero"`
}

// maxRingKeys bounds a keyring: rotation keeps two or three keys at a
// time; more is a fault or an attack.
const maxRingKeys = 16

// ParseKey decodes a cluster key: base64 (standard or URL, padded or not)
// of 16, 24 or 32 bytes, as GenerateKey makes.
func ParseKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			switch len(b) {
			case 16, 24, 32:
				return b, nil
			default:
				return nil, fmt.Errorf("a mesh key must be 16, 24 or 32 bytes, not %d", len(b))
			}
		}
	}
	return nil, errors.New("a mesh key must be base64 (weft key generate makes one)")
}

// NewSecret returns a new random 32-byte key.
func NewSecret() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// GenerateKey returns a new random 32-byte key, base64.
func GenerateKey() (string, error) {
	b, err := NewSecret()
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Fingerprint names a key without revealing it.
func Fingerprint(key []byte) string {
	s := sha256.Sum256(key)
	return hex.EncodeToString(s[:6])
}

// KeyID places a key in a keyring rotated by generations: a key service
// makes generation N+1 to rotate; two nodes that make one generation at
// once are told apart, and ordered, by Origin (the node that made it).
// Keys seeded or installed by hand are generation 0, with their
// fingerprint as origin.
type KeyID struct {
	Gen    uint64 `json:"gen"`
	Origin string `json:"origin,omitempty"`
}

// Compare orders IDs by generation, then origin.
func (a KeyID) Compare(b KeyID) int {
	if c := cmp.Compare(a.Gen, b.Gen); c != 0 {
		return c
	}
	return strings.Compare(a.Origin, b.Origin)
}

func (a KeyID) String() string { return fmt.Sprintf("%d/%s", a.Gen, a.Origin) }

// RingKey is one key of a keyring and where it comes from.
type RingKey struct {
	ID      KeyID
	Created time.Time // when its origin made it; zero for seeded keys
	Secret  []byte
}

// Ring is a whole keyring, as a key service hands it over.
type Ring struct {
	Keys    []RingKey // sorted by ID
	Primary []byte    // the key gossip is encrypted with; one of Keys
	Floor   KeyID     // keys below it are retired: never installed again
}

// PrimaryKey returns the ring's primary key.
func (r Ring) PrimaryKey() (RingKey, bool) {
	for _, k := range r.Keys {
		if bytes.Equal(k.Secret, r.Primary) {
			return k, true
		}
	}
	return RingKey{}, false
}

// Check reports what makes r unusable as a keyring, in one sentence.
func (r Ring) Check() error {
	switch {
	case len(r.Keys) == 0:
		return errors.New("a keyring needs at least one key")
	case len(r.Keys) > maxRingKeys:
		return fmt.Errorf("a keyring holds at most %d keys, not %d", maxRingKeys, len(r.Keys))
	}
	for i, k := range r.Keys {
		if err := memberlist.ValidateKey(k.Secret); err != nil {
			return fmt.Errorf("key %s: %w", k.ID, err)
		}
		if k.ID.Compare(r.Floor) < 0 {
			return fmt.Errorf("key %s is below the floor %s", k.ID, r.Floor)
		}
		if i > 0 && r.Keys[i-1].ID.Compare(k.ID) >= 0 {
			return fmt.Errorf("keys are not sorted by generation, or %s is there twice", k.ID)
		}
	}
	if _, ok := r.PrimaryKey(); !ok {
		return errors.New("the primary key is not among the keys")
	}
	return nil
}

// Keyring is the set of keys the mesh encrypts its gossip with (the
// primary) and accepts (all of them), kept in KeysFile. Hand it to
// Config.Keyring; rotate keys with Apply (by hand) or SetRing (a key
// service) while the mesh runs. It may be empty (a host waiting for its
// key); a mesh never starts on an empty keyring. Its methods are safe for
// concurrent use.
type Keyring struct {
	path string
	dir  string

	// ready is closed once the keyring holds a key.
	ready     chan struct{}
	readyOnce sync.Once

	// mu serialises changes and their saving, and guards the fields
	// below.
	mu    sync.Mutex
	kr    *memberlist.Keyring
	meta  map[string]keyMeta // by fingerprint
	floor KeyID
	// had says why this host is known to have had a key; "" if it is not.
	had string
	// marked: node.json records that the host had a key.
	marked bool
	// seed is the fingerprint of the WEFT_MESH_KEY this keyring was seeded
	// from, to record as used at the next save.
	seed string
}

// LoadKeyring reads the keyring from the state directory dir; failing
// that, seeds it from KeyFile (then removes the file) or from envKey
// (WEFT_MESH_KEY; its use is recorded in node.json, and a seed once used is
// never read again), and saves it. With no key anywhere it returns an
// empty keyring: HadKey then says whether this host ever had one, in which
// case it must not run open. A corrupt keyring file is set aside (as
// mesh-keys.json.corrupt), which the returned note says. Errors are for
// keys that cannot be read at all (a malformed seed, a file that cannot be
// set aside).
func LoadKeyring(dir, envKey string) (_ *Keyring, note string, _ error) {
	path := filepath.Join(dir, KeysFile)
	k := &Keyring{path: path, dir: dir, ready: make(chan struct{}), meta: map[string]keyMeta{}}
	node, _ := LoadNode(dir) // the caller reports a bad node.json
	k.marked = node.Keyed != ""
	if k.marked {
		k.had = "its mesh has had a key since " + node.Keyed + " (node.json)"
	}
	var notes []string
	var doc keysDoc
	_, err := statefile.Load(path, &doc, keysVersion)
	if err == nil && doc.Primary == "" {
		err = statefile.SetAside(path, errors.New("no primary key"))
	}
	fileKey, ferr := readKeyFile(dir)
	if ferr != nil {
		return nil, "", ferr
	}
	var corrupt *statefile.CorruptError
	switch {
	case err == nil:
		if fileKey != nil {
			b64 := base64.StdEncoding.EncodeToString(fileKey)
			if slices.Contains(doc.Keys, b64) || doc.Primary == b64 {
				notes = append(notes, KeyFile+" removed: the keyring holds its key")
			} else {
				notes = append(notes, fmt.Sprintf("%s holds key %s, which the keyring does not: ignored (weft key install adds a key)", KeyFile, Fingerprint(fileKey)))
				fileKey = nil
			}
		}
		if envKey != "" {
			if eb, perr := ParseKey(envKey); perr == nil {
				k.noteSeedUsed(node, Fingerprint(eb))
			}
			notes = append(notes, "WEFT_MESH_KEY is set but never read while the keyring exists; clear it (docker plugin set <plugin> WEFT_MESH_KEY=) so the key does not stay in the plugin's settings")
		}
	case errors.As(err, &corrupt) && corrupt.Aside == "":
		return nil, "", fmt.Errorf("%s is corrupt and cannot be set aside: %w", path, err)
	case errors.As(err, &corrupt), errors.Is(err, fs.ErrNotExist):
		if corrupt != nil {
			k.had = fmt.Sprintf("its keyring %s was corrupt (kept as %s)", path, corrupt.Aside)
			notes = append(notes, k.had)
		}
		var seed []byte
		switch {
		case fileKey != nil:
			seed = fileKey
			notes = append(notes, "keyring seeded from "+KeyFile+" (the file is removed)")
		case envKey != "":
			eb, perr := ParseKey(envKey)
			if perr != nil {
				return nil, "", fmt.Errorf("WEFT_MESH_KEY: %w", perr)
			}
			if fp := Fingerprint(eb); slices.Contains(node.Seeds, fp) {
				k.had = "WEFT_MESH_KEY (" + fp + ") seeded it once already"
				notes = append(notes, "WEFT_MESH_KEY "+fp+" was used once already on this host and is not read again: its keyring is gone, and that key may have been rotated away; write the cluster's current key to "+KeyFile)
			} else {
				seed, k.seed = eb, fp
				notes = append(notes, "keyring seeded from WEFT_MESH_KEY (recorded: it is not read again)")
			}
		}
		if seed != nil {
			doc = keysDoc{Primary: base64.StdEncoding.EncodeToString(seed), Keys: []string{base64.StdEncoding.EncodeToString(seed)}}
		} else {
			doc = keysDoc{}
		}
	default:
		return nil, "", fmt.Errorf("read keyring: %w", err)
	}
	if err := k.load(doc); err != nil {
		return nil, "", err
	}
	if !k.Empty() {
		k.mu.Lock()
		err := k.saveLocked()
		k.mu.Unlock()
		if err != nil {
			return nil, "", err
		}
		// Consumed: the keyring, saved and synced, holds the file's key.
		if fileKey != nil && slices.Contains(k.List(), Fingerprint(fileKey)) {
			_ = os.Remove(filepath.Join(dir, KeyFile))
		}
	}
	return k, strings.Join(notes, "; "), nil
}

// readKeyFile reads KeyFile in dir; nil when there is none.
func readKeyFile(dir string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", KeyFile, err)
	}
	kb, err := ParseKey(string(bytes.TrimSpace(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyFile, err)
	}
	return kb, nil
}

// noteSeedUsed records in node.json that the WEFT_MESH_KEY of fingerprint
// fp was used, unless it is recorded already.
func (k *Keyring) noteSeedUsed(node Node, fp string) {
	if slices.Contains(node.Seeds, fp) {
		return
	}
	_ = UpdateNode(k.dir, func(n *Node) {
		if !slices.Contains(n.Seeds, fp) {
			n.Seeds = append(n.Seeds, fp)
		}
	})
}

// load fills the keyring from a stored document.
func (k *Keyring) load(doc keysDoc) error {
	var (
		primary []byte
		others  [][]byte
	)
	if doc.Primary != "" {
		var err error
		if primary, err = ParseKey(doc.Primary); err != nil {
			return fmt.Errorf("mesh key: %w", err)
		}
	}
	for _, s := range doc.Keys {
		kb, err := ParseKey(s)
		if err != nil {
			return fmt.Errorf("mesh keyring: %w", err)
		}
		others = append(others, kb)
	}
	kr, err := memberlist.NewKeyring(others, primary)
	if err != nil {
		return fmt.Errorf("mesh keyring: %w", err)
	}
	k.kr = kr
	for _, m := range doc.Meta {
		k.meta[m.Fingerprint] = m
	}
	if doc.Floor != nil {
		k.floor = *doc.Floor
	}
	if len(kr.GetKeys()) > 0 {
		k.readyOnce.Do(func() { close(k.ready) })
	}
	return nil
}

// saveLocked writes the keyring, then records in node.json that this host
// has had a key (once) and which seed it used.
func (k *Keyring) saveLocked() error {
	doc := keysDoc{Version: keysVersion}
	if p := k.kr.GetPrimaryKey(); p != nil {
		doc.Primary = base64.StdEncoding.EncodeToString(p)
	}
	for _, key := range k.kr.GetKeys() {
		doc.Keys = append(doc.Keys, base64.StdEncoding.EncodeToString(key))
		if m, ok := k.meta[Fingerprint(key)]; ok {
			doc.Meta = append(doc.Meta, m)
		}
	}
	if k.floor != (KeyID{}) {
		f := k.floor
		doc.Floor = &f
	}
	if err := statefile.Save(k.path, doc); err != nil {
		return fmt.Errorf("save keyring: %w", err)
	}
	if len(doc.Keys) == 0 {
		return nil
	}
	if !k.marked || k.seed != "" {
		seed := k.seed
		err := UpdateNode(k.dir, func(n *Node) {
			if n.Keyed == "" {
				n.Keyed = time.Now().UTC().Format(time.RFC3339)
			}
			if seed != "" && !slices.Contains(n.Seeds, seed) {
				n.Seeds = append(n.Seeds, seed)
			}
		})
		if err != nil {
			return fmt.Errorf("record in %s that this host has a mesh key: %w", NodeFile, err)
		}
		k.marked, k.seed = true, ""
	}
	// Ready also when the host was marked already: a host whose keyring
	// was lost or corrupt gets its keys back from the key service (or
	// weft key install) and must start its mesh then.
	k.readyOnce.Do(func() { close(k.ready) })
	return nil
}

// Empty reports whether the keyring holds no key.
func (k *Keyring) Empty() bool { return len(k.kr.GetKeys()) == 0 }

// Ready returns a channel closed once the keyring holds a key.
func (k *Keyring) Ready() <-chan struct{} { return k.ready }

// HadKey says why this host is known to have had a mesh key (node.json's
// mark, a corrupt keyring, a seed used before); "" if nothing says so.
// A host that had a key must not run its mesh open.
func (k *Keyring) HadKey() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.had
}

// Apply runs one manual rotation step on key (base64): "install" adds it,
// "use" makes it the primary (it must be installed), "remove" drops it
// (never the primary). The keyring is saved after each step.
func (k *Keyring) Apply(op, key string) error {
	kb, err := ParseKey(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch op {
	case "install":
		if len(k.kr.GetKeys()) >= maxRingKeys {
			return fmt.Errorf("the keyring holds %d keys already; remove one first", maxRingKeys)
		}
		err = k.kr.AddKey(kb)
	case "use":
		if !slices.ContainsFunc(k.kr.GetKeys(), func(x []byte) bool { return bytes.Equal(x, kb) }) {
			return fmt.Errorf("key %s is not installed; install it on every host first", Fingerprint(kb))
		}
		err = k.kr.UseKey(kb)
	case "remove":
		if bytes.Equal(k.kr.GetPrimaryKey(), kb) {
			return errors.New("the primary key cannot be removed; use another key first")
		}
		err = k.kr.RemoveKey(kb)
		delete(k.meta, Fingerprint(kb))
	default:
		return fmt.Errorf("unknown key operation %q (install, use, remove)", op)
	}
	if err != nil {
		return err
	}
	return k.saveLocked()
}

// List returns the fingerprints of the installed keys, the primary first.
func (k *Keyring) List() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, key := range k.kr.GetKeys() {
		out = append(out, Fingerprint(key))
	}
	return out
}

// Ring returns the whole keyring: its keys sorted by ID (keys without a
// generation are generation 0 with their fingerprint as origin), its
// primary and its floor. Secrets are copies.
func (k *Keyring) Ring() Ring {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := Ring{Primary: bytes.Clone(k.kr.GetPrimaryKey()), Floor: k.floor}
	for _, key := range k.kr.GetKeys() {
		fp := Fingerprint(key)
		rk := RingKey{ID: KeyID{Origin: fp}, Secret: bytes.Clone(key)}
		if m, ok := k.meta[fp]; ok {
			rk.ID, rk.Created = m.KeyID, m.Created
		}
		r.Keys = append(r.Keys, rk)
	}
	slices.SortFunc(r.Keys, func(a, b RingKey) int { return a.ID.Compare(b.ID) })
	return r
}

// SetRing replaces the whole keyring with r and saves it: the new keys are
// installed first, then the primary switched, then the keys r lacks
// removed, so that a packet in flight is never refused in between.
func (k *Keyring) SetRing(r Ring) error {
	if err := r.Check(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	keep := map[string]bool{}
	meta := map[string]keyMeta{}
	for _, rk := range r.Keys {
		fp := Fingerprint(rk.Secret)
		keep[fp] = true
		meta[fp] = keyMeta{Fingerprint: fp, KeyID: rk.ID, Created: rk.Created}
		if err := k.kr.AddKey(bytes.Clone(rk.Secret)); err != nil {
			return fmt.Errorf("install key %s: %w", rk.ID, err)
		}
	}
	if err := k.kr.UseKey(r.Primary); err != nil {
		return fmt.Errorf("use key %s: %w", Fingerprint(r.Primary), err)
	}
	for _, key := range slices.Clone(k.kr.GetKeys()) {
		if !keep[Fingerprint(key)] {
			if err := k.kr.RemoveKey(key); err != nil {
				return fmt.Errorf("remove key %s: %w", Fingerprint(key), err)
			}
		}
	}
	k.meta, k.floor = meta, r.Floor
	return k.saveLocked()
}
