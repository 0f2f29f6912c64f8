package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
)

// cluster is a few allocators sharing a memNet, each with a state
// directory, run with short timings.
type cluster struct {
	t    *testing.T
	net  *memNet
	pool string
	opts map[string]string
	mu   sync.Mutex
	host map[string]*node
}

type node struct {
	a      *Allocator
	dir    string
	cancel context.CancelFunc
	done   chan struct{}
}

func testConfig() Config {
	return Config{
		ExpectedHosts: 3,
		Reclaim:       300 * time.Millisecond,
		Timeout:       2 * time.Second,
		ReplayWindow:  time.Minute,
		AbsentGrace:   200 * time.Millisecond,
		Tick:          20 * time.Millisecond,
	}
}

func newCluster(t *testing.T, pool string, opts map[string]string, names ...string) *cluster {
	c := &cluster{t: t, net: newMemNet(), pool: pool, opts: opts, host: map[string]*node{}}
	for _, n := range names {
		c.start(n, t.TempDir())
	}
	t.Cleanup(func() {
		for _, n := range names {
			c.stop(n)
		}
	})
	return c
}

// start runs an allocator for name on dir and asks for the pool, as
// Docker does when the network is created (or replays it).
func (c *cluster) start(name, dir string) *Allocator {
	c.t.Helper()
	cfg := testConfig()
	cfg.StateDir = dir
	cfg.Table = c.net.table(name)
	a, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{a: a, dir: dir, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(n.done); a.Run(ctx) }()
	c.mu.Lock()
	c.host[name] = n
	c.mu.Unlock()
	if _, err := a.RequestPool(&ipam.RequestPoolRequest{Pool: c.pool, Options: c.opts}); err != nil {
		c.t.Fatal(err)
	}
	return a
}

func (c *cluster) stop(name string) {
	c.mu.Lock()
	n := c.host[name]
	c.mu.Unlock()
	if n == nil {
		return
	}
	n.cancel()
	<-n.done
}

// restart stops name's allocator and starts a new one on its state.
func (c *cluster) restart(name string) *Allocator {
	c.stop(name)
	return c.start(name, c.host[name].dir)
}

func (c *cluster) a(name string) *Allocator {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.host[name].a
}

func (c *cluster) request(name, addr string) (netip.Addr, error) {
	r, err := c.a(name).RequestAddress(&ipam.RequestAddressRequest{PoolID: c.pool, Address: addr})
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.MustParsePrefix(r.Address).Addr(), nil
}

func (c *cluster) mustRequest(name, addr string) netip.Addr {
	c.t.Helper()
	x, err := c.request(name, addr)
	if err != nil {
		c.t.Fatalf("%s: request %q: %v\n%s", name, addr, err, c.dump())
	}
	return x
}

func (c *cluster) release(name string, x netip.Addr) {
	c.t.Helper()
	if err := c.a(name).ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: c.pool, Address: x.String()}); err != nil {
		c.t.Fatal(err)
	}
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inspect runs f on name's allocator state under its lock.
func (c *cluster) inspect(name string, f func(a *Allocator)) {
	a := c.a(name)
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

// blocksOf lists the blocks name holds (claims that hold).
func (c *cluster) blocksOf(name string) []netip.Prefix {
	var out []netip.Prefix
	c.inspect(name, func(a *Allocator) {
		for _, cl := range a.st.Claims {
			if !cl.Released && cl.Acked > 0 {
				out = append(out, cl.Block)
			}
		}
	})
	return out
}

// addrSet records addresses per host and fails on a duplicate.
type addrSet struct {
	t  *testing.T
	mu sync.Mutex
	m  map[netip.Addr]string
}

func newAddrSet(t *testing.T) *addrSet { return &addrSet{t: t, m: map[netip.Addr]string{}} }

func (s *addrSet) add(host string, x netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if other, ok := s.m[x]; ok {
		s.t.Errorf("address %s handed to a container on %s and on %s", x, other, host)
	}
	s.m[x] = host
}

func (s *addrSet) drop(x netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, x)
}

