package mesh

// This file owns the keys that encrypt the mesh's gossip: the Keyring (a
// memberlist keyring plus its file in the state directory), how it is first
// seeded, the rotation steps, and the key format. Keyring.mu serialises
// changes and their saving; it is never held with Mesh.mu (memberlist's
// keyring has its own lock, which memberlist takes while it encrypts).

import (
	"bytes"
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
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/weftnet/weft/internal/statefile"
)

// KeysFile holds the mesh's keyring in the state directory.
const KeysFile = "mesh-keys.json"

// KeyFile is where an operator may drop the cluster key (copied from a
// swarm secret, say); it seeds the keyring when there is none yet.
const KeyFile = "mesh.key"

// keysVersion is the format of KeysFile written now. Version 0 had no
// version field; version 1 only adds it.
const keysVersion = 1

// keysDoc is the keyring as stored: base64 keys, the primary first.
type keysDoc struct {
	Version int      `json:"version"`
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
}

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

// GenerateKey returns a new random 32-byte key, base64.
func GenerateKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Fingerprint names a key without revealing it.
func Fingerprint(key []byte) string {
	s := sha256.Sum256(key)
	return hex.EncodeToString(s[:6])
}

// Keyring is the set of keys the mesh encrypts its gossip with (the
// primary) and accepts (all of them), kept in KeysFile. Hand it to
// Config.Keyring; rotate keys with Apply while the mesh runs. Its methods
// are safe for concurrent use.
type Keyring struct {
	path string

	// mu serialises changes and their saving.
	mu sync.Mutex
	kr *memberlist.Keyring
}

// LoadKeyring reads the keyring from the state directory dir; failing
// that, seeds it from KeyFile or from envKey (WEFT_MESH_KEY), and saves
// it. It returns nil when no key is configured anywhere. A corrupt keyring
// file is set aside (as mesh-keys.json.corrupt) and the keyring seeded
// again, which the returned note says; with no seed either, that is an
// error: the mesh must never fall back to running open.
func LoadKeyring(dir, envKey string) (_ *Keyring, note string, _ error) {
	path := filepath.Join(dir, KeysFile)
	var doc keysDoc
	_, err := statefile.Load(path, &doc, keysVersion)
	if err == nil && doc.Primary == "" {
		err = statefile.SetAside(path, errors.New("no primary key"))
	}
	var corrupt *statefile.CorruptError
	switch {
	case err == nil:
	case errors.As(err, &corrupt) && corrupt.Aside == "":
		return nil, "", fmt.Errorf("%s is corrupt and cannot be set aside: %w", path, err)
	case errors.As(err, &corrupt), errors.Is(err, fs.ErrNotExist):
		seed := envKey
		if b, ferr := os.ReadFile(filepath.Join(dir, KeyFile)); ferr == nil {
			seed = string(bytes.TrimRight(b, "\r\n "))
		}
		if seed == "" {
			if corrupt != nil {
				return nil, "", fmt.Errorf("%s was corrupt (set aside as %s) and there is no %s or WEFT_MESH_KEY to seed it again", path, corrupt.Aside, KeyFile)
			}
			return nil, "", nil
		}
		if corrupt != nil {
			note = fmt.Sprintf("%s was corrupt: set aside as %s, keyring seeded again from %s or WEFT_MESH_KEY (keys installed since are lost: install them again)", path, corrupt.Aside, KeyFile)
		}
		doc = keysDoc{Primary: seed, Keys: []string{seed}}
	default:
		return nil, "", fmt.Errorf("read keyring: %w", err)
	}
	primary, err := ParseKey(doc.Primary)
	if err != nil {
		return nil, "", fmt.Errorf("mesh key: %w", err)
	}
	var others [][]byte
	for _, k := range doc.Keys {
		kb, err := ParseKey(k)
		if err != nil {
			return nil, "", fmt.Errorf("mesh keyring: %w", err)
		}
		others = append(others, kb)
	}
	kr, err := memberlist.NewKeyring(others, primary)
	if err != nil {
		return nil, "", fmt.Errorf("mesh keyring: %w", err)
	}
	k := &Keyring{path: path, kr: kr}
	return k, note, k.saveLocked()
}

func (k *Keyring) saveLocked() error {
	doc := keysDoc{Version: keysVersion, Primary: base64.StdEncoding.EncodeToString(k.kr.GetPrimaryKey())}
	for _, key := range k.kr.GetKeys() {
		doc.Keys = append(doc.Keys, base64.StdEncoding.EncodeToString(key))
	}
	if err := statefile.Save(k.path, doc); err != nil {
		return fmt.Errorf("save keyring: %w", err)
	}
	return nil
}

// Apply runs one rotation step on key (base64): "install" adds it,
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
		err = k.kr.AddKey(kb)
	case "use":
		if !slices.ContainsFunc(k.kr.GetKeys(), func(x []byte) bool { return bytes.Equal(x, kb) }) {
			return fmt.Errorf("key %s is not installed; install it on every host first", Fingerprint(kb))
		}
		err = k.kr.UseKey(kb)
	case "remove":
		err = k.kr.RemoveKey(kb)
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
	out := []string{Fingerprint(k.kr.GetPrimaryKey())}
	for _, key := range k.kr.GetKeys() {
		if f := Fingerprint(key); f != out[0] {
			out = append(out, f)
		}
	}
	return out
}
