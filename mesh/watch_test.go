package mesh

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/feed"
)

// replay folds a subscription's events into maps and checks each event is
// a real change: an EntryPut changes what is held, an EntryGone removes
// exactly what is held.
type replay struct {
	table        string
	watchMembers bool
	sub          *feed.Sub[Event]
	entries      map[string]Entry
	members      map[string]Member
	events       int
}

func newReplay(m *Mesh, table string, members bool) *replay {
	return &replay{table: table, watchMembers: members, sub: m.Watch(table, members), entries: map[string]Entry{}, members: map[string]Member{}}
}

func (r *replay) apply(evs []Event) error {
	for _, ev := range evs {
		r.events++
		switch ev.Kind {
		case EntryPut, EntryGone:
			if ev.Entry.Table != r.table {
				return fmt.Errorf("watcher of %q got an event of %q", r.table, ev.Entry.Table)
			}
			old, had := r.entries[ev.Entry.Key]
			if ev.Kind == EntryGone {
				if !had || !sameEntry(old, ev.Entry) {
					return fmt.Errorf("gone %+v, held %+v (%v)", ev.Entry, old, had)
				}
				delete(r.entries, ev.Entry.Key)
				continue
			}
			if had && sameEntry(old, ev.Entry) {
				return fmt.Errorf("put of the version already held: %+v", ev.Entry)
			}
			if ev.Entry.Deleted {
				return fmt.Errorf("put of a tombstone: %+v", ev.Entry)
			}
			r.entries[ev.Entry.Key] = ev.Entry
		case MemberChanged:
			r.members[ev.Member.Name] = ev.Member
		default:
			return fmt.Errorf("unknown event %+v", ev)
		}
	}
	return nil
}

func sameEntry(a, b Entry) bool {
	return a.Table == b.Table && a.Key == b.Key && a.Owner == b.Owner && a.Clock == b.Clock &&
		a.Deleted == b.Deleted && string(a.Value) == string(b.Value)
}

