package underlay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/weftnet/weft/engine"
)

// paths answers MTUs from a table: the MTU toward each remote, the MTU of
// the interface holding each local address.
type paths struct {
	mu       sync.Mutex
	toRemote map[string]int
	ofLocal  map[string]int
	fallback int
}

func (p *paths) PathMTU(local net.IP, remotes []net.IP) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := 0
	for _, r := range remotes {
		if m, ok := p.toRemote[r.String()]; ok && (best == 0 || m < best) {
			best = m
		}
	}
	if best > 0 {
		return best, true
	}
	if m, ok := p.ofLocal[local.String()]; ok && local != nil {
		return m, true
	}
	return 0, false
}

func (p *paths) FallbackMTU() int { return p.fallback }

type fakeEngine struct {
	mu   sync.Mutex
	info engine.Info
	err  error
}

func (e *fakeEngine) Info(context.Context) (engine.Info, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.info, e.err
}

func (e *fakeEngine) set(addr string, managers ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = nil
	e.info.Swarm.NodeAddr = addr
	e.info.Swarm.RemoteManagers = nil
	for _, m := range managers {
		e.info.Swarm.RemoteManagers = append(e.info.Swarm.RemoteManagers, engine.RemoteManager{Addr: m})
	}
}

// The bug this package exists for: a host routing by default through a
// jumbo interface while VXLAN runs on a 1500 one. Before the address is
// known the MTU is the safe lower bound, then the VTEP's interface, then
// the path toward the other hosts; never the default route's.
func TestMTUFollowsTheVXLANPath(t *testing.T) {
	p := &paths{toRemote: map[string]int{}, ofLocal: map[string]int{"198.18.0.1": 1500}, fallback: 1400}
	eng := &fakeEngine{err: errors.New("engine not answering yet")}
	var remotes []netip.Addr
	var rmu sync.Mutex
	u := New(Config{Scope: "global", MeshPort: 7950, Engine: eng, Paths: p, Remotes: func() []netip.Addr {
		rmu.Lock()
		defer rmu.Unlock()
		return remotes
	}})
	changed := u.Changed()
	if st := u.State(); st.Addr.IsValid() || st.MTU != 1400 {
		t.Fatalf("before anything is known: %+v, want no address and the fallback MTU", st)
	}
	ctx := context.Background()
	u.Refresh(ctx)
	if st := u.State(); st.Addr.IsValid() || st.Settled {
		t.Fatalf("engine down: %+v", st)
	}
	eng.set("198.18.0.1", "198.18.0.9:2377")
	u.Refresh(ctx)
	st := u.State()
	if st.Addr != netip.MustParseAddr("198.18.0.1") || !st.Settled || st.MTU != 1500 {
		t.Fatalf("address known: %+v, want 198.18.0.1 settled with MTU 1500", st)
	}
	if len(st.Managers) != 1 || st.Managers[0] != "198.18.0.9:7950" {
		t.Fatalf("managers %v, want the manager on the mesh port", st.Managers)
	}
	select {
	case <-changed:
	default:
		t.Fatal("no change signalled")
	}
	// Other hosts known: the path toward them decides.
	p.mu.Lock()
	p.toRemote["198.18.0.2"] = 1450
	p.toRemote["198.18.0.3"] = 9000
	p.mu.Unlock()
	rmu.Lock()
	remotes = []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")}
	rmu.Unlock()
	u.Refresh(ctx)
	if m := u.MTU(); m != 1450 {
		t.Fatalf("MTU %d, want the smallest path's 1450", m)
	}
	// Nothing changed: no signal.
	<-changed
	u.Refresh(ctx)
	select {
	case <-changed:
		t.Fatal("a change signalled with nothing changed")
	default:
	}
}

func TestAddressPrecedence(t *testing.T) {
	p := &paths{fallback: 1500}
	eng := &fakeEngine{}
	eng.set("198.18.0.5")
	// The setting wins over the engine.
	u := New(Config{Advertise: netip.MustParseAddr("198.18.0.9"), Scope: "global", Engine: eng, Paths: p})
	u.Refresh(context.Background())
	if st := u.State(); st.Addr != netip.MustParseAddr("198.18.0.9") || !st.Settled {
		t.Fatalf("with the setting: %+v", st)
	}
	// The last run's address is used until the engine answers, then the
	// engine's wins.
	eng2 := &fakeEngine{err: errors.New("down")}
	u = New(Config{Last: netip.MustParseAddr("198.18.0.7"), Scope: "global", Engine: eng2, Paths: p})
	u.Refresh(context.Background())
	if st := u.State(); st.Addr != netip.MustParseAddr("198.18.0.7") || st.Settled {
		t.Fatalf("engine down: %+v, want the last address, not settled", st)
	}
	eng2.set("198.18.0.8")
	u.Refresh(context.Background())
	if st := u.State(); st.Addr != netip.MustParseAddr("198.18.0.8") || !st.Settled {
		t.Fatalf("engine up: %+v", st)
	}
	// Local mode: the route toward WEFT_PEERS; the engine is not asked.
	u = New(Config{Scope: "local", Peers: []string{"127.0.0.1", "127.0.0.2:7950"}, Engine: eng, Paths: p})
	u.Refresh(context.Background())
	if st := u.State(); st.Addr != netip.MustParseAddr("127.0.0.1") || !st.Settled {
		t.Fatalf("local mode: %+v, want the source address toward 127.0.0.1", st)
	}
}

func TestRouteSource(t *testing.T) {
	a, err := RouteSource([]string{"127.0.0.1", "127.0.0.2:7950"}, 7950)
	if err != nil || a != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("RouteSource = %v, %v; want the source address toward 127.0.0.1", a, err)
	}
	if _, err := RouteSource([]string{"198.18.0.1:no-such-port"}, 7950); err == nil {
		t.Fatal("no error for peers without a route")
	}
}