func TestConcurrentRequestsAcrossHosts(t *testing.T) {
	c := newCluster(t, "10.40.0.0/24", map[string]string{OptBlock: "28"}, "h1", "h2", "h3")
	pool := netip.MustParsePrefix(c.pool)
	set := newAddrSet(t)
	var wg sync.WaitGroup
	for _, h := range []string{"h1", "h2", "h3"} {
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				x, err := c.request(h, "")
				if err != nil {
					t.Errorf("%s: %v", h, err)
					return
				}
				if reserved(pool, x) || !pool.Contains(x) {
					t.Errorf("%s got %s", h, x)
				}
				set.add(h, x)
			}()
		}
	}
	wg.Wait()
	if len(set.m) != 60 {
		t.Fatalf("%d addresses handed out, want 60", len(set.m))
	}
	// Each address lies in a block its host holds, and no block is held twice.
	holder := map[netip.Prefix]string{}
	for _, h := range []string{"h1", "h2", "h3"} {
		for _, b := range c.blocksOf(h) {
			for ob, oh := range holder {
				if ob.Overlaps(b) {
					t.Fatalf("block %s held by %s and %s", b, oh, h)
				}
			}
			holder[b] = h
		}
	}
	for x, h := range set.m {
		if holder[blockOf(x, 28)] != h {
			t.Errorf("%s on %s lies in %s's block", x, h, holder[blockOf(x, 28)])
		}
	}
	// The gateway is the pool's first address on every host.
	for _, h := range []string{"h1", "h2", "h3"} {
		r, err := c.a(h).RequestAddress(&ipam.RequestAddressRequest{PoolID: c.pool, Options: map[string]string{requestAddressType: gatewayType}})
		if err != nil || r.Address != "10.40.0.1/24" {
			t.Fatalf("%s gateway = %v, %v", h, r, err)
		}
	}
}

// Two hosts claim one block at the same moment, each unaware of the
// other: exactly one gets it, the other moves to another block.
func TestRacingClaimsSettle(t *testing.T) {
	c := newCluster(t, "10.40.0.0/24", map[string]string{OptBlock: "28"}, "h1", "h2", "h3")
	lowest := func(free []netip.Prefix) netip.Prefix {
		return slices.MinFunc(free, func(x, y netip.Prefix) int { return int(u32(x.Addr())>>4) - int(u32(y.Addr())>>4) })
	}
	for _, h := range []string{"h1", "h2"} {
		c.inspect(h, func(a *Allocator) { a.pick = lowest })
		c.net.hold(h)
	}
	got := map[string]netip.Addr{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range []string{"h1", "h2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := c.mustRequest(h, "")
			mu.Lock()
			got[h] = x
			mu.Unlock()
		}()
	}
	// Both claim 10.40.0.0/28 before either sees the other.
	eventually(t, 2*time.Second, func() error {
		for _, h := range []string{"h1", "h2"} {
			ok := false
			c.inspect(h, func(a *Allocator) { ok = a.st.Claims["10.40.0.0/28"] != nil })
			if !ok {
				return fmt.Errorf("%s has not claimed 10.40.0.0/28 yet", h)
			}
		}
		return nil
	})
	c.net.release("h1")
	c.net.release("h2")
	wg.Wait()
	if got["h1"] == got["h2"] || blockOf(got["h1"], 28) == blockOf(got["h2"], 28) {
		t.Fatalf("h1 got %s, h2 got %s: one block", got["h1"], got["h2"])
	}
	// The tie goes the same way everywhere: h3 voted for the smaller name.
	if blockOf(got["h1"], 28).String() != "10.40.0.0/28" {
		t.Fatalf("h1 got %s; it should have won 10.40.0.0/28", got["h1"])
	}
}

// A host cut off from the majority claims nothing new but goes on
// allocating inside the window the majority acknowledged.
func TestMinorityAllocatesOnlyInItsWindow(t *testing.T) {
	c := newCluster(t, "10.40.0.0/24", map[string]string{OptBlock: "28"}, "h1", "h2", "h3")
	set := newAddrSet(t)
	set.add("h3", c.mustRequest("h3", ""))
	var window span
	eventually(t, 2*time.Second, func() error {
		var err error
		c.inspect("h3", func(a *Allocator) {
			for _, cl := range a.st.Claims {
				if cl.Acked < cl.Limit {
					err = fmt.Errorf("raise of %s not acknowledged yet", cl.Block)
				}
				window, _ = window_(cl)
			}
		})
		return err
	})
	c.net.partition(1, "h3")
	n := 0
	for {
		x, err := c.request("h3", "")
		if err != nil {
			if !strings.Contains(err.Error(), "majority") {
				t.Fatalf("h3 cut off: %v", err)
			}
			break
		}
		if !window.contains(x) {
			t.Fatalf("h3 cut off handed out %s, outside its acknowledged window %v", x, window)
		}
		set.add("h3", x)
		n++
	}
	if n == 0 {
		t.Fatal("h3 cut off allocated nothing in its window")
	}
	for range 40 {
		set.add("h1", c.mustRequest("h1", ""))
	}
	c.net.heal()
	for range 5 {
		set.add("h3", c.mustRequest("h3", ""))
	}
}

// settled waits until every window of name is acknowledged.
func (c *cluster) settled(name string) {
	c.t.Helper()
	eventually(c.t, 2*time.Second, func() error {
		var err error
		c.inspect(name, func(a *Allocator) {
			a.stepLocked(time.Now()) // raises a window that is due
			for _, cl := range a.st.Claims {
				if cl.Acked < cl.Limit {
					err = fmt.Errorf("%s: window of %s not acknowledged yet", name, cl.Block)
				}
			}
		})
		return err
	})
}

