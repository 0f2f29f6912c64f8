package plugin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/hashicorp/memberlist"
)

// keysFile holds the mesh's keyring in the state directory.
const keysFile = "mesh-keys.json"

// keyFile is where an operator may drop the cluster key (e.g. copied from
// a swarm secret); it seeds the keyring when there is none yet.
const keyFile = "mesh.key"

// keyDoc is the keyring as stored: base64 keys, the primary first.
type keyDoc struct {
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
}

// ParseKey decodes a cluster key: base64 (standard or URL) of 16, 24 or 32
// bytes, as `weft key generate` prints.
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

// keyring is the mesh's keyring plus its file. A nil keyring means the
// mesh is not encrypted.
type keyring struct {
	dir string

	// mu serialises changes and their saving.
	mu sync.Mutex
	kr *memberlist.Keyring
}

// loadKeyring reads the keyring from the state directory; failing that,
// seeds it from the key file or from envKey (WEFT_MESH_KEY). It returns nil
// when no key is configured anywhere. A corrupt keyring file is set aside
// (as mesh-keys.json.corrupt) and the keyring seeded again, which the
// returned note says; with no seed either, that is an error: the mesh must
// never fall back to running open.
func loadKeyring(dir, envKey string) (_ *keyring, note string, _ error) {
	path := filepath.Join(dir, keysFile)
	var doc keyDoc
	b, err := os.ReadFile(path)
	corrupt := false
	if err == nil {
		if jerr := json.Unmarshal(b, &doc); jerr != nil || doc.Primary == "" {
			if rerr := os.Rename(path, path+".corrupt"); rerr != nil {
				return nil, "", fmt.Errorf("%s is corrupt and cannot be set aside: %w", path, rerr)
			}
			corrupt, doc, err = true, keyDoc{}, os.ErrNotExist
		}
	}
	switch {
	case err == nil:
	case os.IsNotExist(err):
		seed := envKey
		if b, ferr := os.ReadFile(filepath.Join(dir, keyFile)); ferr == nil {
			seed = string(trimSpace(b))
		}
		if seed == "" {
			if corrupt {
				return nil, "", fmt.Errorf("%s was corrupt (set aside as %s.corrupt) and there is no %s or WEFT_MESH_KEY to seed it again", path, keysFile, keyFile)
			}
			return nil, "", nil
		}
		if corrupt {
			note = fmt.Sprintf("%s was corrupt: set aside as %s.corrupt, keyring seeded again from %s or WEFT_MESH_KEY (keys installed since are lost: install them again)", path, keysFile, keyFile)
		}
		doc = keyDoc{Primary: seed, Keys: []string{seed}}
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
	r := &keyring{dir: dir, kr: kr}
	return r, note, r.saveLocked()
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

func (r *keyring) saveLocked() error {
	doc := keyDoc{Primary: base64.StdEncoding.EncodeToString(r.kr.GetPrimaryKey())}
	for _, k := range r.kr.GetKeys() {
		doc.Keys = append(doc.Keys, base64.StdEncoding.EncodeToString(k))
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	tmp := filepath.Join(r.dir, keysFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save keyring: %w", err)
	}
	return os.Rename(tmp, filepath.Join(r.dir, keysFile))
}

// apply runs one rotation step: install, use or remove a key.
func (r *keyring) apply(op, key string) error {
	kb, err := ParseKey(key)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch op {
	case "install":
		err = r.kr.AddKey(kb)
	case "use":
		if !slices.ContainsFunc(r.kr.GetKeys(), func(k []byte) bool { return string(k) == string(kb) }) {
			return fmt.Errorf("key %s is not installed; install it on every host first", Fingerprint(kb))
		}
		err = r.kr.UseKey(kb)
	case "remove":
		err = r.kr.RemoveKey(kb)
	default:
		return fmt.Errorf("unknown key operation %q (install, use, remove)", op)
	}
	if err != nil {
		return err
	}
	return r.saveLocked()
}

// list returns the fingerprints of the installed keys, the primary first.
func (r *keyring) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []string{Fingerprint(r.kr.GetPrimaryKey())}
	for _, k := range r.kr.GetKeys() {
		if f := Fingerprint(k); f != out[0] {
			out = append(out, f)
		}
	}
	return out
}
