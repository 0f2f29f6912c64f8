package mesh

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// newTestState returns a state for self with the given alive members.
func newTestState(self string, alive ...string) *state {
	s := newState(self, time.Minute, t0, 0)
	s.memberUp(Member{Name: self}, 0, t0)
	for _, a := range alive {
		s.memberUp(Member{Name: a}, 0, t0)
	}
	return s
}

func we(table, key, owner string, clock uint64, deleted bool, value string) wireEntry {
	e := wireEntry{Entry: Entry{Table: table, Key: key, Owner: owner, Clock: clock, Deleted: deleted}}
	if deleted {
		e.Residual = time.Minute
	} else {
		e.Value = []byte(value)
	}
	return e
}

// applyBlocks merges what a delta sent.
func applyBlocks(s *state, bls []block) {
	for _, bl := range bls {
		for _, w := range bl.Entries {
			s.apply(w, t0)
		}
	}
}

// dump renders every record held, tombstones included.
func dump(s *state) string {
	var out []string
	for _, t := range s.tables {
		for _, r := range t {
			d := ""
			if r.Deleted {
				d = "(deleted)"
			}
			out = append(out, fmt.Sprintf("%s/%s=%s@%s:%d%s", r.Table, r.Key, r.Value, r.Owner, r.Clock, d))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestSupersedes(t *testing.T) {
	e := func(clock uint64, owner string, deleted bool, value string) *Entry {
		return &Entry{Clock: clock, Owner: owner, Deleted: deleted, Value: []byte(value)}
	}
	for _, tc := range []struct {
		name string
		a, b *Entry
		want bool
	}{
		{"newer clock wins", e(2, "a", false, "x"), e(1, "z", true, "y"), true},
		{"older clock loses", e(1, "z", true, "y"), e(2, "a", false, "x"), false},
		{"tie: greater owner", e(3, "b", false, "x"), e(3, "a", true, "x"), true},
		{"tie: smaller owner", e(3, "a", true, "x"), e(3, "b", false, "x"), false},
		{"tie: tombstone over live", e(3, "a", true, ""), e(3, "a", false, "x"), true},
		{"tie: live under tombstone", e(3, "a", false, "x"), e(3, "a", true, ""), false},
		{"tie: greater value", e(3, "a", false, "y"), e(3, "a", false, "x"), true},
		{"identical", e(3, "a", false, "x"), e(3, "a", false, "x"), false},
	} {
		if got := supersedes(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: supersedes = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestApplyOrderIndependent applies the same versions in every order on
// fresh states: all must end with the same winner.
func TestApplyOrderIndependent(t *testing.T) {
	versions := []wireEntry{
		we("t", "k", "a", 5, false, "a5"),
		we("t", "k", "b", 5, false, "b5"),
		we("t", "k", "b", 5, true, ""),
		we("t", "k", "a", 7, false, "a7"),
		we("t", "k", "c", 6, false, "c6"),
		we("t", "k", "a", 7, false, "a7bis"),
	}
	var first string
	for i := range 200 {
		vs := slices.Clone(versions)
		rand.Shuffle(len(vs), func(i, j int) { vs[i], vs[j] = vs[j], vs[i] })
		s := newTestState("me", "a", "b", "c")
		for _, v := range vs {
			s.apply(v, t0)
		}
		got := dump(s)
		if i == 0 {
			first = got
			if got != "t/k=a7bis@a:7" {
				t.Fatalf("winner %s, want t/k=a7bis@a:7", got)
			}
		} else if got != first {
			t.Fatalf("order %d ends with %s, order 0 with %s", i, got, first)
		}
	}
}

func TestLamportClockAdvances(t *testing.T) {
	s := newTestState("me", "a")
	s.apply(we("t", "x", "a", 100, false, "v"), t0)
	r := s.put("t", "mine", []byte("v"), t0)
	if r.Clock != 101 {
		t.Fatalf("put after seeing clock 100 got clock %d, want 101", r.Clock)
	}
	// Our write now beats the remote one on a shared key.
	r = s.put("t", "x", []byte("mine"), t0)
	if r.Clock != 102 || s.lookup("t", "x").Owner != "me" {
		t.Fatalf("takeover: %s", dump(s))
	}
	// Entries of dead owners and tombstones advance the clock too.
	s.memberDown("a", StateDead, t0)
	s.apply(we("t", "y", "a", 500, false, "v"), t0)
	if s.clock != 500 {
		t.Fatalf("clock %d after seeing 500", s.clock)
	}
}

func TestDeleteOnlyOwnEntries(t *testing.T) {
	s := newTestState("me", "a")
	s.apply(we("t", "theirs", "a", 1, false, "v"), t0)
	if r := s.del("t", "theirs", t0); r != nil {
		t.Fatal("deleted another owner's entry")
	}
	if r := s.del("t", "absent", t0); r != nil {
		t.Fatal("deleted an absent entry")
	}
	s.put("t", "mine", []byte("v"), t0)
	r := s.del("t", "mine", t0)
	if r == nil || !r.Deleted || r.Value != nil || !r.reapAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("tombstone %+v", r)
	}
	if r := s.del("t", "mine", t0); r != nil {
		t.Fatal("deleted twice")
	}
}

func TestOwnerRepair(t *testing.T) {
	t.Run("stale copy newer than ours is answered with ours", func(t *testing.T) {
		s := newTestState("me", "a")
		s.put("t", "k", []byte("current"), t0) // clock 1
		res := s.apply(we("t", "k", "me", 9, false, "stale"), t0)
		if !res.repair || res.rec.Clock != 10 || string(res.rec.Value) != "current" {
			t.Fatalf("repair %+v: %s", res, dump(s))
		}
	})
	t.Run("older copy is ignored", func(t *testing.T) {
		s := newTestState("me", "a")
		s.clock = 5
		s.put("t", "k", []byte("current"), t0) // clock 6
		if res := s.apply(we("t", "k", "me", 3, false, "old"), t0); res.rec != nil {
			t.Fatalf("older copy changed state: %s", dump(s))
		}
	})
	t.Run("copy we do not hold is deleted", func(t *testing.T) {
		s := newTestState("me", "a")
		res := s.apply(we("t", "ghost", "me", 4, false, "v"), t0)
		if !res.repair || !res.rec.Deleted || res.rec.Clock != 5 {
			t.Fatalf("repair %+v: %s", res, dump(s))
		}
	})
	t.Run("copy of our own reaped tombstone is ignored", func(t *testing.T) {
		s := newTestState("me", "a")
		if res := s.apply(we("t", "k", "me", 4, true, ""), t0); res.rec != nil {
			t.Fatal("stored our old tombstone")
		}
	})
	t.Run("our tombstone re-issued over a stale live copy", func(t *testing.T) {
		s := newTestState("me", "a")
		s.put("t", "k", []byte("v"), t0)
		s.del("t", "k", t0) // clock 2
		res := s.apply(we("t", "k", "me", 7, false, "v"), t0)
		if !res.repair || !res.rec.Deleted || res.rec.Clock != 8 {
			t.Fatalf("repair %+v", res)
		}
	})
	t.Run("grace defers deletion and a re-put cancels it", func(t *testing.T) {
		s := newState("me", time.Minute, t0, 10*time.Second)
		s.memberUp(Member{Name: "me"}, 0, t0)
		if res := s.apply(we("t", "back", "me", 4, false, "v"), t0); res.rec != nil {
			t.Fatal("repaired during grace")
		}
		s.apply(we("t", "gone", "me", 5, false, "v"), t0)
		s.put("t", "back", []byte("v"), t0.Add(time.Second)) // the caller restores it
		if out := s.endGrace(t0.Add(5 * time.Second)); out != nil {
			t.Fatal("grace ended early")
		}
		out := s.endGrace(t0.Add(11 * time.Second))
		if len(out) != 1 || out[0].rec.Key != "gone" || !out[0].rec.Deleted || out[0].rec.Clock <= 5 {
			t.Fatalf("end of grace: %+v; %s", out, dump(s))
		}
		if r := s.lookup("t", "back"); r == nil || r.Deleted {
			t.Fatalf("restored entry deleted: %s", dump(s))
		}
	})
}

func TestMembershipVisibility(t *testing.T) {
	s := newTestState("me", "a")
	s.apply(we("t", "k1", "a", 1, false, "v"), t0)
	if len(s.live("t")) != 1 {
		t.Fatal("entry of alive member not visible")
	}
	if vis := s.memberDown("a", StateDead, t0); !vis {
		t.Fatal("withdrawal not reported as a visible change")
	}
	if len(s.live("t")) != 0 || s.lookup("t", "k1") != nil {
		t.Fatalf("entries of dead member kept: %s", dump(s))
	}
	// Copies still travelling are refused while it is dead.
	if res := s.apply(we("t", "k1", "a", 1, false, "v"), t0); res.rec != nil {
		t.Fatal("entry of a dead member taken in")
	}
	// Back alive: its entries are taken in and shown again.
	if !s.memberUp(Member{Name: "a"}, 0, t0) || !s.members["a"].returned {
		t.Fatal("return not noticed")
	}
	if res := s.apply(we("t", "k1", "a", 1, false, "v"), t0); !res.visible {
		t.Fatal("entry of a returned member not visible")
	}
	// An owner never seen: kept hidden, then dropped after orphanTTL, and
	// shown at once if it turns up before.
	s.apply(we("t", "o1", "stranger", 3, false, "v"), t0)
	s.apply(we("t", "o2", "late", 3, false, "v"), t0)
	if len(s.live("t")) != 1 {
		t.Fatalf("orphan shown: %v", s.live("t"))
	}
	s.memberUp(Member{Name: "late"}, 0, t0.Add(time.Second))
	s.reap(t0.Add(2 * time.Minute))
	if s.lookup("t", "o1") != nil {
		t.Error("orphan not dropped")
	}
	if len(s.live("t")) != 2 {
		t.Errorf("late owner's entry not shown: %s", dump(s))
	}
	// Own entries survive our own "death" (e.g. after Leave).
	s.put("t", "mine", []byte("v"), t0)
	s.memberDown("me", StateLeft, t0)
	if s.lookup("t", "mine") == nil {
		t.Error("own entry dropped")
	}
	if s.alive != 2 {
		t.Errorf("alive = %d, want 2", s.alive)
	}
}

func TestTombstoneReaping(t *testing.T) {
	s := newTestState("me", "a")
	s.put("t", "k", []byte("v"), t0)
	s.del("t", "k", t0)
	s.apply(we("t", "r", "a", 1, false, "v"), t0)
	tomb := we("t", "r", "a", 2, true, "")
	tomb.Residual = 10 * time.Second
	s.apply(tomb, t0)
	if n := s.reap(t0.Add(9 * time.Second)); n != 0 {
		t.Fatalf("reaped %d early", n)
	}
	if n := s.reap(t0.Add(11 * time.Second)); n != 1 {
		t.Fatalf("reaped %d at 11 s, want the remote tombstone", n)
	}
	if n := s.reap(t0.Add(time.Minute)); n != 1 || len(s.tables) != 0 || len(s.owners) != 0 {
		t.Fatalf("after TTL: %s", dump(s))
	}
	// A tombstone with nothing left to live is not stored for an unknown key.
	dead := we("t", "x", "a", 3, true, "")
	dead.Residual = 0
	if res := s.apply(dead, t0); res.rec != nil {
		t.Fatal("expired tombstone stored")
	}
	// Residuals are capped by our TTL.
	long := we("t", "y", "a", 4, true, "")
	long.Residual = time.Hour
	res := s.apply(long, t0)
	if !res.rec.reapAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("reapAt %v", res.rec.reapAt)
	}
}

// TestDigestDeltaConverges runs anti-entropy by hand between states holding
// different, overlapping versions.
func TestDigestDeltaConverges(t *testing.T) {
	mk := func(self string) *state { return newTestState(self, "a", "b", "c", "x", "y") }
	x, y := mk("x"), mk("y")
	for i := range 50 {
		v := we("t", fmt.Sprintf("k%d", i), []string{"a", "b", "c"}[i%3], uint64(i+1), i%7 == 0, fmt.Sprint(i))
		switch i % 4 {
		case 0:
			x.apply(v, t0)
		case 1:
			y.apply(v, t0)
		default:
			x.apply(v, t0)
			y.apply(v, t0)
		}
	}
	// A newer version on one side only, and different values at one clock.
	x.apply(we("t", "k5", "b", 90, false, "newer"), t0)
	x.apply(we("t", "tie", "c", 95, false, "p"), t0)
	y.apply(we("t", "tie", "c", 95, false, "q"), t0)
	x.put("t", "own-x", []byte("v"), t0)
	y.put("t", "own-y", []byte("v"), t0)

	for round := range 3 {
		dx, dy := x.digest(), y.digest()
		toY, d1 := x.delta(dy, t0, true)
		toX, d2 := y.delta(dx, t0, true)
		if !d1 || !d2 {
			t.Fatalf("round %d: differing tables not reported (%v, %v)", round, d1, d2)
		}
		applyBlocks(y, toY)
		applyBlocks(x, toX)
		if dump(x) == dump(y) {
			if _, d := x.delta(y.digest(), t0, false); d {
				t.Fatal("equal tables reported as different")
			}
			byOwner := func(a, b ownerDigest) int { return strings.Compare(a.Owner, b.Owner) }
			dx, dy := x.digest(), y.digest()
			slices.SortFunc(dx, byOwner)
			slices.SortFunc(dy, byOwner)
			if !slices.Equal(dx, dy) {
				t.Fatal("same content, different digests")
			}
			t.Logf("converged after %d round(s)", round+1)
			if r := x.lookup("t", "tie"); string(r.Value) != "q" {
				t.Errorf("tie resolved to %q, want q", r.Value)
			}
			return
		}
	}
	t.Fatalf("not converged:\nx: %s\ny: %s", dump(x), dump(y))
}

func TestDigestExcludesNonAliveOwners(t *testing.T) {
	s := newTestState("me", "a")
	s.apply(we("t", "k", "stranger", 1, false, "v"), t0)
	s.apply(we("t", "k2", "a", 1, false, "v"), t0)
	s.put("t", "k3", []byte("v"), t0)
	var owners []string
	for _, d := range s.digest() {
		owners = append(owners, d.Owner)
	}
	slices.Sort(owners)
	if !slices.Equal(owners, []string{"a", "me"}) {
		t.Fatalf("digest owners %v", owners)
	}
	// The full state (join) carries everything, orphans included.
	if n := len(s.all(t0)); n != 3 {
		t.Fatalf("full state has %d entries", n)
	}
}

func TestDigestMaxClockAfterRemoval(t *testing.T) {
	s := newTestState("me", "a")
	s.apply(we("t", "k1", "a", 1, false, "v"), t0)
	s.apply(we("t", "k2", "a", 9, true, ""), t0)
	s.reap(t0.Add(2 * time.Minute))
	d := s.digest()
	if len(d) != 1 || d[0].MaxClock != 1 || d[0].Count != 1 || d[0].Hash != entryHash(&s.lookup("t", "k1").Entry) {
		t.Fatalf("digest after reap %+v", d)
	}
}

func TestLeaveNotice(t *testing.T) {
	s := newTestState("me", "a", "b")
	// Notice first, then memberlist's news: the member left.
	if !s.memberLeaving("a", t0) || s.memberLeaving("a", t0) {
		t.Fatal("leave notice not news exactly once")
	}
	s.memberDown("a", StateDead, t0)
	if st := s.members["a"].State; st != StateLeft {
		t.Fatalf("a is %s, want left", st)
	}
	// News first, then the notice: upgraded to left.
	s.memberDown("b", StateDead, t0)
	if !s.memberLeaving("b", t0) || s.members["b"].State != StateLeft {
		t.Fatalf("b is %s, want left", s.members["b"].State)
	}
	// A member that comes back starts afresh: its next failure is a death.
	s.memberUp(Member{Name: "a"}, 0, t0)
	s.memberDown("a", StateDead, t0)
	if st := s.members["a"].State; st != StateDead {
		t.Fatalf("returned a is %s after failing, want dead", st)
	}
	if s.memberLeaving("stranger", t0) {
		t.Fatal("notice about an unknown member is news")
	}
}

// TestEntryHashStable pins entryHash: members compare digests built from it,
// so any change splits a cluster of mixed versions into members that resend
// whole tables to each other.
func TestEntryHashStable(t *testing.T) {
	live := Entry{Table: "endpoint", Key: "k1", Owner: "o", Clock: 7, Value: []byte("value")}
	if got := entryHash(&live); got != 0x1b1f327f1e48d135 {
		t.Errorf("live entry hash %#x changed", got)
	}
	tomb := Entry{Table: "endpoint", Key: "k1", Owner: "o", Clock: 7, Deleted: true}
	if got := entryHash(&tomb); got != 0xf0fd19fa8fefb556 {
		t.Errorf("tombstone hash %#x changed", got)
	}
	// Field boundaries and every field count; the owner is in the digest's
	// key already, not in the hash.
	seen := map[uint64]string{}
	for name, e := range map[string]Entry{
		"base":       {Table: "ab", Key: "c", Clock: 1, Value: []byte("v")},
		"boundary":   {Table: "a", Key: "bc", Clock: 1, Value: []byte("v")},
		"clock":      {Table: "ab", Key: "c", Clock: 2, Value: []byte("v")},
		"value":      {Table: "ab", Key: "c", Clock: 1, Value: []byte("w")},
		"padding":    {Table: "ab", Key: "c", Clock: 1, Value: []byte("v\x00")},
		"deleted":    {Table: "ab", Key: "c", Clock: 1, Deleted: true},
		"empty":      {Table: "ab", Key: "c", Clock: 1, Value: []byte{}},
		"long value": {Table: "ab", Key: "c", Clock: 1, Value: []byte("0123456789abcdef0")},
	} {
		h := entryHash(&e)
		if other, dup := seen[h]; dup {
			t.Errorf("%s and %s hash alike", name, other)
		}
		seen[h] = name
	}
}

// TestDeltaFromFullerSide: with the same newest clock, only the side that
// holds more of an owner's entries sends them (on equal counts, the one
// with the greater hash), and a round each way still ends in the union.
func TestDeltaFromFullerSide(t *testing.T) {
	full, part := newTestState("a", "o"), newTestState("b", "o")
	for i := range 10 {
		w := we("t", fmt.Sprintf("k%d", i), "o", uint64(i+1), false, "v")
		full.apply(w, t0)
		if i%3 == 0 || i == 9 { // a partial copy with the newest entry
			part.apply(w, t0)
		}
	}
	if toFull, differs := part.delta(full.digest(), t0, true); !differs || len(toFull) != 0 {
		t.Fatalf("the partial side sends %d blocks (differs %v), want none", len(toFull), differs)
	}
	toPart, differs := full.delta(part.digest(), t0, true)
	if !differs || len(toPart) != 1 || len(toPart[0].Entries) != 10 {
		t.Fatalf("the full side sends %+v (differs %v), want its 10 entries", toPart, differs)
	}

	// Equal counts, different entries: exactly one side sends, then the
	// other, holding the union, sends back.
	x, y := newTestState("x", "o"), newTestState("y", "o")
	for i, w := range []wireEntry{we("t", "a", "o", 1, false, "v"), we("t", "b", "o", 2, false, "v"), we("t", "c", "o", 3, false, "v")} {
		if i != 1 {
			x.apply(w, t0)
		}
		if i != 0 {
			y.apply(w, t0)
		}
	}
	toY, _ := x.delta(y.digest(), t0, true)
	toX, _ := y.delta(x.digest(), t0, true)
	if (len(toY) == 0) == (len(toX) == 0) {
		t.Fatalf("on a tie %d and %d blocks sent, want exactly one side", len(toY), len(toX))
	}
	for range 2 {
		applyBlocks(y, toY)
		applyBlocks(x, toX)
		toY, _ = x.delta(y.digest(), t0, true)
		toX, _ = y.delta(x.digest(), t0, true)
	}
	if dump(x) != dump(y) || len(x.tables["t"]) != 3 {
		t.Fatalf("no union after two rounds:\n%s\n%s", dump(x), dump(y))
	}
}