func window_(c *claim) (span, bool) { return window(c.Block, min(c.Limit, c.Acked)) }

// A host dead for the reclaim time loses its blocks, not its windows; when
// it comes back it keeps its addresses, as foreign ones where its block is
// someone else's now.
func TestReclaimKeepsWindowsQuarantined(t *testing.T) {
	c := newCluster(t, "10.40.0.0/26", map[string]string{OptBlock: "28"}, "h1", "h2", "h3")
	x3 := c.mustRequest("h3", "")
	b3 := blockOf(x3, 28)
	beyond := at(b3, 14) // far past a fresh window
	c.stop("h3")
	c.net.crash("h3")

	// Held by a dead host: not lent, and not reclaimed yet.
	if _, err := c.request("h1", beyond.String()); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("address in a dead host's block: %v", err)
	}
	// After the reclaim time the block is free again, its window not.
	eventually(t, 3*time.Second, func() error {
		_, err := c.request("h1", beyond.String())
		return err
	})
	if _, err := c.request("h2", x3.String()); err == nil || !strings.Contains(err.Error(), "h3") {
		t.Fatalf("address in the removed host's window: %v", err)
	}
	fill := newAddrSet(t)
	fill.add("h3", x3)
	fill.add("h1", beyond)
	for {
		x, err := c.request("h1", "")
		if err != nil {
			break
		}
		fill.add("h1", x)
	}

	// h3 comes back: it learns it was removed, keeps x3 as foreign in h1's
	// block, and the quarantine is lifted.
	c.net.table("h3")
	c.start("h3", c.host["h3"].dir)
	eventually(t, 3*time.Second, func() error {
		var err error
		c.inspect("h3", func(a *Allocator) {
			if a.st.Epoch == 0 || a.st.Restoring {
				err = fmt.Errorf("h3 epoch %d restoring %v", a.st.Epoch, a.st.Restoring)
			} else if a.st.Foreign[x3] == "" && a.ownClaim(x3) == nil {
				err = fmt.Errorf("h3 lost %s", x3)
			}
		})
		return err
	})
	eventually(t, 3*time.Second, func() error {
		var err error
		c.inspect("h1", func(a *Allocator) {
			if r := a.st.Removed["h3"]; r == nil || !r.Lifted {
				err = fmt.Errorf("quarantine of h3 not lifted on h1: %+v", r)
			}
		})
		return err
	})
	if _, err := c.request("h1", x3.String()); err == nil {
		t.Fatalf("h1 took %s, which h3 still uses", x3)
	}
	for {
		x, err := c.request("h1", "")
		if err != nil {
			break
		}
		fill.add("h1", x)
	}
	// Released by h3, it is anyone's again.
	c.release("h3", x3)
	fill.drop(x3)
	eventually(t, 3*time.Second, func() error {
		x, err := c.request("h1", x3.String())
		if err == nil {
			fill.add("h1", x)
		}
		return err
	})
}

// Both sides of a partition longer than the reclaim time allocate; after
// it heals, no address is used twice, and everyone allocates again.
func TestLongPartitionNoDuplicates(t *testing.T) {
	c := newCluster(t, "10.40.0.0/24", map[string]string{OptBlock: "28"}, "h1", "h2", "h3")
	set := newAddrSet(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		for range 3 {
			set.add(h, c.mustRequest(h, ""))
		}
	}
	c.settled("h3")
	c.net.partition(1, "h3")
	for range 3 {
		set.add("h3", c.mustRequest("h3", ""))
	}
	// The majority removes h3, then claims through the pool, h3's blocks
	// included, and takes a free address of h3's block on purpose.
	eventually(t, 3*time.Second, func() error {
		var err error
		c.inspect("h1", func(a *Allocator) {
			if a.st.Removed["h3"] == nil {
				err = fmt.Errorf("h3 not removed yet")
			}
		})
		return err
	})
	var b3 netip.Prefix
	for x, h := range set.m {
		if h == "h3" {
			b3 = blockOf(x, 28)
		}
	}
	set.add("h2", c.mustRequest("h2", at(b3, 15).String()))
	for {
		x, err := c.request("h1", "")
		if err != nil {
			break
		}
		set.add("h1", x)
	}
	for range 2 {
		if x, err := c.request("h3", ""); err == nil {
			set.add("h3", x)
		}
	}
	c.net.heal()
	eventually(t, 3*time.Second, func() error {
		var err error
		c.inspect("h3", func(a *Allocator) {
			if a.st.Restoring || a.st.Epoch == 0 {
				err = fmt.Errorf("h3 not restored yet")
			}
		})
		return err
	})
	// Every address h3 holds is still its own, and nothing new collides.
	for _, h := range []string{"h3", "h2"} {
		for {
			x, err := c.request(h, "")
			if err != nil {
				break
			}
			set.add(h, x)
		}
	}
	if len(set.m) < 200 {
		t.Fatalf("only %d addresses handed out in a /24", len(set.m))
	}
}

