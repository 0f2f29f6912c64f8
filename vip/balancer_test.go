package vip

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/engine"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/mesh/meshtest"
)

// fakeEngine is an engine whose answers the test sets. Follow resyncs at
// once, then on every event or Resync the test sends.
type fakeEngine struct {
	mu         sync.Mutex
	manager    bool
	services   map[string]engine.NetworkService // of network n1
	swarm      []engine.Service
	tasks      []engine.Task
	containers map[string]engine.Container // running, by ID
	events     chan engine.Event
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{containers: map[string]engine.Container{}, events: make(chan engine.Event, 16)}
}

func (f *fakeEngine) set(fn func(f *fakeEngine)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
	f.events <- engine.Event{Type: "service", Action: "update"} // makes the balancer read again
}

func (f *fakeEngine) Follow(ctx context.Context, fl engine.Follower) {
	fl.Resync(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-f.events:
			fl.Handle(ev)
		}
	}
}

func (f *fakeEngine) Info(context.Context) (engine.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var i engine.Info
	i.Swarm.ControlAvailable = f.manager
	return i, nil
}

func (f *fakeEngine) PluginNames(context.Context, string) ([]string, error) {
	return []string{"weft:latest"}, nil
}

func (f *fakeEngine) Networks(context.Context, []string) ([]engine.Network, error) {
	n := engine.Network{ID: "n1", Driver: "weft:latest"}
	n.IPAM.Config = append(n.IPAM.Config, struct{ Subnet, Gateway string }{"10.0.0.0/24", ""})
	return []engine.Network{n}, nil
}

func (f *fakeEngine) NetworkServices(context.Context, string) (map[string]engine.NetworkService, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.services, nil
}

func (f *fakeEngine) Services(context.Context) ([]engine.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.swarm, nil
}

func (f *fakeEngine) Tasks(context.Context, map[string][]string) ([]engine.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tasks, nil
}

func (f *fakeEngine) Containers(context.Context) ([]engine.ContainerSummary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.ContainerSummary
	for id := range f.containers {
		var s engine.ContainerSummary
		s.ID = id
		s.NetworkSettings.Networks = map[string]struct{ NetworkID string }{"net": {NetworkID: "n1"}}
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeEngine) Inspect(_ context.Context, id string) (engine.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return c, fmt.Errorf("no such container %s", id)
	}
	return c, nil
}

func (f *fakeEngine) PID(context.Context) (int, error) { return 0, nil }

func (f *fakeEngine) addContainer(id, key string) {
	var c engine.Container
	c.ID = id
	c.State.Running = true
	c.NetworkSettings.SandboxKey = key
	c.NetworkSettings.Networks = map[string]engine.EndpointSettings{"net": {NetworkID: "n1"}}
	f.mu.Lock()
	f.containers[id] = c
	f.mu.Unlock()
	f.events <- engine.Event{Type: "container", Action: "start", Actor: struct {
		ID         string
		Attributes map[string]string
	}{ID: id}}
}

// fakeKernel records what each sandbox's table says.
type fakeKernel struct {
	mu     sync.Mutex
	tables map[string]Spec
	sweeps map[string][]Spec
	writes int
}

func (k *fakeKernel) Apply(path string, spec Spec) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if old, ok := k.tables[path]; ok && old.Marker() == spec.Marker() {
		return false, nil
	}
	k.tables[path] = spec
	k.writes++
	return true, nil
}

func (k *fakeKernel) Sweep(path string, spec Spec) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sweeps[path] = append(k.sweeps[path], spec)
	return 0, nil
}

func (k *fakeKernel) Mounted(string) bool { return true }

func (k *fakeKernel) sweepCount(path string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.sweeps[path])
}

func (k *fakeKernel) table(path string) (Spec, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.tables[path]
	return s, ok
}

// host is one host of the test: its mesh, catalog, engine and kernel.
type host struct {
	cat *catalog.Catalog
	eng *fakeEngine
	k   *fakeKernel
}

// gatedStore is a mesh whose Synced the test decides.
type gatedStore struct {
	Store
	synced atomic.Bool
}