// check takes the queued events under the mesh's lock, where they are
// produced, so the replayed maps must equal the table and the members at
// that very moment, not only once the mesh is quiet.
func (r *replay) check(m *Mesh) error {
	m.mu.Lock()
	evs := r.sub.Take()
	want := m.st.live(r.table)
	var members []Member
	for _, mb := range m.st.members {
		members = append(members, mb.Member)
	}
	m.mu.Unlock()
	if err := r.apply(evs); err != nil {
		return err
	}
	got := slices.SortedFunc(maps.Values(r.entries), func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	if !slices.EqualFunc(got, want, sameEntry) {
		return fmt.Errorf("%s: replayed %d entries %v, table has %d %v", m.LocalNode(), len(got), keys(got), len(want), keys(want))
	}
	if !r.watchMembers {
		return nil
	}
	if len(members) != len(r.members) {
		return fmt.Errorf("%s: replayed %d members, has %d", m.LocalNode(), len(r.members), len(members))
	}
	for _, mb := range members {
		if r.members[mb.Name] != mb {
			return fmt.Errorf("%s: replayed member %+v, is %+v", m.LocalNode(), r.members[mb.Name], mb)
		}
	}
	return nil
}

func keys(es []Entry) string {
	var out []string
	for _, e := range es {
		out = append(out, e.Key+"@"+e.Owner)
	}
	return strings.Join(out, " ")
}

// TestWatchReplaysEntries: on every member, the events of a watcher
// replayed onto a map equal Entries at every moment they are checked,
// while entries are put, updated and deleted, and a member dies and comes
// back.
func TestWatchReplaysEntries(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(3, nil)
	ms[2].Put("endpoint", "early", []byte("x")) // in the initial events of some

	var mu sync.Mutex // guards reps and ms
	reps := map[*Mesh]*replay{}
	for _, m := range ms {
		reps[m] = newReplay(m, "endpoint", true)
	}
	// Check all the time, from another goroutine, while the scenario runs.
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			mu.Lock()
			for m, r := range reps {
				if err := r.check(m); err != nil {
					errc <- err
					mu.Unlock()
					return
				}
			}
			mu.Unlock()
		}
	}()
	checked := func() {
		t.Helper()
		waitFor(t, converge, "every watcher replays its table", func() error {
			mu.Lock()
			defer mu.Unlock()
			for m, r := range reps {
				if err := r.check(m); err != nil {
					return err
				}
			}
			return nil
		})
	}

	for i, m := range ms {
		for k := range 20 {
			m.Put("endpoint", fmt.Sprintf("ep-%d-%02d", i, k), []byte("v1"))
		}
	}
	var want []string
	for i := range ms {
		for k := range 20 {
			want = append(want, fmt.Sprintf("ep-%d-%02d=v1@n%d", i, k, i))
		}
	}
	waitView(t, converge, ms, "endpoint", append(want, "early=x@n2"))
	checked()

	for i, m := range ms {
		m.Delete("endpoint", fmt.Sprintf("ep-%d-00", i))
		m.Put("endpoint", fmt.Sprintf("ep-%d-01", i), []byte("v2"))
	}
	ms[2].Delete("endpoint", "early")
	checked()

	// n2 dies: its entries go from the others' tables, and their watchers.
	mu.Lock()
	delete(reps, ms[2])
	mu.Unlock()
	ms[2].Close()
	waitFor(t, converge, "n2 withdrawn", func() error {
		for _, m := range ms[:2] {
			if memberState(m, "n2") != StateDead || strings.Contains(view(m, "endpoint"), "@n2") {
				return fmt.Errorf("%s: n2 %s, %s", m.LocalNode(), memberState(m, "n2"), view(m, "endpoint"))
			}
		}
		return nil
	})
	checked()

	// It comes back with an empty memory and puts some of its entries
	// again.
	n2 := l.start("n2", nil, "n0")
	mu.Lock()
	ms[2] = n2
	reps[n2] = newReplay(n2, "endpoint", true)
	mu.Unlock()
	n2.Put("endpoint", "ep-2-05", []byte("back"))
	waitFor(t, converge, "n2 back", func() error {
		for _, m := range ms {
			if e, ok := m.Get("endpoint", "ep-2-05"); !ok || string(e.Value) != "back" {
				return fmt.Errorf("%s lacks n2's entry", m.LocalNode())
			}
		}
		return nil
	})
	checked()
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if m := r.members["n2"]; m.State != StateAlive {
			t.Errorf("n2 replayed as %+v", m)
		}
	}
}

// TestWatchTablesApart: a watcher of one table sees nothing of another,
// local or remote.
func TestWatchTablesApart(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(2, nil)
	subs := []*feed.Sub[Event]{ms[0].Watch("a", false), ms[1].Watch("a", false)}
	for i := range 10 {
		ms[0].Put("b", fmt.Sprint(i), []byte("b"))
		ms[1].Put("b", fmt.Sprint(i+100), []byte("b"))
	}
	ms[0].Delete("b", "0")
	ms[0].Put("a", "marker", []byte("a"))
	for i, sub := range subs {
		var got []Event
		waitFor(t, converge, "the marker", func() error {
			got = append(got, sub.Take()...)
			if len(got) == 0 {
				return errors.New("no event")
			}
			return nil
		})
		if len(got) != 1 || got[0].Kind != EntryPut || got[0].Entry.Key != "marker" {
			t.Errorf("watcher of a on n%d got %+v", i, got)
		}
	}
}