// A restarted allocator keeps its claims and votes, answers Docker's
// replayed request for an address once, and refuses it after that.
func TestRestartReplaysOnce(t *testing.T) {
	c := newCluster(t, "10.40.0.0/24", map[string]string{OptBlock: "28"}, "h1", "h2", "h3")
	x := c.mustRequest("h1", "")
	y := c.mustRequest("h2", "")
	var votes int
	c.inspect("h1", func(a *Allocator) { votes = len(a.st.Votes) })
	a := c.restart("h1")
	c.inspect("h1", func(a *Allocator) {
		if len(a.st.Votes) != votes || len(a.st.Claims) == 0 {
			t.Fatalf("after restart: %d votes (had %d), %d claims", len(a.st.Votes), votes, len(a.st.Claims))
		}
	})
	if got := c.mustRequest("h1", x.String()); got != x {
		t.Fatalf("replay of %s gave %s", x, got)
	}
	if _, err := c.request("h1", x.String()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second request for %s: %v", x, err)
	}
	if _, err := c.request("h1", y.String()); err == nil || !strings.Contains(err.Error(), "h2") {
		t.Fatalf("request for h2's %s: %v", y, err)
	}
	if z := c.mustRequest("h1", ""); z == x || z == y {
		t.Fatalf("new address %s after restart is taken", z)
	}
	// Replays of the pool and the gateway are idempotent.
	if _, err := a.RequestPool(&ipam.RequestPoolRequest{Pool: c.pool, Options: c.opts}); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: c.pool, Address: "10.40.0.1"}); err != nil {
		t.Fatal(err)
	}
}

// An address in another host's block is lent when free and refused when
// taken; the lender never hands it out meanwhile.
func TestSpecificAddressInAnotherHostsBlock(t *testing.T) {
	c := newCluster(t, "10.40.0.0/24", map[string]string{OptBlock: "28"}, "h1", "h2", "h3")
	y := c.mustRequest("h2", "")
	b := blockOf(y, 28)
	free := at(b, 3)
	if free == y || reserved(netip.MustParsePrefix(c.pool), free) {
		free = at(b, 4)
	}
	if got := c.mustRequest("h1", free.String()); got != free {
		t.Fatalf("got %s, asked for %s", got, free)
	}
	if _, err := c.request("h3", y.String()); err == nil || !strings.Contains(err.Error(), "in use on host h2") {
		t.Fatalf("request for h2's %s: %v", y, err)
	}
	if _, err := c.request("h3", free.String()); err == nil || !strings.Contains(err.Error(), "in use on host") {
		t.Fatalf("request for h1's borrowed %s: %v", free, err)
	}
	for range 10 {
		if x := c.mustRequest("h2", ""); x == free {
			t.Fatalf("h2 handed out %s, lent to h1", free)
		}
	}
	c.release("h1", free)
	eventually(t, 2*time.Second, func() error {
		var err error
		c.inspect("h2", func(a *Allocator) {
			if a.st.Lent[free] != "" {
				err = fmt.Errorf("%s still lent", free)
			}
		})
		return err
	})
	if got := c.mustRequest("h2", free.String()); got != free {
		t.Fatalf("h2 got %s back as %s", free, got)
	}
	if _, err := c.request("h1", "10.40.0.1"); err == nil {
		t.Fatal("the gateway was handed to a container")
	}
}

// dump describes every host's claims and votes, for failure messages.
func (c *cluster) dump() string {
	var b strings.Builder
	for name := range c.host {
		c.inspect(name, func(a *Allocator) {
			fmt.Fprintf(&b, "== %s epoch %d restoring %v\n", name, a.st.Epoch, a.st.Restoring)
			for _, cl := range a.sortedClaims() {
				fmt.Fprintf(&b, "  claim %s limit %d acked %d used %d released %v quar %v\n", cl.Block, cl.Limit, cl.Acked, cl.Used.count(), cl.Released, cl.Quar)
			}
			for k, v := range a.st.Votes {
				fmt.Fprintf(&b, "  vote %s -> %+v\n", k, *v)
			}
			for k, v := range a.st.Removed {
				fmt.Fprintf(&b, "  removed %s %+v\n", k, *v)
			}
			if a.v != nil {
				fmt.Fprintf(&b, "  view n=%d q=%d claims=%d votes=%d\n", a.v.n, a.v.q, len(a.v.claims), len(a.v.votes))
			}
		})
	}
	return b.String()
}
