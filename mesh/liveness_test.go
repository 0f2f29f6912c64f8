package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// downState returns a state for "me" with alive members at addresses
// 10.0.0.<i+2>:7950, each with a down grace of a minute, and a watch on
// table "t" with members.
func downState(members ...string) (*state, func() []string) {
	s := newTestState("me")
	s.watch = &watchers{}
	sub := s.watch.feed(watchKey{"t", true}).Subscribe()
	for i, name := range members {
		s.memberUp(Member{Name: name, Addr: fmt.Sprintf("10.0.0.%d:7950", i+2), DownGrace: time.Minute}, 7950, t0)
	}
	sub.Take()
	events := func() []string {
		var out []string
		for _, ev := range sub.Take() {
			if ev.Kind == MemberChanged {
				out = append(out, ev.Member.Name+":"+ev.Member.State)
			} else {
				out = append(out, ev.Kind.String()+":"+ev.Entry.Key)
			}
		}
		return out
	}
	return s, events
}

func expectEvents(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: events %q, want %q", what, got, want)
	}
}

// A member found dead goes down: its entries stay shown while its host
// answers, it is probed at once and then every interval, and a host that
// stops answering makes it dead, its entries withdrawn.
func TestDownWhileHostAnswers(t *testing.T) {
	s, events := downState("a", "b")
	s.apply(we("t", "k1", "a", 1, false, "v"), t0)
	events()

	if !s.memberFailed("a", t0) {
		t.Fatal("a member found dead did not go down")
	}
	expectEvents(t, "going down", events(), "a:down")
	if s.members["a"].State != StateDown || s.alive != 2 {
		t.Fatalf("a is %s, %d alive; want down, 2 alive (me, b)", s.members["a"].State, s.alive)
	}
	if got := len(s.live("t")); got != 1 {
		t.Fatalf("%d entries shown while a is down, want 1", got)
	}
	// Its entries are taken in (another member may send them), but not
	// compared by anti-entropy: they do not change while it is down.
	if res := s.apply(we("t", "k2", "a", 2, false, "v"), t0); !res.visible {
		t.Fatal("an entry of a down member was refused")
	}
	for _, d := range s.digest() {
		if d.Owner == "a" {
			t.Fatal("a down member's entries are in the digest")
		}
	}
	events()

	// Probed at once, then once per interval, one probe at a time.
	p := s.probesDue(t0, time.Second, maxProbes)
	if len(p) != 1 || p[0].name != "a" || p[0].addr != "10.0.0.2:7950" {
		t.Fatalf("probes due %+v, want a's host", p)
	}
	if again := s.probesDue(t0.Add(2*time.Second), time.Second, maxProbes); len(again) != 0 {
		t.Fatalf("a second probe while one runs: %+v", again)
	}
	if s.hostProbed(p[0], true, t0.Add(10*time.Millisecond)) {
		t.Fatal("a member whose host answered died")
	}
	if due := s.probesDue(t0.Add(500*time.Millisecond), time.Second, maxProbes); len(due) != 0 {
		t.Fatalf("probed again before the interval: %+v", due)
	}
	p = s.probesDue(t0.Add(time.Second), time.Second, maxProbes)
	if len(p) != 1 {
		t.Fatalf("not probed again after the interval: %+v", p)
	}
	expectEvents(t, "answers", events())

	// The host stops answering: dead, its entries withdrawn.
	if !s.hostProbed(p[0], false, t0.Add(2*time.Second)) {
		t.Fatal("a member whose host did not answer is not dead")
	}
	expectEvents(t, "host gone", events(), "a:dead", "gone:k1", "gone:k2")
	if len(s.live("t")) != 0 || s.alive != 2 {
		t.Fatalf("after death: %s, %d alive", dump(s), s.alive)
	}
	if due := s.probesDue(t0.Add(time.Minute), time.Second, maxProbes); len(due) != 0 {
		t.Fatalf("a dead member probed: %+v", due)
	}
}

