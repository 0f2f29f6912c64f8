// Package probe proves the data path between this host and every other
// one, through the real VXLAN path and independently of any user network:
// a blocked UDP port or an MTU black hole shows here while the mesh looks
// fine.
//
// Each host has a probe port (dataplane.ProbePort): a VXLAN device of a
// reserved VNI on the networks' UDP port, in a namespace of the plugin's,
// whose address is the host's VTEP. A host announces its port in the
// mesh's "probe" table once it is open; every host probes the hosts that
// announce one (so hosts of older builds, which have none, are never
// taken for unreachable), and answers every probe it receives.
//
// Each peer gets a small message every Interval (spread so that at most
// MaxRate leave per second: with many hosts a peer's turn comes less
// often). Messages are never answered: each tells the peer which of its
// messages arrived last, and how long ago, so one message each way per
// turn gives both hosts reachability and RTT (see wire.go). A message not
// told back within its turn and Timeout is unanswered; Lost of them in a
// row make the peer unreachable (about 5 s with the defaults). Size
// probes, messages of the size the networks use (the underlay path's MTU
// less VXLAN's overhead: the target), check that the path carries it: one
// every SizeInterval while it does; when one is lost while the peer tells
// back later messages, a search by halves, one size probe per turn, finds
// the largest size that passes. Every message is sent with DF and never
// fragmented, so a size the path cannot carry is lost rather than cut.
//
// Cost, per host, with P other hosts and the defaults: P small messages
// out and P in every second (about 100 bytes each), plus one target-size
// message per peer every 30 s and, only while a path carries less than the
// target, about a dozen more; at most 50 messages a second leave a host
// (above 50 peers each gets one every P/50 s, and is found unreachable
// that much later).
package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/underlay"
)

// Table is the mesh table where each host announces its probe port.
const Table = "probe"

// Port is this host's probe port: dataplane.ProbePort through KernelPort,
// or a fake in tests.
type Port interface {
	// SetPeers gives the port static entries towards exactly these VTEPs.
	SetPeers(vteps []netip.Addr) error
	// WriteTo sends one probe message to vtep's probe port.
	WriteTo(b []byte, vtep netip.Addr) error
	// ReadFrom waits for the next message and says which VTEP sent it; it
	// fails once the port is closed.
	ReadFrom(b []byte) (int, netip.Addr, error)
	// Close releases the port; ReadFrom returns.
	Close()
}

// Store is the mesh as the prober uses it; *mesh.Mesh implements it.
type Store interface {
	LocalNode() string
	Put(table, key string, value []byte)
	Watch(table string, members bool) *feed.Sub[mesh.Event]
}

// Underlay tells this host's VTEP and the path MTU; *underlay.Underlay
// implements it.
type Underlay interface {
	State() underlay.State
	Changed() <-chan struct{}
}

