package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/mesh/meshtest"
	"github.com/weftnet/weft/underlay"
)

// These tests run real probers over a real mesh (meshtest) and real UDP
// sockets on loopback addresses (127.0.0.<i>, one per host, standing for
// the VTEPs), with a path filter on top: what a blocked port or a small
// MTU on the way would drop. The kernel's side, the probe segment itself,
// is tested in kernel_linux_test.go.

// path is the filter between the loopback "hosts": it drops what it is
// told to.
type path struct {
	mu      sync.Mutex
	blocked map[netip.Addr]bool // everything to this VTEP is dropped
	mtu     map[netip.Addr]int  // larger packets to this VTEP are dropped
}

func (f *path) passes(to netip.Addr, size int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blocked[to] {
		return false
	}
	if m := f.mtu[to]; m > 0 && size > m {
		return false
	}
	return true
}

func (f *path) block(to netip.Addr, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked[to] = on
}

func (f *path) setMTU(to netip.Addr, mtu int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mtu[to] = mtu
}

// loopPort is a Port on a loopback address.
type loopPort struct {
	conn *net.UDPConn
	port int
	path *path

	mu    sync.Mutex
	peers []netip.Addr
}

func (l *loopPort) SetPeers(v []netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.peers = v
	return nil
}

func (l *loopPort) WriteTo(b []byte, vtep netip.Addr) error {
	if !l.path.passes(vtep, len(b)+ipUDPLen) {
		return nil
	}
	_, err := l.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(vtep, uint16(l.port)))
	return err
}

func (l *loopPort) ReadFrom(b []byte) (int, netip.Addr, error) {
	n, from, err := l.conn.ReadFromUDPAddrPort(b)
	return n, from.Addr(), err
}

func (l *loopPort) Close() { l.conn.Close() }

// fixedUnderlay is an underlay whose address and MTU are set.
type fixedUnderlay struct{ st underlay.State }

func (u fixedUnderlay) State() underlay.State    { return u.st }
func (u fixedUnderlay) Changed() <-chan struct{} { return make(chan struct{}) }

// lab is n probers, one per mesh member, on 127.0.0.<i+1>.
type lab struct {
	path    *path
	vteps   []netip.Addr
	probers []*Prober
}

func newLab(t *testing.T, n int) *lab {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("h%d", i+1)
	}
	c := meshtest.New(t, names, nil)
	// One UDP port free on every loopback address used.
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()
	l := &lab{path: &path{blocked: map[netip.Addr]bool{}, mtu: map[netip.Addr]int{}}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range n {
		vtep := netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)})
		l.vteps = append(l.vteps, vtep)
		p := New(Config{
			Open: func(v netip.Addr) (Port, error) {
				c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(v, uint16(port))))
				if err != nil {
					return nil, err
				}
				return &loopPort{conn: c, port: port, path: l.path}, nil
			},
			Store:        c.Members[i],
			Underlay:     fixedUnderlay{underlay.State{Addr: vtep, MTU: 1500}},
			Overhead:     50,
			Interval:     40 * time.Millisecond,
			SizeInterval: 500 * time.Millisecond,
		})
		l.probers = append(l.probers, p)
		wg.Add(1)
		go func() { defer wg.Done(); p.Run(ctx) }()
	}
	return l
}

