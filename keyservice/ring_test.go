package keyservice

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/mesh"
)

func key(gen uint64, origin string, created time.Time) mesh.RingKey {
	s := bytes.Repeat([]byte{byte(gen), origin[0]}, 16)
	return mesh.RingKey{ID: mesh.KeyID{Gen: gen, Origin: origin}, Created: created, Secret: s}
}

func ring(primary mesh.RingKey, keys ...mesh.RingKey) mesh.Ring {
	r := mesh.Ring{Keys: keys, Primary: primary.Secret}
	slices.SortFunc(r.Keys, func(a, b mesh.RingKey) int { return a.ID.Compare(b.ID) })
	return r
}

func fp(k mesh.RingKey) string { return mesh.Fingerprint(k.Secret) }

// TestMergeConverges: merging is commutative and idempotent in what it
// keeps (keys, floor), whatever the order, so managers exchanging
// keyrings in any order end with the same keys.
func TestMergeConverges(t *testing.T) {
	now := time.Now()
	a1, b1, a2, c3 := key(1, "a", now), key(1, "b", now), key(2, "a", now), key(3, "c", now)
	rings := []mesh.Ring{ring(a1, a1), ring(b1, b1), ring(a2, a1, a2), ring(c3, c3)}
	rings[3].Floor = c3.ID
	for range 20 {
		rand.Shuffle(len(rings), func(i, j int) { rings[i], rings[j] = rings[j], rings[i] })
		acc := mesh.Ring{}
		for _, r := range rings {
			acc = merge(acc, r)
			acc = merge(acc, r)
		}
		if len(acc.Keys) != 1 || acc.Keys[0].ID != c3.ID || acc.Floor != c3.ID || !bytes.Equal(acc.Primary, c3.Secret) {
			t.Fatalf("merged: %+v", acc)
		}
	}
	// Without a floor, every key is kept and the local primary stays.
	m := merge(ring(a1, a1), ring(b1, b1))
	if len(m.Keys) != 2 || !bytes.Equal(m.Primary, a1.Secret) {
		t.Fatalf("two bootstraps merged: %+v", m)
	}
	// An empty keyring takes the remote's primary.
	if m := merge(mesh.Ring{}, ring(a1, a1, a2)); !bytes.Equal(m.Primary, a1.Secret) {
		t.Fatalf("fetched primary %s, want the remote's", mesh.Fingerprint(m.Primary))
	}
	// Two secrets under one ID: the same winner on both sides.
	x, y := key(1, "a", now), key(1, "a", now)
	y.Secret = bytes.Repeat([]byte{9}, 32)
	if !bytes.Equal(merge(ring(x, x), ring(y, y)).Keys[0].Secret, merge(ring(y, y), ring(x, x)).Keys[0].Secret) {
		t.Fatal("a clash of IDs resolved differently by the two sides")
	}
	// Too many keys: the oldest are retired.
	var many []mesh.RingKey
	for g := range uint64(maxKeys + 3) {
		many = append(many, key(g+1, "m", now))
	}
	if m := merge(mesh.Ring{}, ring(many[0], many...)); len(m.Keys) != maxKeys || m.Floor != many[3].ID {
		t.Fatalf("%d keys merged: %d kept, floor %s", len(many), len(m.Keys), m.Floor)
	}
}

func rep(primary mesh.RingKey, held ...mesh.RingKey) *report {
	r := &report{Primary: fp(primary)}
	for _, k := range held {
		r.Held = append(r.Held, fp(k))
	}
	return r
}

// TestSettleRotation walks a rotation through the rules: the new key
// becomes the primary only once every member holds it, the old one goes
// only once every member sends with the new one; time bounds both waits.
func TestSettleRotation(t *testing.T) {
	now := time.Now()
	spread := time.Minute
	old, nw := key(1, "m", now.Add(-time.Hour)), key(2, "m", now)
	r := ring(old, old, nw)

	// One member lacks the new key: nothing moves.
	got := settle(r, map[string]*report{"a": rep(old, old, nw), "b": rep(old, old)}, now, spread)
	if !bytes.Equal(got.Primary, old.Secret) || len(got.Keys) != 2 {
		t.Fatalf("new key used before every member holds it: %+v", got)
	}
	// A member that reported nothing blocks too.
	got = settle(r, map[string]*report{"a": rep(old, old, nw), "b": nil}, now, spread)
	if !bytes.Equal(got.Primary, old.Secret) {
		t.Fatal("new key used before a silent member reported")
	}
	// Everyone holds it: it becomes the primary, the old key stays.
	got = settle(r, map[string]*report{"a": rep(old, old, nw), "b": rep(old, old, nw)}, now, spread)
	if !bytes.Equal(got.Primary, nw.Secret) || len(got.Keys) != 2 {
		t.Fatalf("after everyone has it: %+v", got)
	}
	// Someone still sends with the old key: it stays.
	r2 := got
	got = settle(r2, map[string]*report{"a": rep(nw, old, nw), "b": rep(old, old, nw)}, now, spread)
	if len(got.Keys) != 2 {
		t.Fatal("old key dropped while a member still sends with it")
	}
	// Everyone sends with the new one: the old is retired for good.
	got = settle(r2, map[string]*report{"a": rep(nw, old, nw), "b": rep(nw, old, nw)}, now, spread)
	if len(got.Keys) != 1 || got.Floor != nw.ID || !bytes.Equal(got.Primary, nw.Secret) {
		t.Fatalf("after everyone sends with it: %+v", got)
	}
	// A retired key never comes back through a merge.
	if m := merge(got, r); len(m.Keys) != 1 {
		t.Fatalf("retired key came back: %+v", m)
	}

	// Time bounds the waits for a member that never gets the key.
	stuck := map[string]*report{"a": rep(old, old, nw), "b": rep(old, old)}
	got = settle(r, stuck, now.Add(spread), spread)
	if !bytes.Equal(got.Primary, nw.Secret) || len(got.Keys) != 2 {
		t.Fatalf("after spread: %+v", got)
	}
	got = settle(got, stuck, now.Add(2*spread), spread)
	if len(got.Keys) != 1 {
		t.Fatalf("after twice spread: %+v", got)
	}
	// The primary never moves back.
	if got := settle(ring(nw, old, nw), stuck, now, spread); !bytes.Equal(got.Primary, nw.Secret) {
		t.Fatal("primary moved back to an older key")
	}
}

