package keyservice

// This file owns the rules that make the members' keyrings one: merging
// two keyrings, and settling which key is the primary and which are
// retired from what every member of the mesh reports holding. They are
// pure functions of their inputs, so members applying them to the same
// view reach the same keyring in any order.

import (
	"bytes"
	"slices"
	"time"

	"github.com/weftnet/weft/mesh"
)

// maxKeys is how many keys a keyring keeps at most; beyond it the oldest
// are retired. A rotation needs two; concurrent rotations by several
// managers a few more.
const maxKeys = 8

// merge returns the union of local and remote: the higher floor, and every
// key at or above it, each ID once (two secrets under one ID, which only a
// node that lost its state and made a generation again can cause: the
// greater secret wins, everywhere alike), the maxKeys newest. The primary
// stays local's while it is there; else it is remote's, else the newest.
func merge(local, remote mesh.Ring) mesh.Ring {
	out := mesh.Ring{Floor: local.Floor}
	if remote.Floor.Compare(out.Floor) > 0 {
		out.Floor = remote.Floor
	}
	byID := map[mesh.KeyID]mesh.RingKey{}
	for _, k := range slices.Concat(local.Keys, remote.Keys) {
		if k.ID.Compare(out.Floor) < 0 {
			continue
		}
		if have, ok := byID[k.ID]; !ok || bytes.Compare(k.Secret, have.Secret) > 0 {
			byID[k.ID] = k
		}
	}
	for _, k := range byID {
		out.Keys = append(out.Keys, k)
	}
	slices.SortFunc(out.Keys, func(a, b mesh.RingKey) int { return a.ID.Compare(b.ID) })
	if n := len(out.Keys); n > maxKeys {
		out.Keys = out.Keys[n-maxKeys:]
		out.Floor = out.Keys[0].ID
	}
	for _, p := range [][]byte{local.Primary, remote.Primary} {
		if p != nil && holds(out, p) {
			out.Primary = p
			return out
		}
	}
	if n := len(out.Keys); n > 0 {
		out.Primary = out.Keys[n-1].Secret
	}
	return out
}

func holds(r mesh.Ring, secret []byte) bool {
	return slices.ContainsFunc(r.Keys, func(k mesh.RingKey) bool { return bytes.Equal(k.Secret, secret) })
}

// report is what a member publishes in the mesh about its keyring.
type report struct {
	Held    []string `json:"held"`    // fingerprints of the keys it accepts
	Primary string   `json:"primary"` // fingerprint of the key it sends with
}

func reportOf(r mesh.Ring) report {
	rep := report{Primary: mesh.Fingerprint(r.Primary)}
	for _, k := range r.Keys {
		rep.Held = append(rep.Held, mesh.Fingerprint(k.Secret))
	}
	return rep
}

// settle applies the rotation rules to r, given the reports of every
// member alive in the mesh (this one included; nil for a member that has
// reported nothing):
//
//   - the primary moves forward, never back, to the newest key that every
//     member holds, or that is older than spread (a member that could not
//     fetch it in that time is left to fetch it when it notices);
//   - once the newest key is the primary, the older ones are retired (the
//     floor rises to it) when every member sends with it, or when it is
//     older than twice spread.
//
// Keys without a creation time (seeded, or installed by hand) count as
// old.
func settle(r mesh.Ring, reports map[string]*report, now time.Time, spread time.Duration) mesh.Ring {
	if len(r.Keys) == 0 {
		return r
	}
	all := func(ok func(*report) bool) bool {
		for _, rep := range reports {
			if rep == nil || !ok(rep) {
				return false
			}
		}
		return true
	}
	olderThan := func(k mesh.RingKey, d time.Duration) bool {
		return k.Created.IsZero() || now.Sub(k.Created) >= d
	}
	newest := r.Keys[len(r.Keys)-1]
	cur, ok := r.PrimaryKey()
	if !ok {
		cur = newest
	}
	for i := len(r.Keys) - 1; i >= 0 && r.Keys[i].ID.Compare(cur.ID) > 0; i-- {
		k := r.Keys[i]
		fp := mesh.Fingerprint(k.Secret)
		if olderThan(k, spread) || all(func(rep *report) bool { return slices.Contains(rep.Held, fp) }) {
			cur = k
			break
		}
	}
	out := mesh.Ring{Keys: r.Keys, Primary: cur.Secret, Floor: r.Floor}
	fp := mesh.Fingerprint(newest.Secret)
	if cur.ID == newest.ID && len(r.Keys) > 1 &&
		(olderThan(newest, 2*spread) || all(func(rep *report) bool { return rep.Primary == fp })) {
		out.Keys = []mesh.RingKey{newest}
		out.Floor = newest.ID
	}
	return out
}

// newKey makes the next generation's key, by origin (this node's ID). Its
// generation is the clock's time in milliseconds, or one past the newest
// the keyring knows when that is later: a manager that lost its keyring (its state
// directory), alone among the managers, makes a key again from nothing,
// and a generation counted from 1 again fell below the floor the other
// members hold, or took the ID of their key with another secret; they
// kept theirs and the mesh stayed split in two (found by the soak). From
// the clock, the new key comes after every key made before it, and the
// members take it.
func newKey(r mesh.Ring, origin string, now time.Time) (mesh.RingKey, error) {
	secret, err := mesh.NewSecret()
	if err != nil {
		return mesh.RingKey{}, err
	}
	gen := r.Floor.Gen
	if n := len(r.Keys); n > 0 {
		gen = max(gen, r.Keys[n-1].ID.Gen)
	}
	gen++
	if t := now.UnixMilli(); t > 0 && uint64(t) > gen {
		gen = uint64(t)
	}
	return mesh.RingKey{ID: mesh.KeyID{Gen: gen, Origin: origin}, Created: now.UTC().Truncate(time.Second), Secret: secret}, nil
}

// sameRing reports whether a and b hold the same keys, primary and floor.
func sameRing(a, b mesh.Ring) bool {
	return a.Floor == b.Floor && bytes.Equal(a.Primary, b.Primary) &&
		slices.EqualFunc(a.Keys, b.Keys, func(x, y mesh.RingKey) bool {
			return x.ID == y.ID && x.Created.Equal(y.Created) && bytes.Equal(x.Secret, y.Secret)
		})
}
