package mesh

// This file owns how changes leave this member: the broadcast queue
// (memberlist's TransmitLimitedQueue, one named item per key, so a newer
// change replaces an older one still queued, packed many to a gossip
// packet), entries too large for a packet fanned out over TCP, and the TCP
// workers that run those sends and the anti-entropy exchanges.
//
// Locks: broadcastLocked and randomMembersLocked run under Mesh.mu, which
// is taken before the queue's own lock; the workers take Mesh.mu only to
// read the state, and send with it released.

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// fanout is how many members an entry too large for a packet is sent to
	// over TCP; each of them passes it on the same way.
	fanout = 3
	// workers run the TCP sends.
	workers = 2
)

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
		m.sync.overflowed()
	}
}

// flushTime bounds how long Close waits for its last word to go out.
const flushTime = time.Second

// flush hands this member's own entries, tombstones included, over TCP to
// up to fanout alive members, as one broadcast message, before it stops:
// what it changed last (the endpoints its engine removed while shutting
// down, say) may still sit in the gossip queue, and the others keep a
// stopped member's entries while its host answers. Receivers pass on what
// changes their table. It waits up to flushTime; the sends end by Close's
// shutdown at the latest.
func (m *Mesh) flush() {
	now := time.Now()
	m.mu.Lock()
	var own []wireEntry
	if set := m.st.owners[m.self]; set != nil {
		own = make([]wireEntry, 0, len(set.recs))
		for _, r := range set.recs {
			own = append(own, m.st.wire(r, now))
		}
	}
	var nodes []*memberlist.Node
	for _, name := range m.randomMembersLocked(fanout) {
		nodes = append(nodes, m.nodeLocked(name))
	}
	m.mu.Unlock()
	if len(own) == 0 || len(nodes) == 0 {
		return
	}
	msg := encodeEntries(msgBroadcast, own)
	sent := make(chan struct{}, len(nodes))
	for _, n := range nodes {
		m.start(func() {
			if err := m.ml.SendReliable(n, msg); err != nil {
				m.log.Debug("mesh could not hand its entries over before closing", "peer", n.Name, "err", err)
			}
			sent <- struct{}{}
		})
	}
	timer := time.NewTimer(flushTime)
	defer timer.Stop()
	for range nodes {
		select {
		case <-sent:
		case <-timer.C:
			return
		}
	}
}

// nodeLocked returns the memberlist node of a known member, to send to.
// Caller holds mu.
func (m *Mesh) nodeLocked(name string) *memberlist.Node {
	mb := m.st.members[name]
	host, _, _ := net.SplitHostPort(mb.Addr)
	return &memberlist.Node{Name: mb.Name, Addr: net.ParseIP(host), Port: mb.port}
}

// packBroadcasts returns the queued control messages, then packs as many
// queued entries as fit into one more message (for GetBroadcasts).
func (m *Mesh) packBroadcasts(overhead, limit int) [][]byte {
	const hdr = headerLen + 2 // header and a two-byte count (< 16384 entries)
	out := m.control.GetBroadcasts(overhead, limit)
	for _, b := range out {
		limit -= overhead + len(b)
	}
	avail := limit - overhead - hdr
	if avail <= 0 {
		return out
	}
	items := m.queue.GetBroadcasts(0, avail)
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

// enqueue hands a task to the workers without blocking; when they are
// behind, the task is dropped and anti-entropy makes up for it.
func (m *Mesh) enqueue(t task) {
	select {
	case m.tasks <- t:
	default:
		m.bad.warn("tasks", "mesh TCP work queue full, dropping a send", "peer", t.to)
	}
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
	node := m.nodeLocked(t.to)
	var delta []block
	if t.delta {
		var differs bool
		delta, differs = m.st.delta(t.theirs, now, true)
		m.sync.compared(differs, now)
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