// TestSettleBootstrap: two managers that each made generation 1 end on
// the same primary once their keyrings are merged and each sees the
// other holding both.
func TestSettleBootstrap(t *testing.T) {
	now := time.Now()
	a, b := key(1, "a", now), key(1, "b", now)
	ra, rb := merge(ring(a, a), ring(b, b)), merge(ring(b, b), ring(a, a))
	reports := map[string]*report{"A": rep(a, a, b), "B": rep(b, a, b)}
	sa, sb := settle(ra, reports, now, time.Minute), settle(rb, reports, now, time.Minute)
	if !bytes.Equal(sa.Primary, b.Secret) || !bytes.Equal(sb.Primary, b.Secret) {
		t.Fatalf("primaries %s and %s, want %s on both", mesh.Fingerprint(sa.Primary), mesh.Fingerprint(sb.Primary), fp(b))
	}
	reports = map[string]*report{"A": rep(b, a, b), "B": rep(b, a, b)}
	if sa := settle(sa, reports, now, time.Minute); len(sa.Keys) != 1 || sa.Keys[0].ID != b.ID {
		t.Fatalf("the other generation-1 key kept: %+v", sa)
	}
}

func TestWireRoundTrip(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	a, b := key(1, "a", now), key(2, "b", now)
	r := ring(b, a, b)
	r.Floor = a.ID
	raw, _ := json.Marshal(request{V: protocol, Ring: encodeRing(r)})
	var req request
	if err := readMessage(bytes.NewReader(raw), &req); err != nil {
		t.Fatal(err)
	}
	back, err := req.Ring.decode()
	if err != nil || !sameRing(back, r) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	for name, bad := range map[string]string{
		"version":         `{"v":2}`,
		"not json":        `{"v":1,`,
		"short key":       `{"v":1,"ring":{"floor":{"gen":0},"keys":[{"gen":1,"origin":"a","key":"AAAA"}]}}`,
		"no primary":      `{"v":1,"ring":{"floor":{"gen":0},"keys":[{"gen":1,"origin":"a","key":"` + b64(a.Secret) + `"}]}}`,
		"below floor":     `{"v":1,"ring":{"floor":{"gen":5},"primary":"` + fp(a) + `","keys":[{"gen":1,"origin":"a","key":"` + b64(a.Secret) + `"}]}}`,
		"twice":           `{"v":1,"ring":{"floor":{"gen":0},"primary":"` + fp(a) + `","keys":[{"gen":1,"origin":"a","key":"` + b64(a.Secret) + `"},{"gen":1,"origin":"a","key":"` + b64(a.Secret) + `"}]}}`,
		"bad origin":      `{"v":1,"ring":{"floor":{"gen":0},"primary":"` + fp(a) + `","keys":[{"gen":1,"origin":"a/../b","key":"` + b64(a.Secret) + `"}]}}`,
		"primary, no key": `{"v":1,"ring":{"floor":{"gen":0},"primary":"` + fp(a) + `","keys":[]}}`,
	} {
		var req request
		err := readMessage(bytes.NewReader([]byte(bad)), &req)
		if err == nil && req.Ring != nil {
			_, err = req.Ring.decode()
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func b64(b []byte) string { s, _ := json.Marshal(b); return string(s[1 : len(s)-1]) }

// FuzzRequest: whatever a client sends, decoding never panics, and what
// it accepts is a keyring that re-encodes to itself.
func FuzzRequest(f *testing.F) {
	now := time.Now().UTC().Truncate(time.Second)
	a, b := key(1, "a", now), key(2, "b", now)
	good, _ := json.Marshal(request{V: protocol, Ring: encodeRing(ring(b, a, b))})
	f.Add(good)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":1,"ring":{"floor":{"gen":3,"origin":"x"},"keys":[]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req request
		if err := readMessage(bytes.NewReader(data), &req); err != nil || req.Ring == nil {
			return
		}
		r, err := req.Ring.decode()
		if err != nil {
			return
		}
		again, err := encodeRing(r).decode()
		if err != nil || !sameRing(r, again) {
			t.Fatalf("accepted keyring does not survive a round trip: %+v, %v", again, err)
		}
		if len(r.Keys) > 0 {
			if err := r.Check(); err != nil {
				t.Fatalf("accepted an unusable keyring: %v", err)
			}
		}
	})
}

// FuzzReport: a member's report read from the mesh never panics, and an
// accepted one names only fingerprints.
func FuzzReport(f *testing.F) {
	f.Add([]byte(`{"held":["0123456789ab"],"primary":"0123456789ab"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := decodeReport(data)
		if err != nil {
			return
		}
		for _, s := range append(rep.Held, rep.Primary) {
			if len(s) != 12 {
				t.Fatalf("accepted fingerprint %q", s)
			}
		}
	})
}