func (g *gatedStore) Synced() bool { return g.synced.Load() }

func newHosts(t *testing.T, n int) []*host {
	t.Helper()
	return newGatedHosts(t, n, nil)
}

// newGatedHosts starts n hosts; host i's mesh reports itself synced only
// once gates[i] is set, when gates[i] is not nil.
func newGatedHosts(t *testing.T, n int, gates []*gatedStore) []*host {
	t.Helper()
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("h%d", i+1))
	}
	c := meshtest.New(t, names, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var out []*host
	for j, m := range c.Members {
		h := &host{cat: catalog.New(catalog.Config{Store: m, NamesWait: time.Hour}), eng: newFakeEngine(), k: &fakeKernel{tables: map[string]Spec{}, sweeps: map[string][]Spec{}}}
		// Each host's own mesh address: the catalog takes no record
		// whose VTEP is not its host's.
		vtep, _, _ := strings.Cut(c.Addr(j), ":")
		h.cat.SetVTEP(vtep)
		h.cat.NamesReady()
		cfg := DefaultConfig()
		cfg.Engine, cfg.Store, cfg.Catalog, cfg.Kernel = h.eng, m, h.cat.Subscribe(), h.k
		cfg.SyncWait = time.Second
		if i := len(out); i < len(gates) && gates[i] != nil {
			gates[i].Store = m
			cfg.Store = gates[i]
			cfg.SyncWait = time.Hour
		}
		b := New(cfg)
		wg.Add(2)
		go func() { defer wg.Done(); h.cat.Run(ctx) }()
		go func() { defer wg.Done(); b.Run(ctx) }()
		out = append(out, h)
	}
	return out
}

// waitTable waits until the table of path says want (as VIP -> backends).
func waitTable(t *testing.T, k *fakeKernel, path string, want map[string][]netip.Addr) {
	t.Helper()
	meshtest.WaitFor(t, 10*time.Second, "table of "+path, func() error {
		s, ok := k.table(path)
		if !ok {
			return fmt.Errorf("never written")
		}
		got := map[string][]netip.Addr{}
		for _, v := range s.VIPs {
			got[v.Addr.String()] = v.Backends
		}
		if len(got) != len(want) {
			return fmt.Errorf("says %v, want %v", got, want)
		}
		for a, bs := range want {
			if !slices.Equal(got[a], bs) {
				return fmt.Errorf("says %v, want %v", got, want)
			}
		}
		return nil
	})
}

