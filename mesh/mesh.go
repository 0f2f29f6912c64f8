// Package mesh owns weft's control plane between hosts: gossip membership
// (hashicorp/memberlist) and a replicated table of entries, each owned by the
// host that wrote it. It knows nothing of Docker; values are opaque bytes.
//
// Design notes:
//
//   - Ownership. Every entry names its owner, the node that wrote it, and
//     only the owner writes it (Put, Delete). Keys are meant to be written by
//     one owner; if two owners write one key, the newest write wins.
//
//   - Lamport clock. Each local write increments the node's clock; each
//     entry received advances it to max(local, entry). Per (table, key) the
//     newest clock wins; ties go to the greater owner name, then to the
//     tombstone, then to the greater value, so every node picks the same
//     winner in any order of arrival. With a StateDir the clock's ceiling
//     survives restarts.
//
//   - Deletes are tombstones that travel like writes and are reaped after
//     TombstoneTTL. A tombstone carries the time it has left, so all holders
//     reap it together and one that reaches a node after reaping is not
//     stored again.
//
//   - Owner repair. A node that receives a copy of its own entry that it
//     does not hold, or holds older (a copy from before a restart with an
//     empty memory, or from before a tombstone was reaped), answers with its
//     own view under a newer clock: its live entry again, or a tombstone.
//     After a restart it waits RepairGrace before deleting, so the caller
//     can put its entries back first and nothing blinks on other hosts.
//
//   - Membership decides visibility. Entries of a member declared dead or
//     gone are dropped at once (withdrawn from Entries) and copies still
//     travelling are refused; when the member is alive again its entries
//     come back through anti-entropy, which starts at once with a member
//     that returns. Entries of an owner never seen alive are kept hidden for
//     TombstoneTTL, then dropped.
//
//   - Dissemination. Every change is queued in a memberlist
//     TransmitLimitedQueue, one item per key so a newer change replaces an
//     older one still queued, and packed many to a packet; a node whose
//     table a broadcast changes passes it on. Entries too large for a packet
//     are fanned out over TCP instead.
//
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
//
//   - Received entries are read in place from the message (entryIter): one
//     that changes nothing costs no allocation; state.store copies the key
//     and value of what it keeps into one allocation.
//
//   - Wire format: a compact binary encoding (codec.go), decoded
//     defensively: garbage is dropped and logged at a limited rate.
//
//   - Life. New makes a member with its table but off the network: writes
//     are held in the table and the broadcast queue, and Watch and Members
//     work. Start binds, starts the loops and joins; what was written goes
//     out then. One pre-start strategy, in one place.
//
//   - Watch. Each consumer gets its own queue of changes (watch.go),
//     produced where the state changes: no polling, no snapshot diffs.
//
// Concurrency: memberlist calls the delegates from its own goroutines; they
// copy what they receive, hold Mesh.mu briefly, and hand anything slow (TCP
// sends) to the mesh's workers. Lock order: Mesh.life (Start, Close) →
// memberlist's node lock (held while it calls the event delegate) → Mesh.mu
// → the broadcast queues' and the watch feeds' locks. Nothing that holds
// Mesh.mu calls into memberlist. Close stops and waits for every goroutine
// the mesh started.
package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
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
	State string // StateAlive, StateSuspect, StateDead or StateLeft
	// Version is the member's weft build (its Config.Version); empty for
	// builds from before it was announced.
	Version string
	// Protocol is the mesh protocol the member speaks (see Protocol); 1 for
	// builds from before it was announced.
	Protocol int
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

	stats struct{ received, applied, skipped, digests atomic.Uint64 }

	// life serialises Start and Close, which hold it across memberlist's
	// Create and Shutdown. Taken before mu, never by a delegate.
	life sync.Mutex

	// mu guards st and the fields below it (see the lock order above).
	mu    sync.Mutex
	st    *state
	watch watchers
	phase phase
	// ml is set by Start under mu and never changes after; the loops Start
	// launches read it without the lock. The delegates never use it.
	ml        *memberlist.Memberlist
	selfAddr  string    // our gossip address, once started
	startedAt time.Time // when Start ran: RepairGrace and Synced count from it
	left      bool      // Leave was called: stop rejoining
	// synced is set once a join's full state exchange has been merged.
	synced    bool
	dirty     int       // table changes since the last extra sync
	pruned    bool      // the broadcast queue overflowed since the last sync
	differs   bool      // syncing: a recent digest compared differed from ours
	equalRuns int       // equal comparisons in a row while syncing
	tailLeft  int       // checks still to run after syncing stopped
	tailAt    time.Time // when the next of them is due
	// syncPeer is the member our last extra exchange went to, until its
	// answer arrives or syncWait rounds pass: one exchange at a time,
	// so slow peers slow the rounds down instead of piling them up.
	syncPeer   string
	syncSince  time.Time
	peersDirty bool            // membership changed since peers.json was written
	clockCeil  uint64          // clock value persisted as a ceiling
	peers      map[string]bool // configured, given to Start or Join: retried for ever
	boot       map[string]bool // from peers.json: tried until a join succeeds

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

