// Package mesh owns weft's control plane between hosts: gossip membership
// (hashicorp/memberlist) and a replicated table of entries, each owned by the
// host that wrote it. It knows nothing of Docker; values are opaque bytes.
//
// Design notes:
//
//   - Ownership. Every entry names its owner, the node that wrote it, and
//     only the owner writes it (Put, Delete). Keys are meant to be written by
//     one owner; if two owners write one key, the newest write wins.
//   - Lamport clock. Each local write increments the node's clock; each
//     entry received advances it to max(local, entry). Per (table, key) the
//     newest clock wins; ties go to the greater owner name, then to the
//     tombstone, then to the greater value, so every node picks the same
//     winner in any order of arrival. With a StateDir the clock's ceiling
//     survives restarts.
//   - Deletes are tombstones that travel like writes and are reaped after
//     TombstoneTTL. A tombstone carries the time it has left, so all holders
//     reap it together and one that reaches a node after reaping is not
//     stored again.
//   - Owner repair. A node that receives a copy of its own entry that it
//     does not hold, or holds older (a copy from before a restart with an
//     empty memory, or from before a tombstone was reaped), answers with its
//     own view under a newer clock: its live entry again, or a tombstone.
//     After a restart it waits RepairGrace before deleting, so the caller
//     can put its entries back first and nothing blinks on other hosts.
//   - Membership decides visibility. memberlist finds a member dead when
//     its weft stops answering; that alone does not tell a plugin down (its
//     host's kernel entries and containers carrying traffic on) from a host
//     gone. So a member found dead is down while its host answers a probe
//     that needs no weft process there (liveness.go): its entries stay
//     shown, for at most DownGrace. A host that stops answering, a member
//     that left, and a member down past the grace are dead: their entries
//     are dropped at once (withdrawn from Entries) and copies still
//     travelling are refused; when the member is alive again its entries
//     come back through anti-entropy, which starts at once with a member
//     that returns. A down member that returns is alive again, nothing
//     shown having changed. Entries of an owner never seen alive are kept
//     hidden for TombstoneTTL, then dropped.
//   - Dissemination. Every change is queued in a memberlist
//     TransmitLimitedQueue, one item per key so a newer change replaces an
//     older one still queued, and packed many to a packet; a node whose
//     table a broadcast changes passes it on. Entries too large for a packet
//     are fanned out over TCP instead.
//   - Anti-entropy. memberlist's push/pull carries a digest (per owner:
//     count, newest clock, XOR of entry hashes), not the table; each side
//     sends the other, over TCP, the entries of the owners where the two
//     differ, grouped by owner with the sender's digest of that owner, so a
//     receiver that meanwhile got the same entries elsewhere skips them
//     unread. A join carries the full table both ways, so a joining node is
//     complete when the join returns. While the table changes in bulk (more
//     than the broadcast queue carries), each member pulls: every
//     SyncInterval it sends its digest to a random member, which answers
//     with what it lacks and its own digest in one message; one exchange at
//     a time, so no member is sent the same entries by two peers at once.
//     The rounds stop after a few equal comparisons and are checked again a
//     few times at growing intervals. Where two copies of an owner's entries
//     share their newest clock, only the fuller one is sent.
//   - Received entries are read in place from the message (entryIter): one
//     that changes nothing costs no allocation; state.store copies the key
//     and value of what it keeps into one allocation.
//   - Wire format: a compact binary encoding, decoded defensively:
//     garbage is dropped and logged at a limited rate. Members of different
//     builds share a mesh under a written compatibility rule (codec.go).
//   - Life. New makes a member with its table but off the network: writes
//     are held in the table and the broadcast queue, and Watch and Members
//     work. Start binds, starts the loops and joins; what was written goes
//     out then. One pre-start strategy, in one place.
//   - Watch. Each consumer gets its own queue of changes, produced where
//     the state changes: no polling, no snapshot diffs.
//
// Files, by role: mesh.go, the Mesh, its life and its API; state.go, the
// table and membership rules (no locks, no I/O); delegate.go, what
// memberlist calls (incoming messages, membership events); broadcast.go,
// the gossip queue, fan-out and the TCP workers; sync.go, when to run
// anti-entropy exchanges; liveness.go, probing the hosts of members found
// dead; watch.go, the event streams; codec.go, the wire format and its
// compatibility rule; rejoin.go, the peers and rejoining; persist.go, the
// state files; keyring.go, the gossip keys; memnet.go, an in-memory
// network (and hosts) for tests.
//
// Concurrency: memberlist calls the delegates from its own goroutines; they
// copy what they receive, hold Mesh.mu briefly, and hand anything slow (TCP
// sends) to the mesh's workers. Lock order: Mesh.life (Start, Close) →
// memberlist's node lock (held while it calls the event delegate) → Mesh.mu
// → the broadcast queues' and the watch feeds' locks. Nothing that holds
// Mesh.mu calls into memberlist. Mesh.persistMu (file writes) and the
// keyring's lock are never held with Mesh.mu. Close stops and waits for
// every goroutine the mesh started.
package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Entry is one replicated record.
type Entry struct {
	Table   string // e.g. "endpoint", "network"
	Key     string // unique within Table
	Owner   string // node name that wrote it; only the owner writes its entries
	Clock   uint64 // Lamport clock of the write
	Deleted bool   // tombstone
	Value   []byte // opaque to the mesh (the caller's JSON)
}