// TestWatchOneEventPerChange: in a table of 10,000 entries a change costs
// one event, whatever the table's size.
func TestWatchOneEventPerChange(t *testing.T) {
	m, err := New(Config{NodeName: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := range 10000 {
		m.Put("endpoint", fmt.Sprint(i), []byte("v"))
	}
	sub := m.Watch("endpoint", false)
	if n := len(sub.Take()); n != 10000 {
		t.Fatalf("%d initial events, want 10000", n)
	}
	m.Put("endpoint", "42", []byte("w"))
	m.Put("endpoint", "42", []byte("w")) // the same value: no change
	m.Delete("endpoint", "43")
	m.Delete("endpoint", "43")
	got := sub.Take()
	if len(got) != 2 || got[0].Kind != EntryPut || string(got[0].Entry.Value) != "w" ||
		got[1].Kind != EntryGone || got[1].Entry.Key != "43" || got[1].Entry.Deleted {
		t.Fatalf("events %+v", got)
	}
}

// TestBeforeStart: a mesh made by New holds writes, shows them to Watch
// and Entries, lists only itself, and sends them out once started.
func TestBeforeStart(t *testing.T) {
	l := newLab(t)
	n0 := l.start("n0", nil)
	n1 := l.make("n1", func(c *Config) { c.Version = "v1" })
	sub := n1.Watch("t", true)
	n1.Put("t", "kept", []byte("1"))
	n1.Put("t", "gone", []byte("2"))
	n1.Delete("t", "gone")
	if got := view(n1, "t"); got != "kept=1@n1" {
		t.Fatalf("before Start: %q", got)
	}
	if got := n1.Members(); len(got) != 1 || got[0].Started.IsZero() || got[0] != (Member{Name: "n1", State: StateAlive, Version: "v1", Protocol: Protocol, DownGrace: DefaultConfig().DownGrace, Started: got[0].Started}) {
		t.Fatalf("members before Start: %+v", got)
	}
	if n1.Synced() {
		t.Fatal("synced before Start")
	}
	if err := n1.Leave(time.Second); err == nil {
		t.Fatal("Leave before Start succeeded")
	}
	evs := sub.Take()
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind.String())
	}
	if got := strings.Join(kinds, " "); got != "member put put gone" {
		t.Fatalf("events before Start: %s", got)
	}
	if _, err := n1.Join([]string{l.addr("n0")}); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start("", nil); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start("", nil); err == nil {
		t.Fatal("a second Start succeeded")
	}
	waitView(t, converge, []*Mesh{n0, n1}, "t", []string{"kept=1@n1"})
	waitFor(t, converge, "n1 synced", func() error {
		if !n1.Synced() {
			return errors.New("not synced")
		}
		return nil
	})
	// n1's own address arrives as a member change.
	waitFor(t, converge, "n1's address", func() error {
		for _, ev := range sub.Take() {
			if ev.Kind == MemberChanged && ev.Member.Name == "n1" && ev.Member.Addr == l.addr("n1") {
				return nil
			}
		}
		return errors.New("no event")
	})

	// Close works without Start, and a closed mesh does not start.
	n2 := l.make("n2", nil)
	n2.Put("t", "k", []byte("v"))
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n2.Start("", nil); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

// TestWatchMembership: a member going hides its entries and coming back
// shows those held hidden, as events, in the state's own terms.
func TestWatchMembership(t *testing.T) {
	s := newTestState("me")
	s.watch = &watchers{}
	sub := s.watch.feed(watchKey{"t", true}).Subscribe()
	// Entries of a member not yet seen are held hidden.
	s.apply(we("t", "a", "late", 1, false, "1"), t0)
	s.apply(we("t", "b", "late", 2, true, ""), t0)
	if evs := sub.Take(); len(evs) != 0 {
		t.Fatalf("hidden entries produced %+v", evs)
	}
	s.memberUp(Member{Name: "late"}, 0, t0)
	s.memberUp(Member{Name: "late"}, 0, t0) // no change
	s.memberUp(Member{Name: "late", Version: "2"}, 0, t0)
	s.memberDown("late", StateDead, t0)
	s.memberDown("late", StateDead, t0) // no change
	s.memberLeaving("late", t0)
	var got []string
	for _, ev := range sub.Take() {
		switch ev.Kind {
		case MemberChanged:
			got = append(got, ev.Member.Name+":"+ev.Member.State+":"+ev.Member.Version)
		default:
			got = append(got, ev.Kind.String()+":"+ev.Entry.Key)
		}
	}
	want := "late:alive: put:a late:alive:2 late:dead:2 gone:a late:left:2"
	if strings.Join(got, " ") != want {
		t.Fatalf("events\n  %s\nwant\n  %s", strings.Join(got, " "), want)
	}
}