// task is TCP work handed to a worker.
type task struct {
	to string // member name
	// request: send our digest, asking for the peer's answer.
	request bool
	// delta: send what the peer lacks according to theirs, ending with our
	// digest as the answer to its request if answer is set.
	delta  bool
	theirs []ownerDigest
	answer bool
	raw    []byte // send this message as is
}

const (
	// fastSyncThreshold: more changes than this between two SyncIntervals
	// means a bulk change, worth an extra digest exchange.
	fastSyncThreshold = 8
	// returnSyncs bounds the members synced with per SyncInterval because
	// they came back, so a healed partition does not set off a storm.
	returnSyncs = 3
	// fanout is how many members an entry too large for a packet is sent to
	// over TCP; each of them passes it on the same way.
	fanout = 3
	// equalToStop equal comparisons in a row end a burst's sync rounds;
	// tailChecks single exchanges follow, syncWait, 2×syncWait, 4×syncWait
	// SyncIntervals apart.
	equalToStop = 3
	tailChecks  = 3
	// syncWait, in SyncIntervals, is how long an exchange waits for its
	// answer before the next one may start.
	syncWait = 5
	// syncChunk bounds one TCP message of entries, well under memberlist's
	// 20 MiB limit; large enough that an answer is one message in all but
	// the largest exchanges (about 17,000 endpoint records).
	syncChunk = 4 << 20
	// applyBatch bounds how many received entries are merged per lock hold.
	applyBatch = 256
	// clockReserve is how far ahead of the clock its ceiling is persisted.
	clockReserve = 1 << 10
	// forgetAfter is how long dead or gone members stay in Members.
	forgetAfter = 10 * time.Minute
	// maxSavedPeers bounds peers.json.
	maxSavedPeers = 64
	workers       = 2
)

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
		meta:    encodeMeta(Protocol, cfg.Version),
		changes: make(chan struct{}, 1),
		tasks:   make(chan task, 256),
		stop:    make(chan struct{}),
		peers:   make(map[string]bool),
		boot:    make(map[string]bool),
		st:      newState(cfg.NodeName, cfg.TombstoneTTL, now, 0),
	}
	m.st.watch = &m.watch
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
	m.st.memberUp(Member{Name: m.self, Version: cfg.Version, Protocol: Protocol}, uint16(cfg.Port), now)
	m.numAlive.Store(int32(m.st.alive))
	if cfg.StateDir != "" {
		m.loadState()
	}
	return m, nil
}

// addPeers adds addresses to the peers retried for ever and returns them
// normalised, without our own.
func (m *Mesh) addPeers(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if n, ok := normalizeAddr(a, m.cfg.Port); ok {
			m.peers[n] = true
			if n != m.selfAddr {
				out = append(out, n)
			}
		}
	}
	return out
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
	m.mu.Lock()
	m.ml = ml
	if n := ml.LocalNode(); n != nil {
		m.selfAddr = n.Address()
	}
	m.phase = phaseRunning
	selfAddr := m.selfAddr
	m.mu.Unlock()
	m.log.Info("mesh started", "addr", selfAddr, "peers", npeers, "saved_peers", nboot)

	m.start(m.maintainLoop)
	m.start(m.syncLoop)
	m.start(m.rejoinLoop)
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
	m.write(func(now time.Time) *record { return m.st.put(table, key, value, now) })
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
		m.dirty++
		m.broadcastLocked(r, now)
		if m.cfg.StateDir != "" && m.st.clock >= m.clockCeil {
			m.clockCeil = m.st.clock + clockReserve
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
// node or an alive member, sorted by key.
func (m *Mesh) Entries(table string) []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.live(table)
}

// Get returns a copy of one entry, if it is live and its owner is this node
// or an alive member.
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

