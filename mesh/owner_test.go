package mesh

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// prefixOwner is the key rule of tables whose keys start with their
// owner's name and a slash (weft's endpoint table).
func prefixOwner(table, key string) (string, bool) {
	if table != "t" {
		return "", false
	}
	owner, _, _ := strings.Cut(key, "/")
	return owner, true
}

func TestTickNeverWraps(t *testing.T) {
	s := newTestState("me")
	s.clock = math.MaxUint64 - 1
	if c := s.tick(); c != math.MaxUint64 {
		t.Fatalf("tick from 2^64-2 gave %d", c)
	}
	if c := s.tick(); c != math.MaxUint64 {
		t.Fatalf("tick at 2^64-1 gave %d, want it to stay", c)
	}
	if r := s.put("t", "k", []byte("v"), t0); r == nil || r.Clock != math.MaxUint64 {
		t.Fatalf("put at the clock's end: %+v", r)
	}
}

func TestStateRefusesClocksFarAhead(t *testing.T) {
	s := newTestState("me", "a")
	s.clock = 100
	if res := s.apply(we("t", "a/x", "a", math.MaxUint64, false, "v"), t0); res.refused != refusedClock {
		t.Fatalf("clock 2^64-1 at local clock 100: %+v", res)
	}
	if res := s.apply(we("t", "a/x", "a", 100+maxClockLead+1, false, "v"), t0); res.refused != refusedClock {
		t.Fatalf("clock just beyond the lead: %+v", res)
	}
	if s.clock != 100 || held2(s, "t", "a/x") {
		t.Fatalf("a refused entry moved the clock to %d or was stored: %s", s.clock, dump(s))
	}
	// The positive control: as far ahead as allowed is taken, and the
	// clock follows it.
	if res := s.apply(we("t", "a/x", "a", 100+maxClockLead, false, "v"), t0); res.rec == nil {
		t.Fatalf("clock at the lead refused: %+v", res)
	}
	if s.clock != 100+maxClockLead {
		t.Fatalf("clock %d", s.clock)
	}
}

func held2(s *state, table, key string) bool { return s.lookup(table, key) != nil }

func TestStateRefusesKeysOfAnotherOwner(t *testing.T) {
	s := newTestState("me", "a", "b")
	s.lim.keyOwner = prefixOwner
	if res := s.apply(we("t", "a/x", "a", 1, false, "a's"), t0); res.rec == nil {
		t.Fatalf("a's own key refused: %+v", res)
	}
	// b writes a's key with a newer clock: without the rule it would
	// displace a's entry everywhere.
	for _, e := range []wireEntry{
		we("t", "a/x", "b", 9, false, "b's"),
		we("t", "a/x", "b", 10, true, ""),
		we("t", "me/y", "b", 9, false, "b's"),
		we("t", "noslash", "b", 9, false, "b's"),
	} {
		if res := s.apply(e, t0); res.refused != refusedKey {
			t.Fatalf("%s by %s: %+v", e.Key, e.Owner, res)
		}
	}
	if got := dump(s); got != "t/a/x=a's@a:1" {
		t.Fatalf("table: %s", got)
	}
	// Tables whose keys name no owner are not checked.
	if res := s.apply(we("u", "a/x", "b", 9, false, "b's"), t0); res.rec == nil {
		t.Fatalf("another table: %+v", res)
	}
	// Our own writes obey the rule too.
	if why := s.refusePut("t", "a/z", []byte("v")); why != refusedKey {
		t.Fatalf("put of another's key: %v", why)
	}
	if why := s.refusePut("t", "me/z", []byte("v")); why != refusedNone {
		t.Fatalf("put of our key: %v", why)
	}
}

