package driver

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/antispoof"
	"github.com/weftnet/weft/catalog"
)

// fakeSources behaves as antispoof.Table does: nothing changes before the
// first Sync, a Sync without pruning keeps what it holds.
type fakeSources struct {
	mu            sync.Mutex
	built         bool
	local, remote map[string]bool
	flood         []uint32 // the last Sync's, sorted
	calls         map[string]int
}

func newFakeSources() *fakeSources {
	return &fakeSources{calls: map[string]int{}}
}

func (f *fakeSources) Change(add, del antispoof.Sources) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["Change"]++
	if !f.built {
		return antispoof.ErrNotBuilt
	}
	for _, e := range del.Local {
		delete(f.local, e.String())
	}
	for _, e := range del.Remote {
		delete(f.remote, e.String())
	}
	for _, e := range add.Local {
		f.local[e.String()] = true
	}
	for _, e := range add.Remote {
		f.remote[e.String()] = true
	}
	return nil
}

func (f *fakeSources) Sync(want antispoof.Sources, prune bool) (antispoof.Diff, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["Sync"]++
	var d antispoof.Diff
	wl, wr := map[string]bool{}, map[string]bool{}
	for _, e := range want.Local {
		wl[e.String()] = true
	}
	for _, e := range want.Remote {
		wr[e.String()] = true
	}
	if !prune {
		for k := range f.local {
			wl[k] = true
		}
		for k := range f.remote {
			wr[k] = true
		}
	}
	d.LocalAdded, d.LocalRemoved = diffCount(wl, f.local)
	d.RemoteAdded, d.RemoteRemoved = diffCount(wr, f.remote)
	f.built, f.local, f.remote = true, wl, wr
	f.flood = slices.Sorted(slices.Values(want.Flood))
	return d, nil
}

func diffCount(want, have map[string]bool) (add, del int) {
	for k := range want {
		if !have[k] {
			add++
		}
	}
	for k := range have {
		if !want[k] {
			del++
		}
	}
	return add, del
}

func (f *fakeSources) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["Remove"]++
	f.built, f.local, f.remote = false, nil, nil
	return nil
}

// held returns the sources held, local then remote, sorted; nil when the
// table does not exist.
func (f *fakeSources) held() (local, remote []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.built {
		return nil, nil
	}
	for k := range f.local {
		local = append(local, k)
	}
	for k := range f.remote {
		remote = append(remote, k)
	}
	slices.Sort(local)
	slices.Sort(remote)
	return local, remote
}

func (f *fakeSources) count(m string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[m]
}

func expectSources(t *testing.T, f *fakeSources, local, remote []string) {
	t.Helper()
	gl, gr := f.held()
	slices.Sort(local)
	slices.Sort(remote)
	if !slices.Equal(gl, local) || !slices.Equal(gr, remote) {
		t.Fatalf("sources held:\n  local  %s\n  remote %s\nwant:\n  local  %s\n  remote %s",
			strings.Join(gl, ", "), strings.Join(gr, ", "), strings.Join(local, ", "), strings.Join(remote, ", "))
	}
}