// A down member that comes back is alive again and nothing about its
// entries changes; an answer to a probe from before does nothing.
func TestDownMemberReturns(t *testing.T) {
	s, events := downState("a")
	s.apply(we("t", "k1", "a", 1, false, "v"), t0)
	events()
	s.memberFailed("a", t0)
	p := s.probesDue(t0, time.Second, maxProbes)
	if !s.memberUp(Member{Name: "a", Addr: "10.0.0.2:7950", DownGrace: time.Minute}, 7950, t0.Add(3*time.Second)) {
		t.Fatal("return from down not reported")
	}
	expectEvents(t, "return", events(), "a:down", "a:alive")
	if !s.members["a"].returned || s.alive != 2 {
		t.Fatalf("returned %v, %d alive", s.members["a"].returned, s.alive)
	}
	// The probe started while it was down answers late: ignored.
	if s.hostProbed(p[0], false, t0.Add(4*time.Second)) || s.members["a"].State != StateAlive {
		t.Fatal("a late probe answer killed a member that is back")
	}
	// Down again: a probe of the first spell still does nothing.
	s.memberFailed("a", t0.Add(5*time.Second))
	if s.hostProbed(p[0], false, t0.Add(5*time.Second)) {
		t.Fatal("a probe of an earlier spell down killed the member")
	}
	expectEvents(t, "down again", events(), "a:down")
}

// Past the grace, a down member is dead even though its host answers.
func TestDownGraceEnds(t *testing.T) {
	s, events := downState("a", "b")
	s.apply(we("t", "k1", "a", 1, false, "v"), t0)
	s.memberFailed("a", t0)
	s.memberFailed("b", t0.Add(30*time.Second))
	events()
	if got := s.expireDown(t0.Add(time.Minute - time.Millisecond)); len(got) != 0 {
		t.Fatalf("expired before the grace: %v", got)
	}
	if got := s.expireDown(t0.Add(time.Minute)); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("expired %v at the end of a's grace, want [a]", got)
	}
	expectEvents(t, "grace over", events(), "a:dead", "gone:k1")
	if s.members["b"].State != StateDown {
		t.Fatalf("b is %s, want still down", s.members["b"].State)
	}
}

// When memberlist's news is final, or probing cannot help, a member found
// dead is dead at once: no down grace, a notice of its leave given before
// or after, or another member alive at its address (weft back on its
// host under a new name).
func TestDeadAtOnce(t *testing.T) {
	t.Run("no grace", func(t *testing.T) {
		s, events := downState()
		s.memberUp(Member{Name: "a", Addr: "10.0.0.2:7950"}, 7950, t0)
		events()
		if s.memberFailed("a", t0) {
			t.Fatal("down without a grace")
		}
		expectEvents(t, "", events(), "a:dead")
	})
	t.Run("leave notice first", func(t *testing.T) {
		s, events := downState("a")
		s.memberLeaving("a", t0)
		if s.memberFailed("a", t0) {
			t.Fatal("a member that gave notice went down")
		}
		expectEvents(t, "", events(), "a:left")
	})
	t.Run("leave notice while down", func(t *testing.T) {
		s, events := downState("a")
		s.apply(we("t", "k1", "a", 1, false, "v"), t0)
		s.memberFailed("a", t0)
		if !s.memberLeaving("a", t0) {
			t.Fatal("notice not news")
		}
		expectEvents(t, "", events(), "put:k1", "a:down", "a:left", "gone:k1")
	})
	t.Run("new name at its address", func(t *testing.T) {
		s, events := downState("a")
		s.apply(we("t", "k1", "a", 1, false, "v"), t0)
		s.memberFailed("a", t0)
		s.memberUp(Member{Name: "a2", Addr: "10.0.0.2:7950"}, 7950, t0)
		expectEvents(t, "", events(), "put:k1", "a:down", "a2:alive", "a:dead", "gone:k1")
		// And the other way round: found dead while a new name is there.
		s.memberUp(Member{Name: "a3", Addr: "10.0.0.9:7950"}, 7950, t0)
		s.memberUp(Member{Name: "a4", Addr: "10.0.0.9:7950"}, 7950, t0)
		if s.memberFailed("a3", t0) {
			t.Fatal("down while another member holds its address")
		}
	})
	// weft back on its host under a new name before memberlist found its
	// last life dead: the one that started earlier at that address is
	// dead at once, so no endpoint shows twice; one that announced no
	// start time, or a later one, is memberlist's to find dead.
	t.Run("new name at its address while the old is alive", func(t *testing.T) {
		s, events := downState()
		s.memberUp(Member{Name: "a", Addr: "10.0.0.2:7950", Started: t0}, 7950, t0)
		s.apply(we("t", "k1", "a", 1, false, "v"), t0)
		events()
		s.memberUp(Member{Name: "a2", Addr: "10.0.0.2:7950", Started: t0.Add(time.Second)}, 7950, t0.Add(2*time.Second))
		expectEvents(t, "newer life", events(), "a2:alive", "a:dead", "gone:k1")
		if s.alive != 2 { // me, a2
			t.Fatalf("%d alive, want 2", s.alive)
		}
		// A stale copy of the old life's entry is not taken in.
		s.apply(we("t", "k1", "a", 2, false, "v"), t0.Add(3*time.Second))
		expectEvents(t, "stale copy", events())

		s.memberUp(Member{Name: "b", Addr: "10.0.0.3:7950"}, 7950, t0)
		s.memberUp(Member{Name: "b2", Addr: "10.0.0.3:7950", Started: t0}, 7950, t0)
		s.memberUp(Member{Name: "c", Addr: "10.0.0.4:7950", Started: t0.Add(time.Second)}, 7950, t0)
		s.memberUp(Member{Name: "c2", Addr: "10.0.0.4:7950", Started: t0}, 7950, t0)
		s.memberUp(Member{Name: "me", Addr: "10.0.0.5:7950", Started: t0.Add(-time.Second)}, 7950, t0)
		s.memberUp(Member{Name: "odd", Addr: "10.0.0.5:7950", Started: t0}, 7950, t0)
		expectEvents(t, "no start time, an earlier one, or ourselves", events(), "b:alive", "b2:alive", "c:alive", "c2:alive", "me:alive", "odd:alive")
		if s.members["me"].State != StateAlive {
			t.Fatalf("we are %s", s.members["me"].State)
		}
		// Our own earlier life, still alive in another member's news: dead
		// at once, its entries never shown.
		s.apply(we("t", "mine-before", "me-before", 1, false, "v"), t0)
		events()
		if s.memberUp(Member{Name: "me-before", Addr: "10.0.0.5:7950", Started: t0.Add(-time.Minute)}, 7950, t0) {
			t.Fatal("our earlier life counted as a member come alive")
		}
		expectEvents(t, "our earlier life", events(), "me-before:alive", "me-before:dead")
		if s.members["me"].State != StateAlive || s.members["me-before"].State != StateDead {
			t.Fatalf("we are %s, our earlier life %s", s.members["me"].State, s.members["me-before"].State)
		}
	})
}