func TestStateQuotas(t *testing.T) {
	s := newTestState("me", "a", "b")
	s.lim = limits{perTable: 3, bytes: 40, strangers: 2}
	for i := range 3 {
		if res := s.apply(we("t", fmt.Sprint("a/", i), "a", uint64(i+1), false, "v"), t0); res.rec == nil {
			t.Fatalf("entry %d of 3 refused: %+v", i, res)
		}
	}
	if res := s.apply(we("t", "a/3", "a", 9, false, "v"), t0); res.refused != refusedQuota {
		t.Fatalf("a 4th key: %+v", res)
	}
	// Replacing a key held costs nothing; another table has its own count.
	if res := s.apply(we("t", "a/0", "a", 10, false, "w"), t0); res.rec == nil {
		t.Fatalf("update of a key held: %+v", res)
	}
	if res := s.apply(we("u", "x", "a", 11, false, "v"), t0); res.rec == nil {
		t.Fatalf("another table: %+v", res)
	}
	// Bytes: 3×(3+1) + 1+1 = 14 held; 30 more go over 40.
	if res := s.apply(we("u", "y", "a", 12, false, strings.Repeat("x", 30)), t0); res.refused != refusedQuota {
		t.Fatalf("over the bytes: %+v", res)
	}
	// Other owners have their own.
	if res := s.apply(we("t", "b/0", "b", 13, false, "v"), t0); res.rec == nil {
		t.Fatalf("b's first: %+v", res)
	}
	// A tombstone frees its key's place only when reaped: it still counts.
	if res := s.apply(we("t", "a/1", "a", 14, true, ""), t0); res.rec == nil {
		t.Fatalf("tombstone: %+v", res)
	}
	if res := s.apply(we("t", "a/3", "a", 15, false, "v"), t0); res.refused != refusedQuota {
		t.Fatalf("a key new while a tombstone counts: %+v", res)
	}
	s.reap(t0.Add(2 * time.Minute))
	if res := s.apply(we("t", "a/3", "a", 16, false, "v"), t0); res.rec == nil {
		t.Fatalf("after the reap: %+v", res)
	}
	// Owners that are not members: two at most are held (hidden).
	for i, want := range []refusal{refusedNone, refusedNone, refusedQuota} {
		if res := s.apply(we("t", fmt.Sprint("z", i), fmt.Sprint("stranger", i), 20, false, "v"), t0); res.refused != want {
			t.Fatalf("stranger %d: %+v, want %v", i, res, want)
		}
	}
	// A stranger that becomes a member frees a place.
	s.memberUp(Member{Name: "stranger0"}, 0, t0)
	if res := s.apply(we("t", "z3", "stranger3", 21, false, "v"), t0); res.rec == nil {
		t.Fatalf("a stranger after another became a member: %+v", res)
	}
	if s.strangers != 2 {
		t.Fatalf("strangers %d, want 2", s.strangers)
	}
	// And its entries dropped with it free one too.
	s.dropOwner("stranger1")
	if s.strangers != 1 {
		t.Fatalf("strangers %d after a drop, want 1", s.strangers)
	}
}

// TestMeshRefusesForgedEntries: a member of a real mesh sends crafted
// messages. Another owner's key is refused; a clock far ahead is refused;
// a digest from a name that is no member is refused before it is decoded
// or answered; an entry written under a live member's name is undone by
// that member. The positive control: an honest entry from the same
// sender, by the same path, is taken in.
func TestMeshRefusesForgedEntries(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(3, func(c *Config) { c.KeyOwner = prefixOwner })
	a, b, rogue := ms[0], ms[1], ms[2]
	b.Put("t", "n1/ep", []byte("b's"))
	waitView(t, 10*time.Second, ms, "t", []string{"n1/ep=b's@n1"})
	rogue.mu.Lock()
	clock := rogue.st.clock
	rogue.mu.Unlock()
	send := func(es ...wireEntry) {
		t.Helper()
		msg := encodeEntries(msgBroadcast, es)
		if err := rogue.ml.SendReliable(a.ml.LocalNode(), msg); err != nil {
			t.Fatal(err)
		}
	}
	before, applied := a.Stats().Refused, a.Stats().Applied
	send(
		we("t", "n1/ep", "n2", clock+5, false, "rogue's"),          // b's key, the rogue's name
		we("t", "n2/far", "n2", clock+maxClockLead+10, false, "x"), // clock far ahead
		we("t", "n2/max", "n2", math.MaxUint64, false, "x"),        // clock at the end
		we("t", "n2/ok", "n2", clock+1, false, "honest"),           // the positive control
	)
	// The honest entry is taken in (the rogue, which does not hold it,
	// then tombstones it as its owner: the same repair as below).
	waitFor(t, 10*time.Second, "the honest entry taken in", func() error {
		if !held(a, "t", "n2/ok") || a.Stats().Applied == applied {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if got := a.Stats().Refused - before; got != 3 {
		t.Fatalf("a refused %d entries, want 3", got)
	}
	if held(a, "t", "n2/far") || held(a, "t", "n2/max") {
		t.Fatal("an entry with a clock far ahead was stored")
	}
	if e, _ := a.Get("t", "n1/ep"); string(e.Value) != "b's" {
		t.Fatalf("b's entry displaced: %+v", e)
	}
	// A digest from no member: refused before it is decoded or answered.
	before = a.Stats().Refused
	dg := encodeDigest(&digestMsg{Sender: "nobody", Reply: true, Owners: []ownerDigest{{Owner: "n1", Count: 1}}})
	if err := rogue.ml.SendReliable(a.ml.LocalNode(), dg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "digest refused", func() error {
		if a.Stats().Refused == before {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	// Under b's own name: taken in (the mesh cannot tell who wrote it),
	// then b, its only writer, undoes it everywhere.
	send(we("t", "n1/ep", "n1", clock+20, false, "forged"), we("t", "n1/new", "n1", clock+21, false, "forged"))
	waitFor(t, 10*time.Second, "b undoes what was forged under its name", func() error {
		for _, m := range ms {
			if got := view(m, "t"); got != "n1/ep=b's@n1" {
				return fmt.Errorf("%s shows %s", m.LocalNode(), got)
			}
		}
		return nil
	})
	a.mu.Lock()
	c := a.st.clock
	a.mu.Unlock()
	if c >= maxClockLead {
		t.Fatalf("a's clock went to %d", c)
	}
}