func TestBalancerAcrossHosts(t *testing.T) {
	hs := newHosts(t, 2)
	h1, h2 := hs[0], hs[1]
	// h1 runs a task of web; its engine knows the VIP. h2 runs a client
	// whose engine has not learnt the service: the VIP reaches it
	// through the mesh.
	h1.cat.SetLocal(catalog.Record{Network: "n1", VNI: 7, Endpoint: "e1", IP: "10.0.0.3", MAC: "02:00:00:00:00:03"})
	h1.cat.SetNames("e1", []string{"web.1", "web", "tasks.web"})
	h1.eng.set(func(f *fakeEngine) {
		f.services = map[string]engine.NetworkService{"web": {VIP: "10.0.0.2", Tasks: []engine.NetworkTask{{EndpointID: "e1", EndpointIP: "10.0.0.3"}}}}
	})
	h2.eng.addContainer("c2", "/ns/c2")
	waitTable(t, h2.k, "/ns/c2", map[string][]netip.Addr{"10.0.0.2": addrs("10.0.0.3")})
	// A new sandbox's flows are swept once (some may predate its table).
	meshtest.WaitFor(t, 10*time.Second, "the first sweep", func() error {
		if n := h2.k.sweepCount("/ns/c2"); n != 1 {
			return fmt.Errorf("%d sweeps", n)
		}
		return nil
	})

	// A second task on h2 itself, names not learnt yet: its engine says
	// it is web's.
	h2.cat.SetLocal(catalog.Record{Network: "n1", VNI: 7, Endpoint: "e2", IP: "10.0.0.4", MAC: "02:00:00:00:00:04"})
	h2.eng.set(func(f *fakeEngine) {
		f.services = map[string]engine.NetworkService{"web": {VIP: "10.0.0.2", Tasks: []engine.NetworkTask{{EndpointID: "e2"}}}}
	})
	waitTable(t, h2.k, "/ns/c2", map[string][]netip.Addr{"10.0.0.2": addrs("10.0.0.3", "10.0.0.4")})
	if n := h2.k.sweepCount("/ns/c2"); n != 1 {
		t.Fatalf("a backend added swept the flows again (%d sweeps)", n)
	}

	// A manager says h1's task is being stopped: it drains at once.
	h2.eng.set(func(f *fakeEngine) {
		f.manager = true
		var s engine.Service
		s.ID, s.Spec.Name = "s1", "web"
		f.swarm = []engine.Service{s}
		var task engine.Task
		task.ServiceID, task.DesiredState, task.Status.State = "s1", "shutdown", "running"
		task.NetworksAttachments = append(task.NetworksAttachments, struct {
			Network   struct{ ID string }
			Addresses []string
		}{Network: struct{ ID string }{"n1"}, Addresses: []string{"10.0.0.3/24"}})
		f.tasks = []engine.Task{task}
	})
	waitTable(t, h2.k, "/ns/c2", map[string][]netip.Addr{"10.0.0.2": addrs("10.0.0.4")})
	meshtest.WaitFor(t, 10*time.Second, "a sweep for the drained backend", func() error {
		if n := h2.k.sweepCount("/ns/c2"); n != 2 {
			return fmt.Errorf("%d sweeps, want 2", n)
		}
		return nil
	})

	// Both tasks go: the manager still says the service has its VIP, with
	// no backend (connections refused); then the service goes and nobody
	// claims the VIP: the table goes.
	h1.cat.RemoveLocal("e1")
	h2.cat.RemoveLocal("e2")
	h2.eng.set(func(f *fakeEngine) {
		f.services, f.tasks = nil, nil
		f.swarm[0].Endpoint.VirtualIPs = append(f.swarm[0].Endpoint.VirtualIPs, struct{ NetworkID, Addr string }{"n1", "10.0.0.2/24"})
	})
	waitTable(t, h2.k, "/ns/c2", map[string][]netip.Addr{"10.0.0.2": nil})
	h2.eng.set(func(f *fakeEngine) { f.swarm = nil })
	waitTable(t, h2.k, "/ns/c2", map[string][]netip.Addr{})
}

func TestBalancerWritesNothingUntilTheMeshHasSynced(t *testing.T) {
	gate := &gatedStore{}
	hs := newGatedHosts(t, 2, []*gatedStore{nil, gate})
	h1, h2 := hs[0], hs[1]
	h1.cat.SetLocal(catalog.Record{Network: "n1", VNI: 7, Endpoint: "e1", IP: "10.0.0.3", MAC: "02:00:00:00:00:03"})
	h1.cat.SetNames("e1", []string{"tasks.web"})
	h1.eng.set(func(f *fakeEngine) {
		f.services = map[string]engine.NetworkService{"web": {VIP: "10.0.0.2", Tasks: []engine.NetworkTask{{EndpointID: "e1"}}}}
	})
	h2.eng.addContainer("c2", "/ns/c2")
	// Everything h2 needs reaches it; still it writes nothing while its
	// mesh has not synced (a restarted plugin's view may lack records
	// that are merely in flight).
	meshtest.WaitFor(t, 10*time.Second, "the claim and the record on h2", func() error {
		if len(h2.cat.Remote()) == 0 || len(gate.Store.(interface{ Entries(string) []mesh.Entry }).Entries(Table)) == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, ok := h2.k.table("/ns/c2"); ok {
			t.Fatal("a table written before the mesh synced")
		}
	}
	gate.synced.Store(true)
	waitTable(t, h2.k, "/ns/c2", map[string][]netip.Addr{"10.0.0.2": addrs("10.0.0.3")})
}