// Probing is bounded: at most limit at once, longest waiting first.
func TestProbesDueBounded(t *testing.T) {
	var names []string
	for i := range 12 {
		names = append(names, fmt.Sprintf("m%02d", i))
	}
	s, _ := downState(names...)
	for i, n := range names {
		s.memberFailed(n, t0.Add(time.Duration(i)*time.Millisecond))
	}
	first := s.probesDue(t0.Add(time.Second), time.Second, 8)
	if len(first) != 8 {
		t.Fatalf("%d probes, want the limit 8", len(first))
	}
	for _, p := range first {
		s.hostProbed(p, true, t0.Add(time.Second))
	}
	// The four never probed come first, then those probed longest ago.
	next := s.probesDue(t0.Add(2*time.Second), time.Second, 6)
	var got []string
	for _, p := range next {
		got = append(got, p.name)
	}
	if want := []string{"m08", "m09", "m10", "m11", "m00", "m01"}; !slices.Equal(got, want) {
		t.Fatalf("probed %v, want %v", got, want)
	}
	if none := s.probesDue(t0.Add(2*time.Second), time.Second, 0); len(none) != 0 {
		t.Fatalf("probes beyond the limit: %v", none)
	}
}

// TCPProbe: a host answers whether its port is open or closed; an address
// that does not answer is gone.
func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback: %v", err)
	}
	open := l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l2.Addr().String()
	l2.Close()
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := TCPProbe(ctx, open); err != nil {
		t.Errorf("open port: %v", err)
	}
	if err := TCPProbe(ctx, closedAddr); err != nil {
		t.Errorf("closed port %s: %v", closedAddr, err)
	}
	// The discard prefix (RFC 6666): nothing answers (no route, or a
	// timeout).
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if err := TCPProbe(short, "[100::1]:7950"); err == nil {
		t.Error("an address nothing answers counted as a live host")
	}
}

// downLab is a cluster whose members probe hosts every 50 ms and watch
// their own view of table "t": gone records every entry of it that
// stopped being visible on any member.
type downLab struct {
	*lab
	ms   []*Mesh
	mu   sync.Mutex
	gone []string
}