// Member is a node of the mesh as this node sees it.
type Member struct {
	Name  string
	Addr  string // gossip address, "ip:port"; empty for this node before Start
	State string // StateAlive, StateSuspect, StateDown, StateDead or StateLeft
	// Version is the member's weft build (its Config.Version); empty for
	// builds from before it was announced.
	Version string
	// Protocol is the mesh protocol the member speaks (see Protocol); 1 for
	// builds from before it was announced.
	Protocol int
	// DownGrace is how long its entries are kept while it is down: what it
	// announces (its Config.DownGrace), or this member's own for builds
	// that announce none. 0: it is dead as soon as it is found dead.
	DownGrace time.Duration
	// Started is when the member's mesh was made, by its host's clock;
	// zero for builds that announce none.
	Started time.Time
}

// Mesh is a member of the mesh: its table and its view of the other
// members. New makes one that is not yet on the network; Start puts it
// there. Its methods are safe for concurrent use.
type Mesh struct {
	cfg  Config
	log  *slog.Logger
	bad  *rateLog
	self string
	meta []byte // our node metadata (encodeMeta)

	queue    *memberlist.TransmitLimitedQueue // entries, packed many to a message
	control  *memberlist.TransmitLimitedQueue // whole messages (leave notices)
	numAlive atomic.Int32                     // alive members, self included; read by the queues
	// maxBroadcast is the largest encoded entry that fits a gossip packet.
	maxBroadcast int

	changes chan struct{} // capacity 1, coalesced
	tasks   chan task     // TCP work for the workers; never closed
	stop    chan struct{} // closed by Close
	wg      sync.WaitGroup

	// probeNow wakes the liveness loop: a member went down. Capacity 1,
	// coalesced.
	probeNow chan struct{}

	stats struct{ received, applied, skipped, digests, refused atomic.Uint64 }

	// life serialises Start and Close, which hold it across memberlist's
	// Create and Shutdown. Taken before mu, never by a delegate.
	life sync.Mutex

	// mu guards st and the fields below it (see the lock order above).
	mu    sync.Mutex
	st    *state
	watch watchers
	sync  syncScheduler
	phase phase
	// ml is set by Start under mu and never changes after; the loops Start
	// launches read it without the lock. The delegates never use it.
	ml        *memberlist.Memberlist
	selfAddr  string    // our gossip address, once started
	startedAt time.Time // when Start ran: RepairGrace and Synced count from it
	left      bool      // Leave was called: stop rejoining
	// synced is set once a join's full state exchange has been merged.
	synced     bool
	peers      map[string]bool // configured, given to Start or Join: retried for ever
	boot       map[string]bool // from peers.json: tried until a join succeeds
	peersDirty bool            // membership changed since peers.json was written
	clockCeil  uint64          // clock value persisted as a ceiling

	// persistMu serialises writes to StateDir. Never held together with mu.
	persistMu  sync.Mutex
	savedClock uint64 // guarded by persistMu
}

// phase is where a Mesh is in its life.
type phase uint8

const (
	phaseNew     phase = iota // made by New: a table, not on the network
	phaseRunning              // started
	phaseClosed               // closed, started or not
)

// forgetAfter is how long dead or gone members stay in Members.
const forgetAfter = 10 * time.Minute

// maxStrangers bounds how many owners that are not known members have
// entries held: entries may outrun the news of their owner's join, but a
// writer inventing owner names must not make the others hold without end.
const maxStrangers = 64