// The table of sources follows the local endpoints and the holders of the
// remote addresses, per change, without whole-table passes; the repair
// makes it whole, and it goes with the last network.
func TestSourcesFollowEndpoints(t *testing.T) {
	dp, cat, src := newFakePlane(), newFakeCatalog(), newFakeSources()
	cfg := DefaultConfig()
	cfg.Sources = src
	d, err := New(cfg, dp, cat, &fakeUnderlay{mtu: 1500, changed: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	// An endpoint before the first repair: the table is not made yet,
	// the repair makes it with the endpoint.
	if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: ep1,
		Interface: &network.EndpointInterface{Address: "10.10.0.5/24", MacAddress: "02:42:0a:0a:00:05"}}); err != nil {
		t.Fatal(err)
	}
	d.repair(false)
	mine := "vni 300 02:42:0a:0a:00:05 10.10.0.5"
	expectSources(t, src, []string{mine}, nil)
	syncs := src.count("Sync")

	// Remote changes: the holder's source in, the former holder's out.
	r1 := rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")
	moved := rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.3")
	other := rec("h2", "r2", 301, "10.11.0.21", "02:77:0a:0b:00:15", "198.18.0.2")
	cat.events.Publish(catalog.Event{Kind: catalog.Added, Record: r1}, catalog.Event{Kind: catalog.Added, Record: other})
	d.apply(d.sub.Take())
	expectSources(t, src, []string{mine}, []string{"vni 300 02:77:0a:0a:00:14 10.10.0.20 via 198.18.0.2"})
	cat.events.Publish(catalog.Event{Kind: catalog.Updated, Old: r1, Record: moved})
	d.apply(d.sub.Take())
	expectSources(t, src, []string{mine}, []string{"vni 300 02:77:0a:0a:00:14 10.10.0.20 via 198.18.0.3"})
	// A second claim on the address: only the holder (the earlier claim)
	// is let in, before and after the second claim goes.
	nu := rec("h4", "new", 300, "10.10.0.20", "02:42:0a:0a:00:99", "198.18.0.4")
	cat.events.Publish(catalog.Event{Kind: catalog.Added, Record: nu})
	d.apply(d.sub.Take())
	expectSources(t, src, []string{mine}, []string{"vni 300 02:77:0a:0a:00:14 10.10.0.20 via 198.18.0.3"})
	cat.events.Publish(catalog.Event{Kind: catalog.Removed, Record: nu})
	d.apply(d.sub.Take())
	expectSources(t, src, []string{mine}, []string{"vni 300 02:77:0a:0a:00:14 10.10.0.20 via 198.18.0.3"})

	// A second local endpoint, then the first deleted.
	if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: ep2,
		Interface: &network.EndpointInterface{Address: "10.10.0.6/24"}}); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: ep1}); err != nil {
		t.Fatal(err)
	}
	second := "vni 300 02:77:0a:0a:00:06 10.10.0.6" // the MAC weft chose
	expectSources(t, src, []string{second}, []string{"vni 300 02:77:0a:0a:00:14 10.10.0.20 via 198.18.0.3"})
	if n := src.count("Sync") - syncs; n != 0 {
		t.Fatalf("%d whole-table passes for single changes", n)
	}

	// Drift: a stray source and a missing one. Until the catalog is
	// complete the repair only adds; then it prunes.
	src.mu.Lock()
	src.remote["vni 300 02:00:00:00:00:66 10.10.0.66 via 198.18.0.9"] = true
	delete(src.local, second)
	src.mu.Unlock()
	cat.mu.Lock()
	cat.synced = false
	cat.mu.Unlock()
	d.repair(false)
	expectSources(t, src, []string{second}, []string{"vni 300 02:00:00:00:00:66 10.10.0.66 via 198.18.0.9", "vni 300 02:77:0a:0a:00:14 10.10.0.20 via 198.18.0.3"})
	cat.mu.Lock()
	cat.synced = true
	cat.mu.Unlock()
	d.repair(false)
	expectSources(t, src, []string{second}, []string{"vni 300 02:77:0a:0a:00:14 10.10.0.20 via 198.18.0.3"})

	// The last network goes: its sources at once, the table with the
	// next repair.
	if err := d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	expectSources(t, src, nil, []string{"vni 300 02:77:0a:0a:00:14 10.10.0.20 via 198.18.0.3"})
	d.repair(false)
	if l, r := src.held(); l != nil || r != nil || src.count("Remove") != 1 {
		t.Fatalf("after the last network: %v %v, %d removals; want no table", l, r, src.count("Remove"))
	}
	d.repair(false)
	if n := src.count("Remove"); n != 1 {
		t.Fatalf("%d removals of a table already gone", n)
	}
}