func newDownLab(t *testing.T, n int, mod func(*Config)) *downLab {
	l := &downLab{lab: newLab(t)}
	l.ms = l.cluster(n, func(c *Config) {
		c.HostProbeInterval = 50 * time.Millisecond
		if mod != nil {
			mod(c)
		}
	})
	for _, m := range l.ms {
		sub := m.Watch("t", false)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-sub.Ready():
				}
				for _, ev := range sub.Take() {
					if ev.Kind == EntryGone {
						l.mu.Lock()
						l.gone = append(l.gone, m.LocalNode()+" lost "+ev.Entry.Key)
						l.mu.Unlock()
					}
				}
			}
		}()
		t.Cleanup(func() { close(stop); <-done; sub.Close() })
	}
	return l
}

func (l *downLab) lost() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.gone)
}

// waitState waits until every member of ms sees name in state st.
func waitState(t *testing.T, within time.Duration, ms []*Mesh, name, st string) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, within, name+" "+st, func() error {
		for _, m := range ms {
			if got := memberState(m, name); got != st {
				return fmt.Errorf("%s sees %s %q", m.LocalNode(), name, got)
			}
		}
		return nil
	})
	return time.Since(start)
}

// A member whose weft stops while its host answers is down on the others,
// its entries visible all along; when it comes back (empty memory, as a
// restarted plugin) and puts them again, nothing on the others blinked.
func TestPluginDownKeepsEntries(t *testing.T) {
	l := newDownLab(t, 3, nil)
	l.ms[2].Put("t", "a", []byte("1"))
	l.ms[2].Put("t", "b", []byte("2"))
	waitView(t, converge, l.ms, "t", []string{"a=1@n2", "b=2@n2"})

	l.net.KeepHost(l.addr("n2"), true)
	l.ms[2].Close()
	others := l.ms[:2]
	d := waitState(t, converge, others, "n2", StateDown)
	t.Logf("n2 down on the others %s after its weft stopped", d.Round(10*time.Millisecond))
	// Probed every 50 ms for a while: it stays down, its entries shown.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, m := range others {
			if st := memberState(m, "n2"); st != StateDown {
				t.Fatalf("%s sees n2 %s, want down", m.LocalNode(), st)
			}
			if got := view(m, "t"); got != "a=1@n2 b=2@n2" {
				t.Fatalf("%s shows %q while n2 is down", m.LocalNode(), got)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}

	n2 := l.start("n2", nil, "n0")
	n2.Put("t", "a", []byte("1"))
	n2.Put("t", "b", []byte("2"))
	l.ms[2] = n2
	waitAlive(t, converge, l.ms, 3)
	waitView(t, converge, l.ms, "t", []string{"a=1@n2", "b=2@n2"})
	if lost := l.lost(); len(lost) > 0 {
		t.Fatalf("entries went while n2's weft was down: %v", lost)
	}
}

// A host lost while its weft is down is found gone by the next probe; one
// lost while its weft runs is found gone by memberlist plus one probe.
func TestHostLostPurged(t *testing.T) {
	l := newDownLab(t, 4, nil)
	l.ms[2].Put("t", "x2", []byte("1"))
	l.ms[3].Put("t", "x3", []byte("1"))
	waitView(t, converge, l.ms, "t", []string{"x2=1@n2", "x3=1@n3"})

	// n2: weft down, then the host lost.
	l.net.KeepHost(l.addr("n2"), true)
	l.ms[2].Close()
	waitState(t, converge, l.ms[:2], "n2", StateDown)
	l.net.KeepHost(l.addr("n2"), false)
	lost := time.Now()
	waitView(t, converge, l.ms[:2], "t", []string{"x3=1@n3"})
	took := time.Since(lost)
	t.Logf("host lost while down: withdrawn everywhere %s after", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("withdrawn %s after the host was lost, want within a probe interval (50 ms) and some scheduling", took)
	}
	for _, m := range l.ms[:2] {
		if st := memberState(m, "n2"); st != StateDead {
			t.Errorf("%s sees n2 %s, want dead", m.LocalNode(), st)
		}
	}

	// n3: the host cut off while its weft runs: dead, not down.
	l.net.Partition([]string{l.addr("n0"), l.addr("n1")}, []string{l.addr("n3")})
	waitView(t, converge, l.ms[:2], "t", nil)
	for _, m := range l.ms[:2] {
		if st := memberState(m, "n3"); st != StateDead {
			t.Errorf("%s sees n3 %s, want dead", m.LocalNode(), st)
		}
	}
}

