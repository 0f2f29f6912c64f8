package keyservice

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/mesh/meshtest"
)

// swarmLab is a swarm in one process: each node a real mesh on an
// in-memory network, a real keyring in its own state directory, and a
// key service on its own loopback address (127.0.0.<i>) over real TCP and
// TLS, with certificates from a test CA.
type swarmLab struct {
	t       *testing.T
	ca      *testCA
	net     *mesh.MemNetwork
	port    int
	nodes   []*labNode
	nodesMu sync.Mutex
	listed  []string // what the managers' fake engines list
	// apart: each node knows only itself as a manager (the managers
	// cannot reach each other).
	apart bool
}

type labNode struct {
	name, role string
	addr       netip.Addr
	swarmDir   string
	keys       *mesh.Keyring
	mesh       *mesh.Mesh
	svc        *Service
	meshAddr   string
	stop       func() // ends what start started
}

func newSwarmLab(t *testing.T) *swarmLab {
	l := &swarmLab{t: t, ca: newCA(t), net: mesh.NewMemNetwork()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return l
}

func (l *swarmLab) managers() []netip.Addr {
	var out []netip.Addr
	for _, n := range l.nodes {
		if n.role == RoleManager {
			out = append(out, n.addr)
		}
	}
	return out
}

// NodeIDs is the managers' engine: the nodes of the swarm.
func (l *swarmLab) NodeIDs(context.Context) ([]string, error) {
	l.nodesMu.Lock()
	defer l.nodesMu.Unlock()
	return slices.Clone(l.listed), nil
}

// add makes node name with role, in cluster; its services start with
// start.
func (l *swarmLab) add(name, role, cluster string, ca *testCA) *labNode {
	t := l.t
	i := len(l.nodes) + 1
	n := &labNode{name: name, role: role, addr: netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)})}
	n.swarmDir = ca.node(t, cluster, role, name, certOpts{})
	n.meshAddr = fmt.Sprintf("10.99.0.%d:%d", i, mesh.DefaultPort)
	l.fresh(n, name)
	l.nodes = append(l.nodes, n)
	l.nodesMu.Lock()
	l.listed = append(l.listed, name)
	l.nodesMu.Unlock()
	return n
}