// wait waits until every peer of prober i satisfies ok.
func (l *lab) wait(t *testing.T, i int, what string, within time.Duration, ok func(PeerStatus) bool) []PeerStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ps := l.probers[i].Peers()
		good := len(ps) == len(l.vteps)-1
		for _, s := range ps {
			good = good && ok(s)
		}
		if good {
			return ps
		}
		if time.Now().After(deadline) {
			t.Fatalf("h%d: peers never %s within %s: %+v", i+1, what, within, ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProbeFindsBlockedPathAndSmallMTU(t *testing.T) {
	l := newLab(t, 3)
	for i := range l.probers {
		ps := l.wait(t, i, "answering with the whole target", 5*time.Second, func(s PeerStatus) bool {
			return s.State == StateOK && s.Largest == 1450 && s.Target == 1450 && s.RTT > 0
		})
		if ps[0].Name == fmt.Sprintf("h%d", i+1) {
			t.Fatalf("h%d probes itself: %+v", i+1, ps)
		}
	}

	// Everything to h2 dropped (a firewall on h2): h1 and h3 find h2
	// unreachable, h2 finds the others so (their answers are dropped), and
	// h1 and h3 still reach each other.
	l.path.block(l.vteps[1], true)
	start := time.Now()
	for _, i := range []int{0, 2} {
		l.wait(t, i, "h2 unreachable, the other fine", 2*time.Second, func(s PeerStatus) bool {
			if s.Name == "h2" {
				return s.State == StateUnreachable && !s.Since.IsZero() && !s.Since.Before(start.Add(-100*time.Millisecond))
			}
			return s.State == StateOK
		})
	}
	l.wait(t, 1, "all unreachable", 2*time.Second, func(s PeerStatus) bool { return s.State == StateUnreachable })
	l.path.block(l.vteps[1], false)
	for i := range l.probers {
		l.wait(t, i, "answering again", 2*time.Second, func(s PeerStatus) bool { return s.State == StateOK && s.Since.IsZero() })
	}

	// A path to h3 that carries 1400 bytes: h1 and h2 find the size
	// exactly, while h3 still reaches them with the whole target (each
	// host measures its own way out).
	l.path.setMTU(l.vteps[2], 1400)
	for _, i := range []int{0, 1} {
		l.wait(t, i, "measuring 1400 to h3", 10*time.Second, func(s PeerStatus) bool {
			if s.Name == "h3" {
				return s.State == StateOK && s.Largest == 1400
			}
			return s.Largest == 1450
		})
	}
	l.wait(t, 2, "reaching the others with 1450", time.Second, func(s PeerStatus) bool { return s.Largest == 1450 })
	// Mended: the next check finds the whole target again.
	l.path.setMTU(l.vteps[2], 0)
	l.wait(t, 0, "measuring 1450 to h3 again", 5*time.Second, func(s PeerStatus) bool { return s.Largest == 1450 })
}

func TestProbeRateBound(t *testing.T) {
	// 120 peers at 50 probes a second and 1 s turns: 50 peers per turn.
	p := New(Config{Interval: time.Second, MaxRate: 50, Open: func(netip.Addr) (Port, error) { return nil, errors.New("unused") }})
	sent := map[netip.Addr]int{}
	rec := &recPort{sent: sent}
	p.port = rec
	for i := range 120 {
		v := netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(1 + i%250)})
		name := fmt.Sprintf("p%03d", i)
		p.peers[name] = &peer{name: name, vtep: v}
	}
	now := time.Now()
	for r := range 12 {
		before := rec.n
		p.round(now.Add(time.Duration(r) * time.Second))
		if rec.n-before != 50 {
			t.Fatalf("turn %d sent %d probes, want 50", r, rec.n-before)
		}
	}
	for v, n := range sent {
		// 12 turns of 50 out of 120: each peer 5 times.
		if n < 4 || n > 6 {
			t.Fatalf("peer %s got %d small probes in 12 turns, want 5", v, n)
		}
	}
	if len(sent) != 120 {
		t.Fatalf("%d of 120 peers probed", len(sent))
	}
}

// A host that comes back under a new name at the same address (its state
// directory lost) is probed under its new name, whichever of the two
// announcements goes or comes first.
func TestNewIdentitySameAddress(t *testing.T) {
	rec := &recPort{sent: map[netip.Addr]int{}}
	p := New(Config{Store: selfStore("h1")})
	p.port = rec
	v := netip.MustParseAddr("198.18.0.2")
	ann := []byte(`{"vtep":"198.18.0.2"}`)
	p.apply([]mesh.Event{
		{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Owner: "h2-old", Value: ann}},
		{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Owner: "h2-new", Value: ann}},
		{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Owner: "h1", Value: []byte(`{"vtep":"198.18.0.1"}`)}},
		{Kind: mesh.EntryGone, Entry: mesh.Entry{Table: Table, Owner: "h2-old", Value: ann}},
		{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Owner: "bad", Value: []byte(`{"vtep":"nope"}`)}},
	})
	ps := p.Peers()
	if len(ps) != 1 || ps[0].Name != "h2-new" || ps[0].VTEP != v {
		t.Fatalf("peers %v, want h2-new at %s only", ps, v)
	}
	if !slices.Equal(rec.peers, []netip.Addr{v}) {
		t.Fatalf("entries for %v", rec.peers)
	}
	p.round(time.Now())
	if rec.sent[v] != 1 {
		t.Fatalf("%d probes to %s", rec.sent[v], v)
	}
}

// selfStore is a Store that only knows its own name.
type selfStore string

func (s selfStore) LocalNode() string                      { return string(s) }
func (selfStore) Put(string, string, []byte)               {}
func (selfStore) Watch(string, bool) *feed.Sub[mesh.Event] { return nil }

// recPort records what is sent.
type recPort struct {
	sent  map[netip.Addr]int
	n     int
	peers []netip.Addr
}

func (r *recPort) SetPeers(v []netip.Addr) error { r.peers = v; return nil }
func (r *recPort) WriteTo(b []byte, v netip.Addr) error {
	r.n++
	r.sent[v]++
	return nil
}
func (r *recPort) ReadFrom([]byte) (int, netip.Addr, error) { select {} }
func (r *recPort) Close()                                   {}

func TestWire(t *testing.T) {
	buf := make([]byte, maxPayload)
	for _, size := range []int{minSize, 100, 1450, 9000} {
		in := msg{sized: size > 100, size: size, seq: 7, echo: 5, held: 250 * time.Millisecond, sizedSeq: 3, sizedSize: 1400}
		b := encode(buf, in)
		if len(b)+ipUDPLen != size {
			t.Fatalf("message of size %d is a %d-byte payload", size, len(b))
		}
		m, err := decode(b)
		if err != nil || m != in {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", in, m, err)
		}
		// Cut on the way: not a valid message.
		if _, err := decode(b[:len(b)-1]); err == nil {
			t.Fatalf("a message of size %d cut by a byte decoded", size)
		}
	}
	for _, bad := range [][]byte{nil, []byte("wfp1"), make([]byte, headerLen)} {
		if _, err := decode(bad); err == nil {
			t.Fatalf("decode(%q) accepted", bad)
		}
	}
}