// Config configures a Prober.
type Config struct {
	// Open opens this host's probe port at its VTEP. Required.
	Open func(vtep netip.Addr) (Port, error)
	// Store is the mesh. Required.
	Store Store
	// Underlay gives the VTEP, and the path MTU the target size follows.
	// Required.
	Underlay Underlay
	// Overhead is what the underlay path's MTU is reduced by to make the
	// target size (VXLAN's, dataplane.Overhead).
	Overhead int
	// Interval is the time between two messages to one peer (default
	// 1 s).
	Interval time.Duration
	// MaxRate bounds the messages a host sends per second (default 50).
	MaxRate int
	// SizeInterval is how often a path found to carry the target is
	// checked again, and a smaller one searched again (default 30 s).
	SizeInterval time.Duration
	// Timeout is how long a message and the news of it may take on the
	// way, on top of the peer's wait for its own turn (default 0.9 s).
	Timeout time.Duration
	// Lost messages in a row, not told back, make a peer unreachable
	// (default 3).
	Lost int
	// RetryInterval is how often a port that failed to open is tried
	// again (default 2 s).
	RetryInterval time.Duration
	// Logger receives the prober's log; nil discards it.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.MaxRate <= 0 {
		c.MaxRate = 50
	}
	if c.SizeInterval <= 0 {
		c.SizeInterval = 30 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = c.Interval * 9 / 10
	}
	if c.Lost <= 0 {
		c.Lost = 3
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// announcement is a host's entry in Table. Its JSON names are wire format.
type announcement struct {
	VTEP string `json:"vtep"`
}

// Peer states, as Status reports them.
const (
	// StateWaiting: nothing told back yet, and fewer than Lost messages
	// judged.
	StateWaiting = "waiting"
	// StateOK: the peer tells back this host's messages.
	StateOK = "ok"
	// StateUnreachable: Lost messages in a row were not told back.
	StateUnreachable = "unreachable"
)

// PeerStatus is what the probe knows of one peer.
type PeerStatus struct {
	// Name is the peer's mesh name; VTEP its underlay address.
	Name string
	VTEP netip.Addr
	// State is StateWaiting, StateOK or StateUnreachable.
	State string
	// Since is, when unreachable, when the first message went out that is
	// not told back; when waiting, when the peer appeared; else zero.
	Since time.Time
	// RTT is the round-trip time, smoothed; 0 before any answer.
	RTT time.Duration
	// Largest is the largest packet the path carries, up to Target, an
	// IP packet's length in bytes, as the last size search found; 0
	// before the first search ends.
	Largest int
	// Target is the size the path should carry (the networks' MTU).
	Target int
	// Sent and Answered count the messages sent to the peer, small and
	// sized, and those it told back.
	Sent, Answered uint64
}

// peer is the prober's state of one peer.
type peer struct {
	name  string
	vtep  netip.Addr
	added time.Time

	// What this host got from the peer last: its seq, when, and its last
	// size probe; told back in the next message to it.
	rxSeq          uint32
	rxAt           time.Time
	rxSizedSeq     uint32
	rxSizedSize    int
	sent, answered uint64
	lastAnswer     time.Time
	lastEcho       uint32
	// unanswered counts the messages whose turn to be told back passed
	// without it since the last one told back; since is when the first of
	// them was sent.
	unanswered int
	since      time.Time
	rtt        time.Duration

	// largest is the result of the last size search, for target; 0
	// before the first. The search in progress (searching) knows lo, the
	// largest size answered, and hi, the smallest lost twice (0: none);
	// lostOnce is a size lost once, sent again before it counts.
	largest, target  int
	searching        bool
	lo, hi, lostOnce int
	searchedAt       time.Time
}

// pending is one message sent, until the peer tells it back or its time
// to be told back passes.
type pending struct {
	peer  *peer
	seq   uint32
	size  int
	sent  time.Time
	sized bool
}

// Prober runs this host's probe. Its methods are safe for concurrent
// use.
type Prober struct {
	cfg Config
	log *slog.Logger

	// mu guards the fields below. Lock order: mu, then the port's own.
	mu      sync.Mutex
	port    Port
	openErr string
	peers   map[string]*peer // by mesh name
	pending map[uint32]pending
	seq     uint32
	next    int // round robin position among the peers, by name
	target  int
	smallSz int
	buf     []byte
}

// New returns a prober; Run probes.
func New(cfg Config) *Prober {
	cfg = cfg.withDefaults()
	return &Prober{
		cfg:     cfg,
		log:     cfg.Logger,
		peers:   map[string]*peer{},
		pending: map[uint32]pending{},
		smallSz: 100,
		buf:     make([]byte, maxPayload),
	}
}

// Run opens the probe port once this host's VTEP is known, announces it,
// and probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	changed := p.cfg.Underlay.Changed()
	watch := p.cfg.Store.Watch(Table, false)
	defer watch.Close()
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer p.closePort()
	var retry <-chan time.Time
	tryOpen := func() {
		if p.hasPort() {
			return
		}
		st := p.cfg.Underlay.State()
		if !st.Addr.IsValid() {
			return
		}
		port, err := p.cfg.Open(st.Addr)
		if err != nil {
			p.setOpenErr(err)
			retry = time.After(p.cfg.RetryInterval)
			return
		}
		retry = nil
		b, _ := json.Marshal(announcement{VTEP: st.Addr.String()})
		p.mu.Lock()
		p.port, p.openErr = port, ""
		err = port.SetPeers(p.vtepsLocked())
		p.mu.Unlock()
		if err != nil {
			p.log.Warn("probe entries", "err", err)
		}
		p.cfg.Store.Put(Table, p.cfg.Store.LocalNode(), b)
		p.log.Info("data-path probe running", "vtep", st.Addr.String(), "vni_port", "reserved VNI on the VXLAN port")
		wg.Add(1)
		go func() { defer wg.Done(); p.read(port) }()
	}
	tryOpen()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			tryOpen()
			p.setTarget()
		case <-retry:
			tryOpen()
		case <-watch.Ready():
			p.apply(watch.Take())
		case now := <-tick.C:
			p.setTarget()
			p.round(now)
		}
	}
}

