package mesh

// This file owns Watch: a stream of changes per consumer, as networkdb's
// watch.go hands each consumer its own channel. A subscription starts with
// what is visible now, then gets one event per change, in order, queued on
// an internal/feed queue of its own: the mesh never blocks on a consumer
// and never drops an event, and a consumer never polls the table.
//
// Events are produced by state (state.go) under Mesh.mu, at the points
// where what Entries or Members show changes: a write or delete (store), a
// member going down (memberFailed: its entries stay) or dead (memberDown
// withdraws its entries) or coming back (memberUp shows the entries held
// hidden), a leave notice. Nothing diffs snapshots:
// a change of one entry in a table of 10,000 costs one event. Lock order:
// Mesh.mu, then the feed's and its queues' locks.

import (
	"slices"
	"strings"

	"github.com/weftnet/weft/internal/feed"
)

// EventKind says what an Event reports.
type EventKind uint8

// Kinds of events.
const (
	// EntryPut: an entry became visible, or the visible version of its key
	// changed (a newer write, possibly by another owner). Event.Entry is
	// the version now visible.
	EntryPut EventKind = iota + 1
	// EntryGone: an entry stopped being visible: deleted, or its owner is
	// dead or left. Event.Entry is the last visible version.
	EntryGone
	// MemberChanged: a member appeared, or its state, address, version or
	// protocol changed. Event.Member is the member now. States are alive,
	// down, dead and left: memberlist reports no event when a member
	// becomes suspect (Members shows it). A member that goes down keeps its
	// entries visible (no EntryGone); one that dies or leaves has them
	// withdrawn right after its event. A member dead or gone for a while
	// leaves Members without an event.
	MemberChanged
)

func (k EventKind) String() string {
	switch k {
	case EntryPut:
		return "put"
	case EntryGone:
		return "gone"
	case MemberChanged:
		return "member"
	}
	return "unknown"
}

// Event is one change seen through Watch.
type Event struct {
	Kind   EventKind
	Entry  Entry  // EntryPut, EntryGone
	Member Member // MemberChanged
}

// Watch returns a queue of the changes of table: first an EntryPut for
// every visible entry (sorted by key), then one event per change as it
// happens. With members, the queue also carries the membership: it starts
// with a MemberChanged for every known member (sorted by name, before the
// entries), then one per change. Events of other tables never reach it.
//
// Entry values in events are shared with the table and with other
// subscriptions: read them, never modify them. Close the subscription when
// done. Watch works before Start and after Close (no more events then).
func (m *Mesh) Watch(table string, members bool) *feed.Sub[Event] {
	m.mu.Lock()
	defer m.mu.Unlock()
	var init []Event
	if members {
		mbs := make([]Member, 0, len(m.st.members))
		for _, mb := range m.st.members {
			mbs = append(mbs, mb.Member)
		}
		slices.SortFunc(mbs, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
		for _, mb := range mbs {
			init = append(init, Event{Kind: MemberChanged, Member: mb})
		}
	}
	recs := make([]*record, 0, len(m.st.tables[table]))
	for _, r := range m.st.tables[table] {
		if m.st.visible(r) {
			recs = append(recs, r)
		}
	}
	slices.SortFunc(recs, func(a, b *record) int { return strings.Compare(a.Key, b.Key) })
	for _, r := range recs {
		init = append(init, Event{Kind: EntryPut, Entry: r.Entry})
	}
	return m.watch.feed(watchKey{table, members}).Subscribe(init...)
}

// watchers are the feeds of the subscriptions, one per table and kind of
// subscription. Guarded by Mesh.mu.
type watchers struct {
	feeds map[watchKey]*feed.Feed[Event]
}

type watchKey struct {
	table   string
	members bool
}

func (w *watchers) feed(k watchKey) *feed.Feed[Event] {
	if w.feeds == nil {
		w.feeds = make(map[watchKey]*feed.Feed[Event])
	}
	f := w.feeds[k]
	if f == nil {
		f = &feed.Feed[Event]{}
		w.feeds[k] = f
	}
	return f
}

// watching reports whether table has watchers, so that a change nobody
// watches costs nothing more.
func (w *watchers) watching(table string) bool {
	if w == nil || len(w.feeds) == 0 {
		return false
	}
	return w.feeds[watchKey{table, false}] != nil || w.feeds[watchKey{table, true}] != nil
}

// entry publishes a change of e's table to its watchers. Records are never
// modified in place, so the event shares e's value.
func (w *watchers) entry(kind EventKind, e *Entry) {
	if w == nil || len(w.feeds) == 0 {
		return
	}
	plain, withMembers := w.feeds[watchKey{e.Table, false}], w.feeds[watchKey{e.Table, true}]
	if plain == nil && withMembers == nil {
		return
	}
	ev := Event{Kind: kind, Entry: *e}
	if plain != nil {
		plain.Publish(ev)
	}
	if withMembers != nil {
		withMembers.Publish(ev)
	}
}

// member publishes a change of a member to the watchers of members.
func (w *watchers) member(mb Member) {
	if w == nil {
		return
	}
	for k, f := range w.feeds {
		if k.members {
			f.Publish(Event{Kind: MemberChanged, Member: mb})
		}
	}
}