// New makes a member that is not yet on the network: Put, Delete,
// Entries, Get, Watch and Members (this node only) work at once, and what
// is written goes out when Start puts the member on the network. With a
// StateDir, the saved peers and clock are read here.
func New(cfg Config) (*Mesh, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	m := &Mesh{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.NodeName),
		self:    cfg.NodeName,
		meta:    encodeMeta(nodeMeta{Protocol: Protocol, Version: cfg.Version, DownGrace: cfg.DownGrace, Started: now.UnixMilli()}),
		changes: make(chan struct{}, 1),
		tasks:   make(chan task, 256),
		stop:    make(chan struct{}),
		peers:   make(map[string]bool),
		boot:    make(map[string]bool),
		st:      newState(cfg.NodeName, cfg.TombstoneTTL, now, 0),
		sync:    syncScheduler{interval: cfg.SyncInterval},
	}
	m.st.watch = &m.watch
	m.st.lim = limits{perTable: cfg.MaxEntriesPerOwner, bytes: cfg.MaxBytesPerOwner, strangers: maxStrangers, keyOwner: cfg.KeyOwner}
	m.probeNow = make(chan struct{}, 1)
	m.bad = newRateLog(m.log, 30*time.Second)
	m.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(m.numAlive.Load()) },
		RetransmitMult: cfg.RetransmitMult,
	}
	m.control = &memberlist.TransmitLimitedQueue{
		NumNodes:       m.queue.NumNodes,
		RetransmitMult: cfg.RetransmitMult,
	}
	m.maxBroadcast = cfg.UDPBufferSize - 32
	if cfg.Label != "" {
		m.maxBroadcast -= 2 + len(cfg.Label)
	}
	if len(cfg.SecretKey) > 0 || cfg.Keyring != nil {
		m.maxBroadcast -= 45 // memberlist's worst-case encryption overhead
	}
	m.addPeers(cfg.Peers)
	// This node is a member from the start; Start fills in its address.
	m.st.memberUp(Member{Name: m.self, Version: cfg.Version, Protocol: Protocol, DownGrace: cfg.DownGrace, Started: time.UnixMilli(now.UnixMilli())}, uint16(cfg.Port), now)
	m.numAlive.Store(int32(m.st.alive))
	if cfg.StateDir != "" {
		m.loadState()
	}
	return m, nil
}

// Start puts the member on the network: it binds (or uses cfg.Transport),
// with addr ("ip", or empty) as the bind and advertise address unless the
// configuration sets them, adds peers to the configured ones, and joins
// them in the background, retrying while they do not answer. It does not
// wait for a join; Watch reports members and entries as they arrive.
// RepairGrace and Synced count from here. A failed Start may be retried.
func (m *Mesh) Start(addr string, peers []string) error {
	m.life.Lock()
	defer m.life.Unlock()
	now := time.Now()
	m.mu.Lock()
	switch m.phase {
	case phaseRunning:
		m.mu.Unlock()
		return errors.New("mesh already started")
	case phaseClosed:
		m.mu.Unlock()
		return errors.New("mesh is closed")
	}
	if m.cfg.Keyring != nil && m.cfg.Keyring.Empty() {
		m.mu.Unlock()
		return errors.New("the mesh keyring holds no key yet: starting would run the mesh open")
	}
	m.addPeers(peers)
	// Before memberlist runs: a peer may reach us before Create returns.
	m.startedAt = now
	m.st.graceUntil = now.Add(m.cfg.RepairGrace)
	npeers, nboot := len(m.peers), len(m.boot)
	m.mu.Unlock()

	ml, err := memberlist.Create(m.cfg.memberlistConfig(&delegate{m}, addr))
	if err != nil {
		m.mu.Lock()
		m.startedAt = time.Time{}
		m.mu.Unlock()
		return fmt.Errorf("start mesh member %s: %w", m.self, err)
	}
	// Asked before mu is taken: memberlist may already be calling a
	// delegate, which holds memberlist's node lock and waits for mu.
	var selfAddr string
	if n := ml.LocalNode(); n != nil {
		selfAddr = n.Address()
	}
	m.mu.Lock()
	m.ml = ml
	m.selfAddr = selfAddr
	m.phase = phaseRunning
	m.mu.Unlock()
	m.log.Info("mesh started", "addr", selfAddr, "peers", npeers, "saved_peers", nboot)

	m.start(m.maintainLoop)
	m.start(m.syncLoop)
	m.start(m.rejoinLoop)
	m.start(m.livenessLoop)
	for range workers {
		m.start(m.worker)
	}
	return nil
}