func (p *Prober) hasPort() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.port != nil
}

func (p *Prober) setOpenErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.openErr != err.Error() {
		p.log.Warn("data-path probe not running yet; retrying", "err", err)
	}
	p.openErr = err.Error()
}

func (p *Prober) closePort() {
	p.mu.Lock()
	port := p.port
	p.port = nil
	p.mu.Unlock()
	if port != nil {
		port.Close()
	}
}

// setTarget follows the underlay's path MTU.
func (p *Prober) setTarget() {
	st := p.cfg.Underlay.State()
	t := st.MTU - p.cfg.Overhead
	if t < minSize {
		return
	}
	p.mu.Lock()
	p.target = t
	p.mu.Unlock()
}

// apply folds the announcements' changes into the peers.
func (p *Prober) apply(evs []mesh.Event) {
	self := p.cfg.Store.LocalNode()
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	for _, ev := range evs {
		e := ev.Entry
		if e.Table != Table || e.Owner == self {
			continue
		}
		var a announcement
		vtep := netip.Addr{}
		if err := json.Unmarshal(e.Value, &a); err == nil {
			vtep, _ = netip.ParseAddr(a.VTEP)
		}
		pr, had := p.peers[e.Owner]
		switch {
		case ev.Kind != mesh.EntryPut:
			if had {
				delete(p.peers, e.Owner)
				changed = true
			}
		case !vtep.Is4():
			p.log.Warn("ignoring a malformed probe announcement", "peer", e.Owner)
		case !had || pr.vtep != vtep:
			// New, or moved: a peer anew.
			p.peers[e.Owner] = &peer{name: e.Owner, vtep: vtep, added: time.Now()}
			changed = true
		}
	}
	if changed && p.port != nil {
		if err := p.port.SetPeers(p.vtepsLocked()); err != nil {
			p.log.Warn("probe entries", "err", err)
		}
	}
}

