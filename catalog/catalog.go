// Package catalog is weft's endpoint catalog: one record per endpoint on
// every host, replicated through the mesh's "endpoint" table. It owns the
// record, its encoding and its key names.
//
// Flow, one way only:
//
//	driver ──SetLocal/RemoveLocal──┐
//	name learner ──SetNames────────┤
//	                               ▼
//	mesh.Watch("endpoint") ──► Catalog ──► mesh.Put/Delete (this host's records)
//	                               │
//	                               └──► Subscribe: one queue per consumer
//	                                    (driver: kernel entries; dns: zones)
//
// Consumers get every change as an event on a queue of their own
// (internal/feed), starting with the whole catalog; nothing here calls back
// into a consumer, and no consumer polls.
//
// A host whose weft is down (the mesh's StateDown: its plugin stopped, its
// kernel entries and containers alive) keeps its records, each marked Down
// by an Updated event, and unmarked the same way when the host is back;
// when the mesh declares it dead, its records are Removed. The mark lives
// here, not on the wire: it is this host's view of the other. It lets a
// consumer prefer a live record where two claim one address (swarm gives
// a silent host's address to a new task elsewhere).
//
// This host's records go into the mesh once its VTEP is known (SetVTEP)
// and, after a start, once the names of its endpoints have been read from
// the engine (NamesReady, or Config.NamesWait at the latest): a restarted
// plugin that republished its endpoints before knowing their names would
// blank those names on every other host until the engine answered. The
// other hosts keep the records of a restarting host meanwhile.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

// Store is the replicated table the catalog lives in; *mesh.Mesh
// implements it.
type Store interface {
	// LocalNode is this host's name; the records it writes are owned by it.
	LocalNode() string
	// Put writes one of this host's entries; Delete tombstones it.
	Put(table, key string, value []byte)
	Delete(table, key string)
	// Watch streams the visible entries of table and their changes.
	Watch(table string, members bool) *feed.Sub[mesh.Event]
	// Synced reports whether the entries seen are complete (a state
	// exchange with another host has been merged since the start).
	Synced() bool
}

var _ Store = (*mesh.Mesh)(nil)

// Config configures a Catalog.
type Config struct {
	// Store is the mesh. Required.
	Store Store
	// NamesWait bounds how long after New this host's records wait for
	// NamesReady before they are published without names (default 5 s).
	NamesWait time.Duration
	// Handover is how long the records of a host's earlier life stay
	// when weft comes back on that host under another name (its state
	// directory lost), for the new life to publish them again (default
	// 10 s, the mesh's own RepairGrace; see handoverLocked).
	Handover time.Duration
	// Logger receives the catalog's log; nil discards it.
	Logger *slog.Logger
}

// EventKind says what happened to a record.
type EventKind uint8

// Kinds of events.
const (
	// Added: a record appeared.
	Added EventKind = iota + 1
	// Updated: a record changed; Event.Old holds what it was.
	Updated
	// Removed: a record went (withdrawn, or its host is gone); Event.Record
	// holds its last version.
	Removed
)