// fresh gives n an empty state directory: an empty keyring, and a mesh
// member named identity at n's address.
func (l *swarmLab) fresh(n *labNode, identity string) {
	t := l.t
	var err error
	if n.keys, _, err = mesh.LoadKeyring(t.TempDir(), ""); err != nil {
		t.Fatal(err)
	}
	tr, err := l.net.NewTransport(n.meshAddr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := meshtest.Config(identity)
	cfg.Transport = tr
	cfg.Keyring = n.keys
	if n.mesh, err = mesh.New(cfg); err != nil {
		t.Fatal(err)
	}
	m := n.mesh
	t.Cleanup(func() { _ = m.Close() })
}

// start runs the node's key service, and starts its mesh once it has a
// key, joining every other node.
func (l *swarmLab) start(n *labNode) {
	t := l.t
	var err error
	n.svc, err = New(Config{
		SwarmDir: n.swarmDir, Port: l.port, BindAddr: n.addr.String(),
		Keyring: n.keys, Mesh: n.mesh,
		Underlay: func() (netip.Addr, []netip.Addr) {
			l.nodesMu.Lock()
			apart := l.apart
			l.nodesMu.Unlock()
			if apart && n.role == RoleManager {
				return n.addr, []netip.Addr{n.addr}
			}
			return n.addr, l.managers()
		},
		Nodes:     l,
		Spread:    3 * time.Second,
		SyncEvery: 300 * time.Millisecond,
		Logger:    testLogger(t, n.name),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	n.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(n.stop)
	wg.Add(2)
	go func() { defer wg.Done(); n.svc.Run(ctx) }()
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			return
		case <-n.keys.Ready():
		}
		var peers []string
		for _, o := range l.nodes {
			if o != n {
				peers = append(peers, o.meshAddr)
			}
		}
		if err := n.mesh.Start(n.meshAddr, peers); err != nil {
			t.Error(err)
		}
	}()
}

func testLogger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("WEFT_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

// converged waits until every node of want has one key, the same, as
// primary, and sees every node of want alive.
func (l *swarmLab) converged(within time.Duration, want ...*labNode) mesh.RingKey {
	var k mesh.RingKey
	meshtest.WaitFor(l.t, within, "one key everywhere and every member alive", func() error {
		first := want[0].keys.Ring()
		if len(first.Keys) != 1 {
			return fmt.Errorf("%s holds %d keys", want[0].name, len(first.Keys))
		}
		k = first.Keys[0]
		for _, n := range want {
			r := n.keys.Ring()
			if len(r.Keys) != 1 || r.Keys[0].ID != k.ID || !bytes.Equal(r.Primary, k.Secret) {
				return fmt.Errorf("%s holds %v, %s holds %v", want[0].name, k.ID, n.name, ids(r))
			}
			alive := 0
			for _, m := range n.mesh.Members() {
				if m.State == mesh.StateAlive {
					alive++
				}
			}
			if alive != len(want) {
				return fmt.Errorf("%s sees %d alive of %d", n.name, alive, len(want))
			}
		}
		return nil
	})
	return k
}

func ids(r mesh.Ring) []string {
	var out []string
	for _, k := range r.Keys {
		out = append(out, k.ID.String())
	}
	return out
}

// TestSwarmKeysTheMesh: with no key set anywhere, a manager makes the
// key, workers fetch it over mutual TLS, and their meshes come up keyed;
// a rotation reaches everyone and the old key goes; a node of another
// swarm never gets a key; a node removed from the swarm is refused and
// rotated out.
func TestSwarmKeysTheMesh(t *testing.T) {
	l := newSwarmLab(t)
	m1 := l.add("m1", RoleManager, "c1", l.ca)
	w1 := l.add("w1", RoleWorker, "c1", l.ca)
	w2 := l.add("w2", RoleWorker, "c1", l.ca)
	// The same cluster ID on a CA of its own: no key.
	x := l.add("x", RoleWorker, "c1", newCA(t))
	start := time.Now()
	for _, n := range l.nodes {
		l.start(n)
	}
	k1 := l.converged(20*time.Second, m1, w1, w2)
	t.Logf("FIGURE keyed from nothing: 3 nodes share generation %s and see each other in %s", k1.ID, time.Since(start).Round(time.Millisecond))
	if k1.ID.Gen < uint64(start.UnixMilli()) || k1.ID.Origin != "m1" {
		t.Fatalf("first key %s, want a generation from the clock (%d on) by m1", k1.ID, start.UnixMilli())
	}
	if !x.keys.Empty() {
		t.Fatal("a node of another swarm got a key")
	}
	if a := m1.svc.Authenticated(); !slices.Contains(a, w1.addr) || slices.Contains(a, x.addr) {
		t.Fatalf("manager's authenticated addresses %v", a)
	}
	if _, err := w1.svc.Rotate(context.Background()); err == nil {
		t.Fatal("a worker made a key")
	}

	// Rotation on request: everyone ends on the new key only.
	start = time.Now()
	id, err := m1.svc.Rotate(context.Background())
	if err != nil || id.Compare(k1.ID) <= 0 {
		t.Fatalf("rotate: %v, %v", id, err)
	}
	k2 := l.converged(20*time.Second, m1, w1, w2)
	if k2.ID != id {
		t.Fatalf("converged on %s, want %s", k2.ID, id)
	}
	t.Logf("FIGURE rotation: every member on generation %s alone, old key dropped, in %s", id, time.Since(start).Round(time.Millisecond))

	// w2 is removed from the swarm: the manager refuses it and rotates;
	// the others move on without it, and it drops out of their mesh.
	l.nodesMu.Lock()
	l.listed = slices.DeleteFunc(l.listed, func(s string) bool { return s == "w2" })
	l.nodesMu.Unlock()
	meshtest.WaitFor(t, 20*time.Second, "a rotation after w2 left", func() error {
		r := m1.keys.Ring()
		if r.Keys[len(r.Keys)-1].ID.Compare(k2.ID) <= 0 {
			return fmt.Errorf("m1 holds %v", ids(r))
		}
		return nil
	})
	meshtest.WaitFor(t, 30*time.Second, "w2 out of the mesh", func() error {
		for _, n := range []*labNode{m1, w1} {
			r := n.keys.Ring()
			if len(r.Keys) != 1 || r.Keys[0].ID.Compare(k2.ID) <= 0 {
				return fmt.Errorf("%s holds %v", n.name, ids(r))
			}
			for _, m := range n.mesh.Members() {
				if m.Name == "w2" && m.State == mesh.StateAlive {
					return fmt.Errorf("%s sees w2 alive", n.name)
				}
			}
		}
		if w2.keys.Ring().Keys[0].ID.Compare(k2.ID) > 0 {
			return fmt.Errorf("w2, removed, got the new key")
		}
		return nil
	})
}

// TestManagerLosesItsKeyring: the swarm's only manager loses its state
// directory after a rotation (the members' floor is above the first
// generation) and comes back with an empty keyring and a new mesh
// identity. No other manager has a key, so it makes one again; the
// members take it and everyone ends on it, alive together. (Generations
// counted from 1 again made the members keep their key: the manager alone
// on one side of the mesh for good, found by the soak.)
func TestManagerLosesItsKeyring(t *testing.T) {
	l := newSwarmLab(t)
	m := l.add("m1", RoleManager, "c1", l.ca)
	w1 := l.add("w1", RoleWorker, "c1", l.ca)
	w2 := l.add("w2", RoleWorker, "c1", l.ca)
	for _, n := range l.nodes {
		l.start(n)
	}
	l.converged(20*time.Second, m, w1, w2)
	if _, err := m.svc.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := l.converged(20*time.Second, m, w1, w2)
	if f := w1.keys.Ring().Floor; f != before.ID {
		t.Fatalf("w1's floor %s, want the rotated key's %s", f, before.ID)
	}

	m.stop()
	if err := m.mesh.Close(); err != nil {
		t.Fatal(err)
	}
	l.fresh(m, "m1-again")
	start := time.Now()
	l.start(m)
	after := l.converged(30*time.Second, m, w1, w2)
	if after.ID.Compare(before.ID) <= 0 || bytes.Equal(after.Secret, before.Secret) {
		t.Fatalf("converged on %s, want a key made again after %s", after.ID, before.ID)
	}
	t.Logf("FIGURE manager back with an empty keyring: every member on its new key %s, alive together, in %s", after.ID, time.Since(start).Round(time.Millisecond))
}

// TestConcurrentBootstrap: two managers that start apart, each making
// generation 1, converge on one key once they reach each other.
func TestConcurrentBootstrap(t *testing.T) {
	l := newSwarmLab(t)
	a := l.add("ma", RoleManager, "c1", l.ca)
	b := l.add("mb", RoleManager, "c1", l.ca)
	w := l.add("w", RoleWorker, "c1", l.ca)
	l.apart = true
	for _, n := range l.nodes {
		l.start(n)
	}
	meshtest.WaitFor(t, 10*time.Second, "both managers keyed", func() error {
		if a.keys.Empty() || b.keys.Empty() {
			return fmt.Errorf("a manager has no key yet")
		}
		return nil
	})
	ka, kb := a.keys.Ring().Keys[0], b.keys.Ring().Keys[0]
	if ka.ID == kb.ID {
		t.Fatalf("both managers hold %s: the test did not make two keys", ka.ID)
	}
	l.nodesMu.Lock()
	l.apart = false
	l.nodesMu.Unlock()
	k := l.converged(30*time.Second, a, b, w)
	if k.ID != max2(ka.ID, kb.ID) {
		t.Fatalf("converged on %s, want the greater of %s and %s", k.ID, ka.ID, kb.ID)
	}
}

func max2(a, b mesh.KeyID) mesh.KeyID {
	if a.Compare(b) > 0 {
		return a
	}
	return b
}
