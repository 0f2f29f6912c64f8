package keyservice

// This file owns the key service's messages and the mesh reports, and
// their one decoding path each. A connection carries one request and one
// response, each a JSON object of at most maxMessage bytes; decoding
// checks everything a peer could get wrong before anything is used.

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/weftnet/weft/mesh"
)

// protocol is the version of the messages; a peer speaking another is
// refused with a sentence saying so.
const protocol = 1

// maxMessage bounds a message: a full keyring is under 3 KiB.
const maxMessage = 64 << 10

// maxOrigin bounds a key's origin (a swarm node ID is 25 characters).
const maxOrigin = 64

// request is what a client sends: a manager its keyring, to be merged; a
// worker nothing but the version.
type request struct {
	V    int       `json:"v"`
	Ring *wireRing `json:"ring,omitempty"`
}

// response is the server's keyring, or why it refused.
type response struct {
	V    int       `json:"v"`
	Ring *wireRing `json:"ring,omitempty"`
	Err  string    `json:"err,omitempty"`
}

// wireRing is a keyring on the wire: the primary by fingerprint.
type wireRing struct {
	Floor   mesh.KeyID `json:"floor"`
	Primary string     `json:"primary,omitempty"`
	Keys    []wireKey  `json:"keys"`
}

type wireKey struct {
	Gen     uint64    `json:"gen"`
	Origin  string    `json:"origin"`
	Created time.Time `json:"created,omitzero"`
	Key     []byte    `json:"key"`
}

func encodeRing(r mesh.Ring) *wireRing {
	w := &wireRing{Floor: r.Floor, Keys: []wireKey{}}
	if r.Primary != nil {
		w.Primary = mesh.Fingerprint(r.Primary)
	}
	for _, k := range r.Keys {
		w.Keys = append(w.Keys, wireKey{Gen: k.ID.Gen, Origin: k.ID.Origin, Created: k.Created, Key: k.Secret})
	}
	return w
}

// decode checks a keyring from the wire. An empty keyring (a manager that
// has none yet) is valid.
func (w *wireRing) decode() (mesh.Ring, error) {
	r := mesh.Ring{Floor: w.Floor}
	if err := checkOrigin(w.Floor.Origin); err != nil {
		return r, fmt.Errorf("floor: %w", err)
	}
	if len(w.Keys) > maxKeys*2 {
		return r, fmt.Errorf("a keyring of %d keys: at most %d", len(w.Keys), maxKeys*2)
	}
	for _, k := range w.Keys {
		if err := checkOrigin(k.Origin); err != nil {
			return r, fmt.Errorf("key %d: %w", k.Gen, err)
		}
		r.Keys = append(r.Keys, mesh.RingKey{ID: mesh.KeyID{Gen: k.Gen, Origin: k.Origin}, Created: k.Created, Secret: k.Key})
		if w.Primary != "" && mesh.Fingerprint(k.Key) == w.Primary {
			r.Primary = k.Key
		}
	}
	slices.SortFunc(r.Keys, func(a, b mesh.RingKey) int { return a.ID.Compare(b.ID) })
	if len(r.Keys) == 0 {
		if w.Primary != "" {
			return r, errors.New("a primary key but no keys")
		}
		return r, nil
	}
	return r, r.Check()
}

func checkOrigin(s string) error {
	if len(s) > maxOrigin {
		return fmt.Errorf("origin of %d bytes: at most %d", len(s), maxOrigin)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("origin %q: only letters, digits, '-', '_' and '.'", s)
		}
	}
	return nil
}

// readMessage reads one JSON message of at most maxMessage bytes into v
// and checks its version.
func readMessage(r io.Reader, v interface{ version() int }) error {
	dec := json.NewDecoder(io.LimitReader(r, maxMessage))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed message: %w", err)
	}
	if n := v.version(); n != protocol {
		return fmt.Errorf("key service protocol %d, this weft speaks %d", n, protocol)
	}
	return nil
}

func (r *request) version() int  { return r.V }
func (r *response) version() int { return r.V }

func writeMessage(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// reportsTable is the mesh table where each member reports its keyring
// (by fingerprints), under its own name.
const reportsTable = "keys"

// decodeReport reads a member's report from the mesh.
func decodeReport(b []byte) (report, error) {
	var rep report
	if len(b) > 4096 {
		return rep, fmt.Errorf("a report of %d bytes", len(b))
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("malformed report: %w", err)
	}
	if len(rep.Held) > maxKeys*2 {
		return rep, fmt.Errorf("a report of %d keys", len(rep.Held))
	}
	for _, fp := range append(slices.Clone(rep.Held), rep.Primary) {
		if b, err := hex.DecodeString(fp); err != nil || len(b) != 6 {
			return rep, fmt.Errorf("report: %q is not a key fingerprint", fp)
		}
	}
	return rep, nil
}