// A member down past its grace is dead, its entries withdrawn. The grace
// is the one it announced, not the others' own.
func TestDownPastGrace(t *testing.T) {
	l := newDownLab(t, 3, func(c *Config) {
		if c.NodeName == "n2" {
			c.DownGrace = 300 * time.Millisecond
		}
	})
	l.ms[2].Put("t", "a", []byte("1"))
	waitView(t, converge, l.ms, "t", []string{"a=1@n2"})
	l.net.KeepHost(l.addr("n2"), true)
	l.ms[2].Close()
	waitState(t, converge, l.ms[:2], "n2", StateDown)
	start := time.Now()
	waitView(t, converge, l.ms[:2], "t", nil)
	t.Logf("withdrawn %s after down was seen (grace 300 ms)", time.Since(start).Round(time.Millisecond))
	waitState(t, converge, l.ms[:2], "n2", StateDead)
}

// Many members down at once: probes run a few at a time, each host at most
// once per interval, through the configured hook.
func TestProbingBounded(t *testing.T) {
	var running, peak, calls atomic.Int32
	var mu sync.Mutex
	last := map[string]time.Time{}
	tooSoon := atomic.Bool{}
	probe := func(ctx context.Context, addr string) error {
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		mu.Lock()
		if at, ok := last[addr]; ok && time.Since(at) < 40*time.Millisecond {
			tooSoon.Store(true)
		}
		last[addr] = time.Now()
		mu.Unlock()
		select { // a slow host
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
		return nil
	}
	l := newLab(t)
	const n = 14
	ms := l.cluster(n, func(c *Config) {
		// Fast failure detection: twelve members die at once.
		c.ProbeInterval, c.ProbeTimeout = 100*time.Millisecond, 50*time.Millisecond
		c.HostProbeInterval = 50 * time.Millisecond
		if c.NodeName == "n0" {
			c.HostProbe = probe
		} else {
			c.HostProbe = func(context.Context, string) error { return nil }
		}
	})
	for _, m := range ms[2:] {
		m.Close()
	}
	waitFor(t, time.Minute, "12 members down on n0", func() error {
		down := 0
		for _, mb := range ms[0].Members() {
			if mb.State == StateDown {
				down++
			}
		}
		if down != n-2 {
			return fmt.Errorf("%d down", down)
		}
		return nil
	})
	waitFor(t, converge, "several probe rounds", func() error {
		if c := calls.Load(); c < 3*(n-2) {
			return fmt.Errorf("%d probes", c)
		}
		return nil
	})
	t.Logf("%d probes, at most %d at once", calls.Load(), peak.Load())
	if p := peak.Load(); p > maxProbes {
		t.Errorf("%d probes at once, want at most %d", p, maxProbes)
	}
	if tooSoon.Load() {
		t.Error("a host probed again within the interval")
	}
}

// Close ends probes under way: a probe hook that never answers does not
// hold it.
func TestCloseEndsProbes(t *testing.T) {
	started := make(chan struct{}, 1)
	l := newLab(t)
	ms := l.cluster(2, func(c *Config) {
		c.HostProbeTimeout = time.Hour
		c.HostProbe = func(ctx context.Context, addr string) error {
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		}
	})
	ms[1].Close()
	select {
	case <-started:
	case <-time.After(converge):
		t.Fatal("n1 never probed")
	}
	done := make(chan error, 1)
	go func() { done <- ms[0].Close() }()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a probe that never answers")
	}
	if st := memberState(ms[0], "n1"); st != StateDown {
		t.Errorf("n1 is %q, want down (its probe never answered)", st)
	}
}

// What a member changed just before it stops goes out before it does: its
// host's weft is down, not gone, so the others keep what they hold of it,
// and must not keep what it had just withdrawn (the endpoints a stopping
// engine removes, say).
func TestCloseSendsQueuedChanges(t *testing.T) {
	l := newDownLab(t, 3, nil)
	for i := range 20 {
		l.ms[2].Put("t", fmt.Sprintf("k%02d", i), []byte("1"))
	}
	l.ms[2].Put("t", "kept", []byte("1"))
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("k%02d=1@n2", i))
	}
	waitView(t, converge, l.ms, "t", append(want, "kept=1@n2"))

	for i := range 20 {
		l.ms[2].Delete("t", fmt.Sprintf("k%02d", i))
	}
	l.ms[2].Put("t", "new", []byte("2"))
	l.net.KeepHost(l.addr("n2"), true)
	l.ms[2].Close()
	waitState(t, converge, l.ms[:2], "n2", StateDown)
	waitView(t, 5*time.Second, l.ms[:2], "t", []string{"kept=1@n2", "new=2@n2"})
}