// Stats counts the entries this member received and the anti-entropy
// exchanges it started or answered, since New.
type Stats struct {
	Received uint64 // entries read from gossip, anti-entropy and joins
	Applied  uint64 // of those, entries that changed the table
	Skipped  uint64 // entries in anti-entropy blocks skipped unread: already held
	Digests  uint64 // digests sent (each starts or answers an exchange)
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
// name. Dead and gone members stay listed for a while. Before Start, only
// this node.
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
	m.st.memberLeaving(m.self)
	m.control.QueueBroadcast(&broadcast{name: m.self, msg: encodeLeave(m.self)})
	ml := m.ml
	m.mu.Unlock()
	if err := ml.Leave(timeout); err != nil {
		return fmt.Errorf("leave mesh: %w", err)
	}
	return nil
}

// Close shuts the member down without a goodbye (the others will find it
// dead), waits for the mesh's goroutines and saves the peers and clock in
// StateDir. It works whether or not Start ran, and is safe to call more
// than once. Subscriptions stay open, with no more events.
func (m *Mesh) Close() error {
	m.life.Lock()
	defer m.life.Unlock()
	m.mu.Lock()
	if m.phase == phaseClosed {
		m.mu.Unlock()
		return nil
	}
	m.phase = phaseClosed
	ml := m.ml
	m.mu.Unlock()
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

// broadcastLocked queues a changed record for gossip, or fans it out over
// TCP if it is too large for a packet. Caller holds mu.
func (m *Mesh) broadcastLocked(r *record, now time.Time) {
	var residual time.Duration
	if r.Deleted {
		residual = r.reapAt.Sub(now)
	}
	b := appendEntry(nil, &r.Entry, residual)
	if len(b) > m.maxBroadcast {
		raw := encodeEntries(msgBroadcast, []wireEntry{{Entry: r.Entry, Residual: residual}})
		for _, to := range m.randomMembersLocked(fanout) {
			m.enqueue(task{to: to, raw: raw})
		}
		return
	}
	m.queue.QueueBroadcast(&broadcast{name: r.Table + "\x00" + r.Key, msg: b})
	if m.queue.NumQueued() > m.cfg.MaxQueuedBroadcasts {
		m.queue.Prune(m.cfg.MaxQueuedBroadcasts)
		m.pruned = true
	}
}

// randomMembersLocked picks up to n alive members other than self.
func (m *Mesh) randomMembersLocked(n int) []string {
	var names []string
	for name, mb := range m.st.members {
		if name != m.self && (mb.State == StateAlive || mb.State == StateSuspect) {
			names = append(names, name)
		}
	}
	rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	return names[:min(n, len(names))]
}

// enqueue hands a task to the workers without blocking; when they are
// behind, the task is dropped and anti-entropy makes up for it.
func (m *Mesh) enqueue(t task) {
	select {
	case m.tasks <- t:
	default:
		m.bad.warn("tasks", "mesh TCP work queue full, dropping a send", "peer", t.to)
	}
}

// receive handles a message from gossip, TCP or a push/pull; buf is only
// valid during the call. Entries are merged straight from buf; a push/pull
// never relays them (anti-entropy spreads them further). Garbage is logged
// at a limited rate; a message type this build does not know is skipped
// silently (see the compatibility rule in codec.go).
// It reports whether buf was a message we read.
func (m *Mesh) receive(buf []byte, pushPull bool) bool {
	typ, body, err := parseHeader(buf)
	if err == nil {
		err = m.dispatch(typ, body, pushPull)
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, errUnknownType):
		return false
	}
	what := "mesh dropped a bad message"
	if pushPull {
		what = "mesh dropped a bad remote state"
	}
	m.bad.warn("decode", what, "len", len(buf), "err", err)
	return false
}

// dispatch decodes and acts on a message's body: one decoder per type.
func (m *Mesh) dispatch(typ byte, body []byte, pushPull bool) error {
	switch typ {
	case msgBroadcast, msgSync:
		it, err := viewEntries(body)
		if err != nil {
			return err
		}
		if m.merge(it, typ == msgBroadcast && !pushPull) {
			m.notify()
		}
	case msgBlocks:
		return m.mergeBlocks(body)
	case msgAnswer:
		d := decoder{b: body}
		answer := decodeDigest(&d)
		if d.err != nil {
			return d.err
		}
		if err := m.mergeBlocks(d.b); err != nil {
			return err
		}
		m.digestReceived(answer)
	case msgDigest:
		d := decoder{b: body}
		dg := decodeDigest(&d)
		if err := d.done(); err != nil {
			return err
		}
		m.digestReceived(dg)
	case msgLeave:
		node, err := decodeLeave(body)
		if err != nil {
			return err
		}
		m.leaveReceived(node)
	default:
		return errUnknownType
	}
	return nil
}

