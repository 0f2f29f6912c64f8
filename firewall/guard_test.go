package firewall

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

// fakeTable records what the guard asks of the kernel.
type fakeTable struct {
	mu      sync.Mutex
	present bool
	rules   Rules
	applies int
	removes int
}

func (f *fakeTable) Apply(r Rules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.present, f.rules = true, r
	f.applies++
	return nil
}

func (f *fakeTable) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.present, f.rules = false, Rules{}
	f.removes++
	return nil
}

func (f *fakeTable) Members() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.present {
		return nil, errors.New("no table")
	}
	return slices.Clone(f.rules.Members), nil
}

func (f *fakeTable) state() (bool, []netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.present, slices.Clone(f.rules.Members)
}

type guardLab struct {
	table   *fakeTable
	nets    feed.Feed[driver.NetworkEvent]
	members feed.Feed[mesh.Event]
	auth    chan struct{}

	mu     sync.Mutex
	listed []netip.Addr
	authed []netip.Addr
}

func (l *guardLab) set(listed ...string) {
	l.mu.Lock()
	l.listed = nil
	for _, s := range listed {
		l.listed = append(l.listed, netip.MustParseAddr(s))
	}
	l.mu.Unlock()
	l.members.Publish(mesh.Event{Kind: mesh.MemberChanged})
}