func (m *Mesh) start(f func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
}

// LocalNode returns this node's name.
func (m *Mesh) LocalNode() string { return m.self }

// Put writes an entry under this node's name with a new clock and
// broadcasts it. Putting the value an entry already has does nothing. Empty
// tables, and names or values over the wire limits (table 256 bytes, key
// 4 KiB, value 4 MiB), are refused and logged.
func (m *Mesh) Put(table, key string, value []byte) {
	if table == "" || len(table) > maxTableLen || len(key) > maxKeyLen || len(value) > maxValueLen {
		m.log.Error("mesh put refused: table, key or value size out of limits",
			"table", table, "key_len", len(key), "value_len", len(value))
		return
	}
	m.write(func(now time.Time) *record {
		if why := m.st.refusePut(table, key, value); why != refusedNone {
			m.bad.warn("put "+why.String(), "mesh put refused: "+why.String()+" (the other members would refuse it)",
				"table", table, "key", key)
			return nil
		}
		return m.st.put(table, key, value, now)
	})
}

// Delete tombstones an entry this node owns and broadcasts the tombstone.
// Deleting an absent entry, or one owned by another node, does nothing.
func (m *Mesh) Delete(table, key string) {
	m.write(func(now time.Time) *record { return m.st.del(table, key, now) })
}

func (m *Mesh) write(f func(time.Time) *record) {
	now := time.Now()
	var ceil uint64
	m.mu.Lock()
	r := f(now)
	if r != nil {
		m.sync.changed(1)
		m.broadcastLocked(r, now)
		if m.cfg.StateDir != "" && m.st.clock >= m.clockCeil {
			m.clockCeil = m.st.clock + min(clockReserve, math.MaxUint64-m.st.clock)
			ceil = m.clockCeil
		}
	}
	m.mu.Unlock()
	if r != nil {
		m.notify()
	}
	if ceil != 0 {
		m.saveClock(ceil)
	}
}

// Entries returns copies of the live entries of table whose owner is this
// node or an alive or down member, sorted by key.
func (m *Mesh) Entries(table string) []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.live(table)
}

// Get returns a copy of one entry, if it is live and its owner is this node
// or an alive or down member.
func (m *Mesh) Get(table, key string) (Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.st.lookup(table, key)
	if !m.st.visible(r) {
		return Entry{}, false
	}
	e := r.Entry
	e.Value = slices.Clone(e.Value)
	return e, true
}

// Synced reports whether Entries is complete: a join's full state exchange
// with another member has been merged since Start, or RepairGrace has
// passed since Start without one (a lone host). Until then, what Entries
// lacks may merely not have arrived yet. Before Start it is false.
func (m *Mesh) Synced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.synced || (!m.startedAt.IsZero() && time.Since(m.startedAt) > m.cfg.RepairGrace)
}

// Stats counts the entries this member received and the anti-entropy
// exchanges it started or answered, since New.
type Stats struct {
	Received uint64 // entries read from gossip, anti-entropy and joins
	Applied  uint64 // of those, entries that changed the table
	Skipped  uint64 // entries in anti-entropy blocks skipped unread: already held
	Digests  uint64 // digests sent (each starts or answers an exchange)
	// Refused counts received entries refused (a clock too far ahead, a
	// key naming another owner, an owner over its quota) and digests from
	// senders that are not alive members.
	Refused uint64
}

// SumStats adds up the counters of several members (of a simulated mesh,
// say).
func SumStats(ms []*Mesh) Stats {
	var sum Stats
	for _, m := range ms {
		st := m.Stats()
		sum.Received += st.Received
		sum.Applied += st.Applied
		sum.Skipped += st.Skipped
		sum.Digests += st.Digests
		sum.Refused += st.Refused
	}
	return sum
}

// Stats returns the member's counters.
func (m *Mesh) Stats() Stats {
	return Stats{
		Received: m.stats.received.Load(),
		Applied:  m.stats.applied.Load(),
		Skipped:  m.stats.skipped.Load(),
		Digests:  m.stats.digests.Load(),
		Refused:  m.stats.refused.Load(),
	}
}

