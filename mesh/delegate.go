package mesh

// This file owns what memberlist calls: the delegates. Incoming messages
// (NotifyMsg, MergeRemoteState) are decoded, one decoder per type, and
// merged into the state; membership events (NotifyJoin, NotifyUpdate,
// NotifyLeave) update the members; LocalState and GetBroadcasts hand
// memberlist what to send.
//
// Contract (memberlist's delegate.go): the delegates run on memberlist's
// goroutines, the event delegate with memberlist's node lock held, and
// must not block or call memberlist. They copy what they keep out of the
// buffers they get (state.store does), hold Mesh.mu briefly, and hand
// anything slow (TCP sends) to the workers (broadcast.go).
// Lock order: memberlist's node lock → Mesh.mu → the queues' and feeds'.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// applyBatch bounds how many received entries are merged per lock hold.
const applyBatch = 256

// delegate implements memberlist.Delegate and memberlist.EventDelegate. It
// is a separate type so those methods are not part of Mesh's API.
type delegate struct{ m *Mesh }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

// NodeMeta returns our metadata: protocol, version and down grace
// (encodeMeta).
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

// GetBroadcasts returns what is queued for gossip, within limit bytes
// (see packBroadcasts).
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.m.packBroadcasts(overhead, limit)
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
	meta := decodeMeta(n.Meta)
	mb := Member{Name: n.Name, Addr: n.Address(), Version: meta.Version, Protocol: meta.Protocol, DownGrace: meta.DownGrace}
	if !meta.HasGrace {
		mb.DownGrace = m.cfg.DownGrace
	}
	if meta.Started > 0 {
		mb.Started = time.UnixMilli(meta.Started)
	}
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

// NotifyLeave records a member that left, or was found dead: then it is
// down while its host is probed (liveness.go), its entries still shown,
// unless it is dead at once (state.memberFailed).
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m := d.m
	now := time.Now()
	m.mu.Lock()
	down := false
	if n.State == memberlist.StateLeft {
		m.st.memberDown(n.Name, StateLeft, now)
	} else {
		down = m.st.memberFailed(n.Name, now)
	}
	st := ""
	if mb := m.st.members[n.Name]; mb != nil {
		st = mb.State
	}
	m.numAlive.Store(int32(m.st.alive))
	m.peersDirty = true
	m.mu.Unlock()
	switch {
	case n.Name == m.self:
	case down:
		m.log.Info("mesh member not answering; probing its host, its entries stay meanwhile", "peer", n.Name, "addr", n.Address())
		m.wakeProber()
	default:
		m.log.Info("mesh member "+st, "peer", n.Name, "addr", n.Address())
	}
	m.notify()
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
		if err := m.checkSender(body); err != nil {
			return err
		}
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
		if err := m.checkSender(body); err != nil {
			return err
		}
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

// checkSender reads only the sender of a digest or answer body, before
// the rest is decoded or anything is queued: one that is not an alive
// member other than this one is refused. The name is what the sender
// says (every member holds the gossip key), so this keeps strangers'
// digests out, not a member posing as another.
func (m *Mesh) checkSender(body []byte) error {
	d := decoder{b: body}
	sender := d.bytes(maxOwnerLen)
	if d.err != nil {
		return d.err
	}
	m.mu.Lock()
	ok := string(sender) != m.self && m.st.memberAlive(viewString(sender))
	m.mu.Unlock()
	if !ok {
		m.stats.refused.Add(1)
		return fmt.Errorf("digest from %q, not an alive member", sender)
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
	now := time.Now()
	m.mu.Lock()
	if !d.Reply {
		m.sync.answered(d.Sender)
	}
	if d.Answer {
		_, differs := m.st.delta(d.Owners, now, false)
		m.sync.compared(differs, now)
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
	news := m.st.memberLeaving(node, time.Now())
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
			if res.refused != refusedNone {
				m.stats.refused.Add(1)
				m.bad.warn("refused "+res.refused.String(), "mesh refused an entry: "+res.refused.String(),
					"peer", w.Owner, "table", w.Table, "key", w.Key, "clock", w.Clock)
				continue
			}
			if res.rec == nil {
				continue
			}
			applied++
			m.sync.changed(1)
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