func startGuard(t *testing.T, table *fakeTable, hold time.Duration, nets ...driver.NetworkEvent) *guardLab {
	l := &guardLab{table: table, auth: make(chan struct{}, 1)}
	g := New(Config{
		Table: table, VXLANPort: 4790, MeshPort: 7950,
		Networks: l.nets.Subscribe(nets...), MemberEvents: l.members.Subscribe(),
		Members:       func() []netip.Addr { l.mu.Lock(); defer l.mu.Unlock(); return slices.Clone(l.listed) },
		Authenticated: func() []netip.Addr { l.mu.Lock(); defer l.mu.Unlock(); return slices.Clone(l.authed) },
		AuthChanged:   l.auth,
		Fixed:         []netip.Addr{netip.MustParseAddr("192.0.2.100")},
		Self:          func() netip.Addr { return netip.MustParseAddr("192.0.2.1") },
		Hold:          hold,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

func waitTable(t *testing.T, f *fakeTable, what string, ok func(present bool, members []netip.Addr) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, m := f.state()
		if ok(p, m) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: table present=%v members=%v", what, p, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func has(m []netip.Addr, s ...string) bool {
	for _, x := range s {
		if !slices.Contains(m, netip.MustParseAddr(x)) {
			return false
		}
	}
	return true
}

// TestGuardFollowsNetworksAndMembers: the table comes with the first
// network and goes a hold after the last; it lets in the members, the
// authenticated, the fixed peers and this host; an address no longer
// listed stays for the hold, then goes.
func TestGuardFollowsNetworksAndMembers(t *testing.T) {
	table := &fakeTable{}
	l := startGuard(t, table, 300*time.Millisecond)
	l.set("192.0.2.2", "192.0.2.3")
	waitTable(t, table, "no network: no table", func(p bool, _ []netip.Addr) bool { return !p })

	l.nets.Publish(driver.NetworkEvent{Up: true, ID: "n1"})
	waitTable(t, table, "first network", func(p bool, m []netip.Addr) bool {
		return p && has(m, "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.100")
	})
	// A joining host authenticates: it is let in before it is a member.
	l.mu.Lock()
	l.authed = []netip.Addr{netip.MustParseAddr("192.0.2.9")}
	l.mu.Unlock()
	l.auth <- struct{}{}
	waitTable(t, table, "authenticated host", func(p bool, m []netip.Addr) bool { return has(m, "192.0.2.9") })

	// 192.0.2.3 is forgotten by the mesh: it stays for the hold, then goes.
	l.set("192.0.2.2")
	if _, m := table.state(); !has(m, "192.0.2.3") {
		t.Fatal("a forgotten member dropped before the hold")
	}
	waitTable(t, table, "after the hold", func(p bool, m []netip.Addr) bool { return p && !has(m, "192.0.2.3") && has(m, "192.0.2.2") })

	l.nets.Publish(driver.NetworkEvent{Up: true, ID: "n2"}, driver.NetworkEvent{Up: false, ID: "n1"})
	l.set("192.0.2.2")
	waitTable(t, table, "one network left", func(p bool, _ []netip.Addr) bool { return p })
	gone := time.Now()
	l.nets.Publish(driver.NetworkEvent{Up: false, ID: "n2"})
	waitTable(t, table, "last network gone", func(p bool, _ []netip.Addr) bool { return !p })
	if d := time.Since(gone); d < 300*time.Millisecond {
		t.Fatalf("table removed %s after the last network, before the hold", d)
	}
}

// TestGuardKeepsWhatTheKernelHadAtStart: a restarted plugin, whose mesh
// knows no one yet, cuts no member off: the addresses in the table when
// it starts stay for the hold.
func TestGuardKeepsWhatTheKernelHadAtStart(t *testing.T) {
	table := &fakeTable{present: true, rules: Rules{VXLANPort: 4790, MeshPort: 7950, Members: []netip.Addr{netip.MustParseAddr("192.0.2.7")}}}
	startGuard(t, table, 400*time.Millisecond, driver.NetworkEvent{Up: true, ID: "n1"})
	waitTable(t, table, "restart", func(p bool, m []netip.Addr) bool { return p && has(m, "192.0.2.7", "192.0.2.1") })
	waitTable(t, table, "hold over", func(p bool, m []netip.Addr) bool { return p && !has(m, "192.0.2.7") })
	table.mu.Lock()
	removes := table.removes
	table.mu.Unlock()
	if removes != 0 {
		t.Fatal("the table was removed while a network used it")
	}
}

// TestGuardKeepsTheTableWhileNetworksComeBack: a plugin whose state
// directory was lost starts knowing no network, then learns them again
// from the engine: the table in the kernel stays meanwhile.
func TestGuardKeepsTheTableWhileNetworksComeBack(t *testing.T) {
	table := &fakeTable{present: true, rules: Rules{VXLANPort: 4790, MeshPort: 7950, Members: []netip.Addr{netip.MustParseAddr("192.0.2.7")}}}
	l := startGuard(t, table, 500*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // the networks come back a moment later: the scenario, not a wait
	l.nets.Publish(driver.NetworkEvent{Up: true, ID: "n1"})
	waitTable(t, table, "networks back", func(p bool, m []netip.Addr) bool { return p && has(m, "192.0.2.1") })
	table.mu.Lock()
	removes := table.removes
	table.mu.Unlock()
	if removes != 0 {
		t.Fatal("the table was removed while the networks came back")
	}
}

// TestGuardWaitsForAMemberBeforeAFirstTable: with no table in the kernel
// and no other member known yet, or the mesh's first exchange not merged,
// the guard makes none (it would drop the VXLAN of containers already
// running) until the settle time is over; the members the first exchange
// brings are in the table it makes.
func TestGuardWaitsForAMemberBeforeAFirstTable(t *testing.T) {
	table := &fakeTable{}
	var listed []netip.Addr
	self := netip.MustParseAddr("192.0.2.1")
	g := New(Config{
		Table: table, VXLANPort: 4790, MeshPort: 7950,
		Members: func() []netip.Addr { return listed },
		Self:    func() netip.Addr { return self },
		Settle:  10 * time.Second,
	})
	start := time.Now()
	g.started = start
	g.networks["n1"] = true
	listed = []netip.Addr{self}
	if wait := g.reconcile(start.Add(time.Second)); wait <= 0 {
		t.Fatalf("next look in %s", wait)
	}
	if p, _ := table.state(); p {
		t.Fatal("a table made before any other member was known")
	}
	// One member known, the mesh's first exchange not merged yet: the
	// members it brings may still be on their way (a table made then cut
	// the third host's traffic in the roll from 0.1.0).
	synced := false
	g.cfg.Synced = func() bool { return synced }
	listed = append(listed, netip.MustParseAddr("192.0.2.2"))
	g.reconcile(start.Add(2 * time.Second))
	if p, _ := table.state(); p {
		t.Fatal("a table made before the mesh's first exchange was merged")
	}
	listed = append(listed, netip.MustParseAddr("192.0.2.3"))
	synced = true
	g.reconcile(start.Add(3 * time.Second))
	if p, m := table.state(); !p || !has(m, "192.0.2.2") || !has(m, "192.0.2.3") {
		t.Fatalf("members known and merged: table present=%v members=%v", p, m)
	}
	// Alone past the settle time, a host makes its table all the same.
	alone := &fakeTable{}
	g2 := New(Config{Table: alone, VXLANPort: 4790, MeshPort: 7950,
		Members: func() []netip.Addr { return []netip.Addr{self} }, Self: func() netip.Addr { return self }, Settle: 10 * time.Second})
	g2.started = start
	g2.networks["n1"] = true
	g2.reconcile(start.Add(11 * time.Second))
	if p, _ := alone.state(); !p {
		t.Fatal("no table after the settle time on a host alone")
	}
}

// A member's tunnel address (With) is let in with it, but is no other
// member: a host alone with encrypted networks on still waits for the
// mesh before a first table (its own tunnel address once counted as
// another member, and the table came before the other hosts were known).
func TestGuardLetsInTunnelAddressesWithTheirMembers(t *testing.T) {
	table := &fakeTable{}
	self := netip.MustParseAddr("192.0.2.1")
	listed := []netip.Addr{self}
	tunnel := func(a netip.Addr) []netip.Addr {
		b := a.As4()
		return []netip.Addr{netip.AddrFrom4([4]byte{10, 250, b[2], b[3]})}
	}
	g := New(Config{
		Table: table, VXLANPort: 4790, MeshPort: 7950, WGPort: 51820,
		Members: func() []netip.Addr { return listed }, With: tunnel,
		Self:   func() netip.Addr { return self },
		Synced: func() bool { return true },
		Settle: 10 * time.Second,
	})
	start := time.Now()
	g.started = start
	g.networks["n1"] = true
	g.reconcile(start.Add(time.Second))
	if p, m := table.state(); p {
		t.Fatalf("a first table with no other member known, only this host's tunnel address: %v", m)
	}
	listed = append(listed, netip.MustParseAddr("192.0.2.2"))
	g.reconcile(start.Add(2 * time.Second))
	p, m := table.state()
	if !p {
		t.Fatal("no table once another member is known")
	}
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "10.250.2.1", "10.250.2.2"} {
		if !has(m, a) {
			t.Errorf("table lacks %s: %v", a, m)
		}
	}
	if len(m) != 4 {
		t.Errorf("table lets in %v, want the two members and their tunnel addresses", m)
	}
}