// digestReceived acts on a peer's digest: an answer to our request is only
// compared with ours; any other is answered with what the peer lacks (and
// our digest, if it asks for a reply).
func (m *Mesh) digestReceived(d *digestMsg) {
	if d.Sender == m.self {
		return
	}
	m.mu.Lock()
	if d.Sender == m.syncPeer && !d.Reply {
		m.syncPeer = "" // our exchange is answered
	}
	if d.Answer {
		_, differs := m.st.delta(d.Owners, time.Now(), false)
		m.compared(differs)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.enqueue(task{to: d.Sender, delta: true, theirs: d.Owners, answer: d.Reply})
}

// leaveReceived records a member's leave notice and passes it on.
func (m *Mesh) leaveReceived(node string) {
	if node == m.self {
		return
	}
	m.mu.Lock()
	news := m.st.memberLeaving(node)
	if news {
		// Pass it on, as memberlist does its own leave message.
		m.control.QueueBroadcast(&broadcast{name: node, msg: encodeLeave(node)})
	}
	m.mu.Unlock()
	if news {
		m.notify()
	}
}

// merge applies the entries of a received entries message in batches, so
// a large state does not hold the lock for long. relay passes changes on
// by broadcast. The entries are views into the message (see entryIter):
// one that changes nothing costs no allocation; state.store copies the
// ones it keeps.
// It reports whether what Entries shows changed.
func (m *Mesh) merge(it *entryIter, relay bool) (changed bool) {
	var received, applied uint64
	defer func() {
		m.stats.received.Add(received)
		m.stats.applied.Add(applied)
	}()
	var w wireEntry
	for more := true; more; {
		now := time.Now()
		m.mu.Lock()
		for n := 0; n < applyBatch; n++ {
			if more = it.next(&w); !more {
				break
			}
			res := m.st.apply(w, now)
			received++
			if res.rec == nil {
				continue
			}
			applied++
			m.dirty++
			if res.visible {
				changed = true
			}
			if res.repair || (relay && m.st.memberAlive(res.rec.Owner)) {
				m.broadcastLocked(res.rec, now)
			}
		}
		m.mu.Unlock()
	}
	return changed
}

// mergeBlocks merges the blocks of a received blocks body, skipping those
// whose owner we already hold exactly as the sender does. The framing is
// checked first, and each block whole before any of it is applied; a bad
// one ends the message (the blocks before it stay applied).
func (m *Mesh) mergeBlocks(body []byte) error {
	bi, err := viewBlocks(body)
	if err != nil {
		return err
	}
	changed := false
	defer func() {
		if changed {
			m.notify()
		}
	}()
	var od ownerDigest
	var entries []byte
	for bi.next(&od, &entries) {
		m.mu.Lock()
		skip := m.st.holds(&od)
		m.mu.Unlock()
		if skip {
			n, _ := binary.Uvarint(entries)
			m.stats.skipped.Add(n)
			continue
		}
		it, err := viewEntries(entries)
		if err != nil {
			return fmt.Errorf("block of %s: %w", od.Owner, err)
		}
		if m.merge(it, false) {
			changed = true
		}
	}
	return nil
}

// worker runs TCP sends.
func (m *Mesh) worker() {
	for {
		select {
		case <-m.stop:
			return
		case t := <-m.tasks:
			m.run(t)
		}
	}
}

func (m *Mesh) run(t task) {
	now := time.Now()
	m.mu.Lock()
	mb := m.st.members[t.to]
	if mb == nil || !(mb.State == StateAlive || mb.State == StateSuspect) || t.to == m.self {
		m.mu.Unlock()
		return
	}
	host, _, _ := net.SplitHostPort(mb.Addr)
	node := &memberlist.Node{Name: mb.Name, Addr: net.ParseIP(host), Port: mb.port}
	var delta []block
	if t.delta {
		var differs bool
		delta, differs = m.st.delta(t.theirs, now, true)
		m.compared(differs)
	}
	var dg *digestMsg
	if t.request || t.answer {
		dg = &digestMsg{Sender: m.self, Reply: t.request, Answer: t.answer, Owners: m.st.digest()}
	}
	m.mu.Unlock()

	// Encoded outside the lock: records are never modified in place.
	var msgs [][]byte
	switch {
	case t.request:
		msgs = [][]byte{encodeDigest(dg)}
	case t.delta:
		msgs = syncMessages(delta, dg)
	}
	if dg != nil {
		m.stats.digests.Add(1)
	}
	if t.raw != nil {
		msgs = append(msgs, t.raw)
	}
	for _, b := range msgs {
		if err := m.ml.SendReliable(node, b); err != nil {
			m.bad.warn("send "+t.to, "mesh send failed", "peer", t.to, "err", err)
			return
		}
	}
}

// compared records the outcome of comparing a peer's digest with ours:
// syncing goes on while comparisons differ. Caller holds mu.
func (m *Mesh) compared(differs bool) {
	switch {
	case differs:
		m.startSyncing()
	case m.differs:
		// An equal comparison may be with a peer missing the same entries,
		// or with a digest older than a change; stop after a few in a row,
		// then check again a few times (see syncLoop).
		if m.equalRuns++; m.equalRuns >= equalToStop {
			m.differs, m.equalRuns = false, 0
			m.tailLeft = tailChecks
			m.tailAt = time.Now().Add(m.cfg.SyncInterval * syncWait)
		}
	}
}

// startSyncing starts (or continues) rounds of extra exchanges. Caller
// holds mu.
func (m *Mesh) startSyncing() {
	m.differs, m.equalRuns, m.tailLeft = true, 0, 0
}

// syncChunks splits what a peer lacks into chunks of about syncChunk
// bytes. An owner with more entries than fit in one chunk is split over
// several blocks, each with the same digest.
func syncChunks(delta []block) [][]block {
	var out [][]block
	var cur []block
	size := 0
	for _, bl := range delta {
		for start := 0; start < len(bl.Entries); {
			end := start
			for end < len(bl.Entries) && (end == start || size < syncChunk) {
				size += entrySize(&bl.Entries[end].Entry)
				end++
			}
			cur = append(cur, block{Digest: bl.Digest, Entries: bl.Entries[start:end]})
			start = end
			if size >= syncChunk {
				out, cur, size = append(out, cur), nil, 0
			}
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// syncMessages encodes what a peer lacks as blocks messages; with answer,
// the last of them is an answer message carrying it (alone if the peer
// lacks nothing).
func syncMessages(delta []block, answer *digestMsg) [][]byte {
	chunks := syncChunks(delta)
	var out [][]byte
	for i, c := range chunks {
		if i == len(chunks)-1 && answer != nil {
			return append(out, encodeAnswer(answer, c))
		}
		out = append(out, encodeBlocks(c))
	}
	if answer != nil {
		out = append(out, encodeAnswer(answer, nil))
	}
	return out
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
			m.dirty++
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

// syncLoop starts extra anti-entropy exchanges: with members that came
// back (their entries were dropped here when they went), and with a random
// member while the table changes in bulk or differed from the last one
// compared.
func (m *Mesh) syncLoop() {
	t := time.NewTicker(m.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		var targets []string
		m.mu.Lock()
		for name, mb := range m.st.members {
			if mb.returned && len(targets) < returnSyncs {
				mb.returned = false
				targets = append(targets, name)
			}
		}
		// A burst starts rounds of exchanges with random members, one per
		// tick; they go on until equalToStop comparisons of digests in a
		// row find nothing missing either way (a lost send or answer just
		// means one more round). Near the end of a burst many members lack
		// the same last entries, so a few equal comparisons can still leave
		// one behind: after the rounds stop, tailChecks more exchanges
		// follow at growing intervals, and any difference starts the rounds
		// again. Single changes rely on broadcasts, with push/pull behind.
		now := time.Now()
		if m.dirty > fastSyncThreshold || m.pruned {
			m.startSyncing()
		}
		idle := m.syncPeer == "" || now.Sub(m.syncSince) > syncWait*m.cfg.SyncInterval
		tail := !m.differs && m.tailLeft > 0 && !now.Before(m.tailAt)
		if idle && (m.differs || tail) {
			if to := m.randomMembersLocked(1); len(to) > 0 {
				targets = append(targets, to[0])
				m.syncPeer, m.syncSince = to[0], now
			}
			if tail {
				m.tailLeft--
				m.tailAt = now.Add(m.cfg.SyncInterval * syncWait << (tailChecks - m.tailLeft))
			}
		}
		m.dirty, m.pruned = 0, false
		m.mu.Unlock()
		for _, to := range targets {
			m.enqueue(task{to: to, request: true})
		}
	}
}

// delegate implements memberlist.Delegate and memberlist.EventDelegate. It
// is a separate type so those methods are not part of Mesh's API.
type delegate struct{ m *Mesh }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

// NodeMeta returns our metadata: protocol and version (encodeMeta).
func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.m.meta) > limit {
		return nil
	}
	return slices.Clone(d.m.meta)
}

// NotifyMsg handles a user message, from gossip or TCP. buf is only valid
// during the call; decoding copies it.
func (d *delegate) NotifyMsg(buf []byte) {
	d.m.receive(buf, false)
}

// GetBroadcasts returns the queued control messages, then packs as many
// queued entries as fit into one more message.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	const hdr = headerLen + 2 // header and a two-byte count (< 16384 entries)
	out := d.m.control.GetBroadcasts(overhead, limit)
	for _, b := range out {
		limit -= overhead + len(b)
	}
	avail := limit - overhead - hdr
	if avail <= 0 {
		return out
	}
	items := d.m.queue.GetBroadcasts(0, avail)
	if len(items) == 0 {
		return out
	}
	n := hdr
	for _, it := range items {
		n += len(it)
	}
	b := make([]byte, 0, n)
	b = appendHeader(b, msgBroadcast)
	b = binary.AppendUvarint(b, uint64(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return append(out, b)
}

// LocalState is our side of a push/pull: the whole table for a join, a
// digest otherwise.
func (d *delegate) LocalState(join bool) []byte {
	m := d.m
	now := time.Now()
	m.mu.Lock()
	if join {
		all := m.st.all(now)
		m.mu.Unlock()
		b := encodeEntries(msgSync, all)
		if len(b) <= maxStateBytes {
			return b
		}
		m.log.Warn("mesh table too large for a join's state exchange, sending a digest", "bytes", len(b))
		m.mu.Lock()
	}
	dg := &digestMsg{Sender: m.self, Owners: m.st.digest()}
	m.mu.Unlock()
	return encodeDigest(dg)
}

// maxStateBytes keeps a full state under memberlist's 20 MiB limit on what
// it accepts in a push/pull.
const maxStateBytes = 16 << 20

// MergeRemoteState merges the other side of a push/pull.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	m := d.m
	if len(buf) == 0 || !m.receive(buf, true) {
		return
	}
	if !join {
		return
	}
	m.mu.Lock()
	news := !m.synced
	m.synced = true
	m.mu.Unlock()
	if news {
		m.notify()
	}
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

// NotifyJoin records a member as alive. Called with memberlist's node lock
// held: it must not call memberlist.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	d.up(n)
}

// NotifyUpdate records a member's new metadata or address.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	d.up(n)
}

func (d *delegate) up(n *memberlist.Node) {
	m := d.m
	protocol, version := decodeMeta(n.Meta)
	mb := Member{Name: n.Name, Addr: n.Address(), Version: version, Protocol: protocol}
	m.mu.Lock()
	fresh := m.st.memberUp(mb, n.Port, time.Now())
	m.numAlive.Store(int32(m.st.alive))
	m.peersDirty = true
	m.mu.Unlock()
	if fresh && n.Name != m.self {
		m.log.Info("mesh member alive", "peer", n.Name, "addr", mb.Addr)
	}
	m.notify()
}

// NotifyLeave records a member as dead or gone and withdraws its entries.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m := d.m
	st := StateDead
	if n.State == memberlist.StateLeft {
		st = StateLeft
	}
	m.mu.Lock()
	m.st.memberDown(n.Name, st, time.Now())
	m.numAlive.Store(int32(m.st.alive))
	m.peersDirty = true
	m.mu.Unlock()
	if n.Name != m.self {
		m.log.Info("mesh member "+st, "peer", n.Name, "addr", n.Address())
	}
	m.notify()
}

// broadcast is one queued entry. Named by table and key, so queueing a
// newer version of a key drops the older one.
type broadcast struct {
	name string
	msg  []byte // the encoded entry, without a message header
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// normalizeAddr turns "ip", "ip:port", "host" or "host:port" into
// "host:port", with port as the default.
func normalizeAddr(a string, port int) (string, bool) {
	if a == "" {
		return "", false
	}
	if host, p, err := net.SplitHostPort(a); err == nil {
		if host == "" || p == "" {
			return "", false
		}
		return net.JoinHostPort(host, p), true
	}
	// No port, or an IPv6 literal without brackets.
	if ip := net.ParseIP(a); ip != nil {
		return net.JoinHostPort(ip.String(), strconv.Itoa(port)), true
	}
	return net.JoinHostPort(a, strconv.Itoa(port)), true
}