func (p *Prober) vtepsLocked() []netip.Addr {
	out := make([]netip.Addr, 0, len(p.peers))
	for _, pr := range p.peers {
		out = append(out, pr.vtep)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// round expires the messages not told back in time, then sends this
// turn's: to each peer whose turn it is, its message, and a size probe
// when one is due.
func (p *Prober) round(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	if p.port == nil || len(p.peers) == 0 {
		return
	}
	all := make([]*peer, 0, len(p.peers))
	for _, pr := range p.peers {
		all = append(all, pr)
	}
	slices.SortFunc(all, func(a, b *peer) int { return strings.Compare(a.name, b.name) })
	n := p.perTurn(len(all))
	for i := range n {
		pr := all[(p.next+i)%len(all)]
		p.sendLocked(pr, p.smallSz, false, now)
		if size := p.nextSizeLocked(pr, now); size > 0 {
			p.sendLocked(pr, size, true, now)
		}
	}
	p.next = (p.next + n) % len(all)
}

// perTurn is how many of n peers get a message each turn.
func (p *Prober) perTurn(n int) int {
	return min(n, max(1, int(float64(p.cfg.MaxRate)*p.cfg.Interval.Seconds())))
}

// period is how often one peer gets a message, and so the longest a
// peer waits to tell back what it got (all hosts probe as many peers).
func (p *Prober) periodLocked() time.Duration {
	n := len(p.peers)
	if n == 0 {
		return p.cfg.Interval
	}
	k := p.perTurn(n)
	return p.cfg.Interval * time.Duration((n+k-1)/k)
}

// nextSizeLocked returns the size of the sized probe to send pr this
// turn, or 0.
func (p *Prober) nextSizeLocked(pr *peer, now time.Time) int {
	if p.target < minSize {
		return 0
	}
	if pr.target != p.target {
		// A new target (the path MTU changed): measure from scratch.
		pr.target, pr.largest, pr.searching = p.target, 0, true
		pr.lo, pr.hi, pr.lostOnce = 0, 0, 0
	}
	if !pr.searching {
		if now.Sub(pr.searchedAt) < p.cfg.SizeInterval {
			return 0
		}
		// Check again: the target first, as if nothing were known.
		pr.searching, pr.lo, pr.hi, pr.lostOnce = true, 0, 0, 0
	}
	for _, q := range p.pending {
		if q.peer == pr && q.sized {
			return 0 // one size probe at a time
		}
	}
	if pr.lo >= pr.target || (pr.hi > 0 && pr.hi-pr.lo <= 1) {
		pr.largest, pr.searching, pr.searchedAt = min(pr.lo, pr.target), false, now
		return 0
	}
	if pr.lostOnce > 0 {
		return pr.lostOnce // once more, before it counts
	}
	if pr.hi == 0 {
		return pr.target
	}
	return max(minSize, (max(pr.lo, minSize)+pr.hi)/2)
}

func (p *Prober) sendLocked(pr *peer, size int, sized bool, now time.Time) {
	p.seq++
	if p.seq == 0 {
		p.seq++ // 0 means none
	}
	m := msg{sized: sized, size: size, seq: p.seq}
	if pr.rxSeq != 0 && now.Sub(pr.rxAt) < p.cfg.Timeout+p.periodLocked() {
		m.echo, m.held = pr.rxSeq, now.Sub(pr.rxAt)
	}
	if pr.rxSizedSeq != 0 {
		m.sizedSeq, m.sizedSize = pr.rxSizedSeq, pr.rxSizedSize
	}
	if err := p.port.WriteTo(encode(p.buf, m), pr.vtep); err != nil {
		// Counted as sent: an error here (no route, EMSGSIZE) is the
		// path's fault as much as a loss on the way.
		p.log.Debug("probe send", "peer", pr.name, "size", size, "err", err)
	}
	pr.sent++
	p.pending[p.seq] = pending{peer: pr, seq: p.seq, size: size, sent: now, sized: sized}
}

// expireLocked counts the messages not told back in time: the peer tells
// back within its period, the message's way there and the answer's way
// back within Timeout.
func (p *Prober) expireLocked(now time.Time) {
	late := p.cfg.Timeout + p.periodLocked()
	for seq, q := range p.pending {
		if now.Sub(q.sent) < late {
			continue
		}
		delete(p.pending, seq)
		pr := q.peer
		if p.peers[pr.name] != pr {
			continue // gone meanwhile
		}
		if !q.sized {
			if pr.unanswered == 0 {
				pr.since = q.sent
			}
			pr.unanswered++
			continue
		}
		// A size probe lost while the peer told back a message sent after
		// it: the path does not carry that size. Otherwise nothing is
		// learnt.
		if pr.searching && pr.lastEcho > q.seq && q.size > pr.lo {
			if pr.lostOnce == q.size {
				pr.lostOnce = 0
				if pr.hi == 0 || q.size < pr.hi {
					pr.hi = q.size
				}
			} else {
				pr.lostOnce = q.size
			}
		}
	}
}

// read takes the peers' messages until the port closes.
func (p *Prober) read(port Port) {
	buf := make([]byte, maxPayload)
	for {
		n, from, err := port.ReadFrom(buf)
		if err != nil {
			if !p.portIs(port) {
				return // closed
			}
			// Transient (an ICMP error queued on the socket): go on, but
			// never spin on one that persists.
			p.log.Debug("probe read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if m, err := decode(buf[:n]); err == nil {
			p.received(m, from, time.Now())
		}
	}
}

// portIs reports whether port is still the open one (a read error on it
// is then transient).
func (p *Prober) portIs(port Port) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.port == port
}

// received takes one message from a peer: what it says of this host's
// messages, and what to tell back.
func (p *Prober) received(m msg, from netip.Addr, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pr *peer
	for _, c := range p.peers {
		if c.vtep == from {
			pr = c
			break
		}
	}
	if pr == nil {
		return // not (yet) a peer
	}
	pr.rxSeq, pr.rxAt = m.seq, now
	if m.sized {
		pr.rxSizedSeq, pr.rxSizedSize = m.seq, m.size
	}
	if q, ok := p.pending[m.echo]; ok && q.peer == pr {
		// Told back: this message arrived; the earlier small ones are
		// judged with it (arrived or lost, the path works now).
		pr.answered++
		pr.lastAnswer, pr.lastEcho = now, m.echo
		if rtt := now.Sub(q.sent) - m.held; rtt > 0 {
			if pr.rtt == 0 {
				pr.rtt = rtt
			} else {
				pr.rtt = (7*pr.rtt + rtt) / 8
			}
		}
		pr.unanswered, pr.since = 0, time.Time{}
		for seq, o := range p.pending {
			if o.peer == pr && (seq == m.echo || !o.sized && seq < m.echo) {
				delete(p.pending, seq)
			}
		}
		p.sizeAnswered(pr, q.size)
	}
	if q, ok := p.pending[m.sizedSeq]; ok && q.peer == pr && q.sized && q.size == m.sizedSize {
		delete(p.pending, m.sizedSeq)
		pr.answered++
		p.sizeAnswered(pr, q.size)
	}
}

// sizeAnswered records that a message of size reached pr.
func (p *Prober) sizeAnswered(pr *peer, size int) {
	if !pr.searching {
		return
	}
	pr.lo = max(pr.lo, size)
	if pr.hi > 0 && size >= pr.hi {
		pr.hi = 0 // it passes now
	}
	if pr.lostOnce > 0 && size >= pr.lostOnce {
		pr.lostOnce = 0
	}
}

// Peers returns what the probe knows of every peer, sorted by name.
func (p *Prober) Peers() []PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PeerStatus, 0, len(p.peers))
	for _, pr := range p.peers {
		st := PeerStatus{
			Name: pr.name, VTEP: pr.vtep, RTT: pr.rtt, Target: p.target,
			Sent: pr.sent, Answered: pr.answered, Largest: pr.largest,
		}
		switch {
		case pr.unanswered >= p.cfg.Lost:
			st.State, st.Since = StateUnreachable, pr.since
		case pr.lastAnswer.IsZero():
			st.State, st.Since = StateWaiting, pr.added
		default:
			st.State = StateOK
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Running says whether the probe port is open, and if not, why.
func (p *Prober) Running() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.port != nil {
		return true, ""
	}
	if p.openErr != "" {
		return false, p.openErr
	}
	return false, "this host's underlay address is not known yet"
}

// String describes a peer's state for logs.
func (s PeerStatus) String() string {
	return fmt.Sprintf("%s (%s) %s", s.Name, s.VTEP, s.State)
}