// Changes returns a channel that receives a value, coalesced, whenever what
// Entries or Members return may have changed. Read it, then read the state.
//
// Deprecated: use Watch, which says what changed.
func (m *Mesh) Changes() <-chan struct{} { return m.changes }

func (m *Mesh) notify() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// Members returns every member this node knows, itself included, sorted by
// name. Down members are listed while they are down (DownGrace at most);
// dead and gone members stay listed for a while. Before Start, only this
// node.
func (m *Mesh) Members() []Member {
	m.mu.Lock()
	ml := m.ml
	running := m.phase == phaseRunning
	m.mu.Unlock()
	suspect := map[string]bool{}
	if running {
		for _, n := range ml.Members() {
			if n.State == memberlist.StateSuspect {
				suspect[n.Name] = true
			}
		}
	}
	m.mu.Lock()
	out := make([]Member, 0, len(m.st.members))
	for _, mb := range m.st.members {
		c := mb.Member
		if c.State == StateAlive && suspect[c.Name] {
			c.State = StateSuspect
		}
		out = append(out, c)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Join joins the given addresses ("ip", "ip:port" or "host:port") at once
// and adds them to the peers retried in the background. It returns how many
// answered. Before Start it only adds them: Start joins them.
func (m *Mesh) Join(addrs []string) (int, error) {
	m.mu.Lock()
	if m.phase == phaseClosed {
		m.mu.Unlock()
		return 0, errors.New("mesh is closed")
	}
	norm := m.addPeers(addrs)
	ml := m.ml
	m.mu.Unlock()
	if len(norm) == 0 || ml == nil {
		return 0, nil
	}
	n, err := ml.Join(norm)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("join mesh peers %v: %w", norm, err)
	}
	return n, nil
}

// Leave tells the other members that this node is leaving, waiting up to
// timeout for the news to go out, and stops rejoining. Its entries are
// withdrawn everywhere. Call Close afterwards.
func (m *Mesh) Leave(timeout time.Duration) error {
	m.mu.Lock()
	if m.phase != phaseRunning {
		m.mu.Unlock()
		return errors.New("mesh is not running")
	}
	m.left = true
	// Our notice first: the others then record memberlist's "dead" news of
	// us as a departure.
	m.st.memberLeaving(m.self, time.Now())
	m.control.QueueBroadcast(&broadcast{name: m.self, msg: encodeLeave(m.self)})
	ml := m.ml
	m.mu.Unlock()
	if err := ml.Leave(timeout); err != nil {
		return fmt.Errorf("leave mesh: %w", err)
	}
	return nil
}

// Close shuts the member down without a goodbye (the others will find it
// dead, or down while its host answers), after handing its own entries to
// a few members (flush); it waits for the mesh's goroutines and saves the
// peers and clock in StateDir. It works whether or not Start ran, and is
// safe to call more than once. Subscriptions stay open, with no more
// events.
func (m *Mesh) Close() error {
	m.life.Lock()
	defer m.life.Unlock()
	m.mu.Lock()
	if m.phase == phaseClosed {
		m.mu.Unlock()
		return nil
	}
	running := m.phase == phaseRunning && !m.left
	m.phase = phaseClosed
	ml := m.ml
	m.mu.Unlock()
	if running {
		m.flush()
	}
	close(m.stop)
	var err error
	if ml != nil {
		if e := ml.Shutdown(); e != nil {
			err = fmt.Errorf("shut down mesh member: %w", e)
		}
	}
	m.wg.Wait()
	if m.cfg.StateDir != "" {
		m.mu.Lock()
		c := max(m.st.clock, m.clockCeil)
		m.mu.Unlock()
		m.saveClock(c)
		m.savePeers()
	}
	return err
}

// maintainLoop reaps tombstones and orphans, ends the repair grace and
// saves the peers.
func (m *Mesh) maintainLoop() {
	every := min(max(m.cfg.TombstoneTTL/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	var lastSave time.Time // the first change is saved at once
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		m.mu.Lock()
		m.st.reap(now)
		for _, res := range m.st.endGrace(now) {
			m.sync.changed(1)
			m.broadcastLocked(res.rec, now)
		}
		m.st.forgetMembers(now, forgetAfter)
		save := m.cfg.StateDir != "" && m.peersDirty && now.Sub(lastSave) > 5*time.Second
		if save {
			m.peersDirty = false
		}
		m.mu.Unlock()
		if save {
			lastSave = now
			m.savePeers()
		}
	}
}