func (k EventKind) String() string {
	switch k {
	case Added:
		return "added"
	case Updated:
		return "updated"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// Event is one change of the catalog.
type Event struct {
	Kind EventKind
	// Local is set for this host's own endpoints.
	Local bool
	// Record is the record now (Added, Updated) or its last version
	// (Removed). Consumers must not modify it.
	Record Record
	// Old is the record before an Update.
	Old Record
}

// Catalog is the endpoint catalog of one host. Its methods are safe for
// concurrent use and never block on the network.
type Catalog struct {
	store     Store
	self      string
	log       *slog.Logger
	namesWait time.Duration
	watch     *feed.Sub[mesh.Event]

	// mu guards the fields below; feed.Publish runs under it so that every
	// subscriber sees changes in one order. Lock order: mu, then the mesh's.
	mu     sync.Mutex
	local  map[string]Record // by endpoint ID
	remote map[string]Record // by mesh key: other hosts' records
	down   map[string]bool   // hosts whose weft is down
	// addrs is each member's underlay address (from its mesh address),
	// and parked the records refused only because their VTEP is not
	// their host's address as the mesh knows it now: taken in if the
	// host's address comes to match (the two news may arrive in either
	// order).
	addrs  map[string]string
	parked map[string]Record // by mesh key
	// live holds the members whose host holds their address now: alive,
	// suspect or down (their weft stopped, their host answers).
	live map[string]bool
	// handover holds, by mesh key, the records of an earlier life of a
	// host kept in remote until the new life publishes them again or
	// their deadline passes (handoverLocked).
	handover     map[string]time.Time
	handoverWait time.Duration
	// handoverBegun wakes Run when a handover begins, so that it arms its
	// timer for the earliest deadline (a handover may begin in Synced's
	// catch-up, outside Run's goroutine).
	handoverBegun chan struct{}
	// early holds, by endpoint ID, names learned for an endpoint the
	// driver has not given the catalog yet (after a restart that lost
	// the driver's state, the engine's containers are read before their
	// endpoints are adopted again); SetLocal takes them.
	early      map[string]earlyNames
	vtep       string
	namesReady bool
	events     feed.Feed[Event]
	warned     map[string]time.Time // malformed records, by owner
}

// New returns a catalog over cfg.Store. It follows the store from the
// moment it is made; Run applies what it sees.
func New(cfg Config) *Catalog {
	if cfg.NamesWait == 0 {
		cfg.NamesWait = 5 * time.Second
	}
	if cfg.Handover == 0 {
		cfg.Handover = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Catalog{
		store:     cfg.Store,
		self:      cfg.Store.LocalNode(),
		log:       log,
		namesWait: cfg.NamesWait,
		watch:     cfg.Store.Watch(Table, true),
		local:     map[string]Record{},
		remote:    map[string]Record{},
		down:      map[string]bool{},
		addrs:     map[string]string{},
		parked:    map[string]Record{},
		warned:    map[string]time.Time{},
		live:      map[string]bool{},
		handover:  map[string]time.Time{},
		early:     map[string]earlyNames{},

		handoverWait:  cfg.Handover,
		handoverBegun: make(chan struct{}, 1),
	}
}

// Run applies the mesh's changes to the catalog until ctx ends.
func (c *Catalog) Run(ctx context.Context) {
	defer c.watch.Close()
	wait := time.NewTimer(c.namesWait)
	defer wait.Stop()
	// Armed only while a handover is pending, for its earliest deadline.
	end := time.NewTimer(time.Hour)
	end.Stop()
	defer end.Stop()
	arm := func() {
		if at, ok := c.nextHandover(); ok {
			end.Reset(time.Until(at))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-wait.C:
			c.NamesReady()
		case <-c.watch.Ready():
			c.catchUp()
		case <-c.handoverBegun:
			arm()
		case now := <-end.C:
			c.endHandovers(now)
			arm()
		}
	}
}

// nextHandover returns the earliest deadline of the pending handovers.
func (c *Catalog) nextHandover() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, at := range c.handover {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next, !next.IsZero()
}

// catchUp applies what the mesh has queued for the catalog. The queue is
// taken under mu, so that Synced, which catches up too, never answers
// while a batch is taken but not yet applied.
func (c *Catalog) catchUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applyLocked(c.watch.Take())
}

// applyLocked folds a batch of mesh events into the remote records.
func (c *Catalog) applyLocked(evs []mesh.Event) {
	var out []Event
	now := time.Now()
	for _, ev := range evs {
		if ev.Kind == mesh.MemberChanged {
			out = c.memberLocked(ev.Member, out)
			continue
		}
		e := ev.Entry
		if e.Table != Table || e.Owner == c.self {
			// Our own records come back from the mesh after a restart;
			// the mesh's owner repair settles them, the catalog's local
			// side is the truth.
			continue
		}
		old, had := c.remote[e.Key]
		delete(c.parked, e.Key)
		delete(c.handover, e.Key)
		switch ev.Kind {
		case mesh.EntryPut:
			r, err := decode(e.Owner, e.Key, e.Value)
			if err == nil {
				err = c.checkLocked(r, e.Key)
			}
			if err != nil {
				if errors.Is(err, errVTEP) {
					c.parked[e.Key] = r
				}
				c.warnLocked(e.Owner, "ignoring an endpoint record", err)
				if had {
					delete(c.remote, e.Key)
					out = append(out, Event{Kind: Removed, Record: old})
				}
				continue
			}
			out = c.takeLocked(e.Key, r, out)
			out = c.succeedLocked(r, out)
		case mesh.EntryGone:
			if !had {
				continue
			}
			if c.handoverLocked(old) {
				c.handover[e.Key] = now.Add(c.handoverWait)
				select {
				case c.handoverBegun <- struct{}{}:
				default:
				}
				if !old.Down {
					// Marked down: a live record that claims its address
					// (swarm may give it to a new task elsewhere) wins.
					g := old.Clone()
					g.Down = true
					c.remote[e.Key] = g
					out = append(out, Event{Kind: Updated, Record: g, Old: old})
				}
				continue
			}
			delete(c.remote, e.Key)
			out = append(out, Event{Kind: Removed, Record: old})
		}
	}
	c.events.Publish(out...)
}

// handoverLocked reports whether r, withdrawn by the mesh, is a record of
// an earlier life of a host where weft runs again under another name: its
// owner is gone and another member now holds its address (the mesh ends
// such a life as soon as the new one appears, see mesh's supersede). The
// new life publishes the same endpoints again once it has read them from
// its engine, a batch or more later; until then, or until Handover has
// passed, the record stays, marked down (a live record claiming its
// address wins), so that no host deletes the kernel entries of containers
// that ran on all along only to write them again.
func (c *Catalog) handoverLocked(r Record) bool {
	if c.live[r.Host] {
		return false // withdrawn by its own, live, owner
	}
	addr := c.addrs[r.Host]
	if addr == "" {
		return false
	}
	for name, a := range c.addrs {
		if a == addr && name != r.Host && c.live[name] {
			return true
		}
	}
	return false
}

// succeedLocked removes the records an earlier life of r's host left in
// handover for r's endpoint (the same network segment, and the same
// endpoint or address): r takes their place, in the same batch, so that
// the kernel entries they share are never deleted.
func (c *Catalog) succeedLocked(r Record, out []Event) []Event {
	if len(c.handover) == 0 {
		return out
	}
	addr := c.addrs[r.Host]
	keys := slices.Sorted(maps.Keys(c.handover))
	for _, k := range keys {
		g := c.remote[k]
		if g.Host != r.Host && c.addrs[g.Host] == addr && g.VNI == r.VNI && (g.Endpoint == r.Endpoint || g.IP == r.IP) {
			delete(c.handover, k)
			delete(c.remote, k)
			out = append(out, Event{Kind: Removed, Record: g})
		}
	}
	return out
}

// endHandovers removes the records whose handover has passed its deadline
// at now: the new life did not publish them again (their containers went
// while weft was down).
func (c *Catalog) endHandovers(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Event
	for _, k := range slices.Sorted(maps.Keys(c.handover)) {
		if now.Before(c.handover[k]) {
			continue
		}
		delete(c.handover, k)
		if r, ok := c.remote[k]; ok {
			delete(c.remote, k)
			out = append(out, Event{Kind: Removed, Record: r})
		}
	}
	c.events.Publish(out...)
}

// takeLocked holds r as the record of key, appending the event to out.
func (c *Catalog) takeLocked(key string, r Record, out []Event) []Event {
	r.Down = c.down[r.Host]
	old, had := c.remote[key]
	switch {
	case !had:
		c.remote[key] = r
		out = append(out, Event{Kind: Added, Record: r})
	case !old.Equal(r):
		c.remote[key] = r
		out = append(out, Event{Kind: Updated, Record: r, Old: old})
	}
	return out
}

// errVTEP marks a record whose VTEP is not its host's address.
var errVTEP = errors.New("VTEP is not the address of the record's host")

// checkLocked says why a record another host sent must not be taken in,
// or nil. A host speaks only for itself: the record's key must be its
// own (Key(host, endpoint)), and its VTEP its own underlay address (the
// address its mesh member has); the mesh refuses keys of other owners
// already (KeyOwner), this is the same rule where the record is read.
// Every member holds the gossip key, so a member can still write under
// another's name; what it writes then points at that member's address.
func (c *Catalog) checkLocked(r Record, key string) error {
	if key != Key(r.Host, r.Endpoint) {
		return fmt.Errorf("endpoint record %s of %s: the key is not the host's own", key, r.Host)
	}
	_, _, vtep, err := r.Addrs()
	if err != nil {
		return err
	}
	if addr := c.addrs[r.Host]; addr != vtep.String() {
		return fmt.Errorf("endpoint %s of %s: %w (%s, the host's is %q)", r.Endpoint, r.Host, errVTEP, r.VTEP, addr)
	}
	return nil
}

// KeyOwner names the host an endpoint record's key belongs to (the mesh's
// Config.KeyOwner for Table): the part before the first slash.
func KeyOwner(key string) string {
	host, _, _ := strings.Cut(key, "/")
	return host
}

// addrLocked records a member's underlay address and re-checks its
// records against it: held records whose VTEP is no longer the host's
// are parked (Removed), parked ones whose VTEP now is are taken in.
func (c *Catalog) addrLocked(mb mesh.Member, out []Event) []Event {
	addr := ""
	if ap, err := netip.ParseAddrPort(mb.Addr); err == nil {
		addr = ap.Addr().Unmap().String()
	}
	if addr == "" || c.addrs[mb.Name] == addr {
		return out
	}
	c.addrs[mb.Name] = addr
	var keys []string
	for k, r := range c.remote {
		if r.Host == mb.Name {
			keys = append(keys, k)
		}
	}
	for k, r := range c.parked {
		if r.Host == mb.Name {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if r, ok := c.parked[k]; ok {
			if c.checkLocked(r, k) == nil {
				delete(c.parked, k)
				out = c.takeLocked(k, r, out)
			}
			continue
		}
		if r := c.remote[k]; c.checkLocked(r, k) != nil {
			delete(c.remote, k)
			c.parked[k] = r
			out = append(out, Event{Kind: Removed, Record: r})
		}
	}
	return out
}

// memberLocked marks the records of a host that went down, and unmarks
// them when it is alive again, appending the Updated events to out. A host
// that dies or leaves only loses its mark: the mesh withdraws its records
// right after (Removed events, carrying the last version, still marked).
func (c *Catalog) memberLocked(mb mesh.Member, out []Event) []Event {
	if mb.Name == c.self {
		return out
	}
	out = c.addrLocked(mb, out)
	switch mb.State {
	case mesh.StateAlive, mesh.StateSuspect, mesh.StateDown:
		c.live[mb.Name] = true
	default:
		delete(c.live, mb.Name)
	}
	if mb.State == mesh.StateDead || mb.State == mesh.StateLeft {
		// Its records are withdrawn by the mesh; what was parked goes too.
		for k, r := range c.parked {
			if r.Host == mb.Name {
				delete(c.parked, k)
			}
		}
	}
	down := mb.State == mesh.StateDown
	switch {
	case down == c.down[mb.Name]:
		return out
	case down:
		c.down[mb.Name] = true
	case mb.State == mesh.StateAlive || mb.State == mesh.StateSuspect:
		delete(c.down, mb.Name)
	default:
		delete(c.down, mb.Name)
		return out
	}
	var keys []string
	for k, r := range c.remote {
		if r.Host == mb.Name {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		old := c.remote[k]
		r := old.Clone()
		r.Down = down
		c.remote[k] = r
		out = append(out, Event{Kind: Updated, Record: r, Old: old})
	}
	return out
}

func (c *Catalog) warnLocked(owner, msg string, err error) {
	now := time.Now()
	if last, ok := c.warned[owner]; ok && now.Sub(last) < time.Minute {
		return
	}
	c.warned[owner] = now
	c.log.Warn(msg, "peer", owner, "err", err)
}

// Subscribe returns a queue of the catalog's changes, starting with an
// Added event for every record it holds (this host's first). Close it
// when done.
func (c *Catalog) Subscribe() *feed.Sub[Event] {
	c.mu.Lock()
	defer c.mu.Unlock()
	init := make([]Event, 0, len(c.local)+len(c.remote))
	for _, r := range sortedRecords(c.local) {
		init = append(init, Event{Kind: Added, Local: true, Record: r})
	}
	for _, r := range sortedRecords(c.remote) {
		init = append(init, Event{Kind: Added, Record: r})
	}
	return c.events.Subscribe(init...)
}

// SetLocal records (or updates) one of this host's endpoints: its network,
// VNI, endpoint ID, IP and MAC. The catalog fills in the VTEP, the host and
// the names it knows, publishes it to the other hosts and tells the
// subscribers.
func (c *Catalog) SetLocal(r Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, had := c.local[r.Endpoint]
	r.Host, r.VTEP, r.Names = c.self, c.vtep, nil
	if had {
		r.Names = old.Names
	} else if e, ok := c.early[r.Endpoint]; ok {
		r.Names = e.names
	}
	delete(c.early, r.Endpoint)
	c.setLocalLocked(r, old, had)
}

// earlyNames are names learned before their endpoint was known.
type earlyNames struct {
	names []string
	at    time.Time
}

// Bounds of the names held for endpoints not known yet: how many, and
// for how long (the driver adopts a restarted host's endpoints within
// seconds; an endpoint that never comes is another host's, or gone).
const (
	maxEarly  = 4096
	earlyKeep = 2 * time.Minute
)

func (c *Catalog) setLocalLocked(r, old Record, had bool) {
	if had && old.Equal(r) {
		return
	}
	c.local[r.Endpoint] = r
	if had {
		c.events.Publish(Event{Kind: Updated, Local: true, Record: r, Old: old})
	} else {
		c.events.Publish(Event{Kind: Added, Local: true, Record: r})
	}
	c.putLocked(r)
}

// RemoveLocal withdraws one of this host's endpoints everywhere. Removing
// an unknown endpoint still withdraws any record of it this host published
// before a restart.
func (c *Catalog) RemoveLocal(endpointID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.early, endpointID)
	if old, ok := c.local[endpointID]; ok {
		delete(c.local, endpointID)
		c.events.Publish(Event{Kind: Removed, Local: true, Record: old})
	}
	c.store.Delete(Table, Key(c.self, endpointID))
}

// SetNames sets the DNS names of one of this host's endpoints. It reports
// whether the endpoint is known; the names of one not known yet are kept
// for a while, for SetLocal to take when the driver gives it (after a
// restart that lost the driver's state, the learner reads the engine's
// containers before their endpoints are adopted again).
func (c *Catalog) SetNames(endpointID string, names []string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.local[endpointID]
	if !ok {
		c.keepEarlyLocked(endpointID, names, time.Now())
		return false
	}
	r := old.Clone()
	r.Names = slices.Clone(names)
	c.setLocalLocked(r, old, true)
	return true
}

// keepEarlyLocked holds names of an endpoint not known yet, for SetLocal,
// within maxEarly and earlyKeep.
func (c *Catalog) keepEarlyLocked(endpointID string, names []string, now time.Time) {
	for id, e := range c.early {
		if now.Sub(e.at) > earlyKeep {
			delete(c.early, id)
		}
	}
	if _, ok := c.early[endpointID]; !ok && len(c.early) >= maxEarly {
		return
	}
	c.early[endpointID] = earlyNames{names: slices.Clone(names), at: now}
}

// SetVTEP sets this host's underlay address, carried by every local
// record, and (re)publishes them.
func (c *Catalog) SetVTEP(vtep string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vtep == vtep {
		return
	}
	c.vtep = vtep
	for _, old := range sortedRecords(c.local) {
		r := old.Clone()
		r.VTEP = vtep
		c.setLocalLocked(r, old, true)
	}
}

// NamesReady says the names of this host's endpoints have been read from
// the engine: the local records, held back since the start, go out.
func (c *Catalog) NamesReady() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.namesReady {
		return
	}
	c.namesReady = true
	for _, r := range sortedRecords(c.local) {
		c.putLocked(r)
	}
}

func (c *Catalog) putLocked(r Record) {
	if c.vtep == "" || !c.namesReady {
		return // SetVTEP and NamesReady publish them
	}
	b, err := encode(r)
	if err != nil {
		c.log.Error("encode endpoint record", "endpoint", r.Endpoint, "err", err)
		return
	}
	c.store.Put(Table, Key(c.self, r.Endpoint), b)
}

// Local returns copies of this host's records, sorted by endpoint ID.
func (c *Catalog) Local() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedRecords(c.local)
}

// Remote returns copies of the other hosts' records, sorted by host, then
// endpoint ID.
func (c *Catalog) Remote() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedRecords(c.remote)
}

// Synced reports whether the remote records are complete: until the mesh
// has exchanged state with another host after a start, a record missing
// here may merely not have arrived yet. Once the mesh is complete, Synced
// first applies what the mesh queued for the catalog, so that when it
// reports true every record the mesh held is in the catalog, and its
// events in every subscriber's queue: a subscriber that checks Synced, then
// takes its queue, has the complete catalog.
func (c *Catalog) Synced() bool {
	if !c.store.Synced() {
		return false
	}
	c.catchUp()
	return true
}

func sortedRecords(m map[string]Record) []Record {
	out := make([]Record, 0, len(m))
	for _, r := range m {
		out = append(out, r.Clone())
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.Endpoint, b.Endpoint)
	})
	return out
}
