package driver

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
)

func rec(host, ep string, vni uint32, ip, mac, vtep string) catalog.Record {
	return catalog.Record{Network: "n", VNI: vni, Endpoint: ep, IP: ip, MAC: mac, VTEP: vtep, Host: host}
}

// runDriver runs d until the test ends.
func runDriver(t *testing.T, d *Driver) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitTable waits until a device's entries are want.
func waitTable(t *testing.T, dp *fakePlane, vni uint32, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := dp.table(vni)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("VNI %d entries:\n  %s\nwant:\n  %s", vni, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Each catalog change costs one entry's writes, not a whole-table pass;
// records of networks this host does not have program nothing, and are
// there when the network comes.
func TestEventsWriteOneEntryEach(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	// Driven by hand: apply is what Run does with each batch of events.
	d.repair(false)
	dp.mu.Lock()
	before := dp.calls["SetRemotes"]
	dp.mu.Unlock()

	cat.events.Publish(
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")},
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "r2", 301, "10.11.0.21", "02:77:0a:0b:00:15", "198.18.0.2")},
		catalog.Event{Kind: catalog.Added, Record: rec("h3", "bad", 300, "nonsense", "02:77:0a:0a:00:16", "198.18.0.3")},
		catalog.Event{Kind: catalog.Added, Local: true, Record: rec("h1", "mine", 300, "10.10.0.5", "02:77:0a:0a:00:05", "198.18.0.1")},
	)
	d.apply(d.sub.Take())
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
	if _, ok := dp.networks[301]; ok {
		t.Fatal("a device was made for a network this host does not have")
	}
	// Moved to another host: the new entry goes in, the old FDB entry out.
	cat.events.Publish(catalog.Event{Kind: catalog.Updated,
		Old:    rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2"),
		Record: rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.3")})
	d.apply(d.sub.Take())
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.3")
	// New MAC for the same address (a task replaced): the stale FDB entry
	// goes.
	cat.events.Publish(catalog.Event{Kind: catalog.Updated,
		Old:    rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.3"),
		Record: rec("h2", "r1", 300, "10.10.0.20", "02:42:0a:0a:00:14", "198.18.0.3")})
	d.apply(d.sub.Take())
	waitTable(t, dp, 300, "10.10.0.20 02:42:0a:0a:00:14 198.18.0.3")
	cat.events.Publish(catalog.Event{Kind: catalog.Removed, Record: rec("h2", "r1", 300, "10.10.0.20", "02:42:0a:0a:00:14", "198.18.0.3")})
	d.apply(d.sub.Take())
	waitTable(t, dp, 300)
	dp.mu.Lock()
	after := dp.calls["SetRemotes"]
	dp.mu.Unlock()
	if after != before {
		t.Fatalf("%d whole-table passes for single changes", after-before)
	}

	// The other network comes: its record, held meanwhile, is programmed.
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netB, Options: map[string]any{genericKey: map[string]any{OptVNI: "301"}},
		IPv4Data: []*network.IPAMData{{Pool: "10.11.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	d.repair(false)
	waitTable(t, dp, 301, "10.11.0.21 02:77:0a:0b:00:15 198.18.0.2")
}

// Two records may claim one address for a moment (swarm gives a task's
// address to a new task while the old record is still around, or a member
// forges a claim): the earlier holds it, alone in the kernel, and removing
// either claim leaves the address with the other.
func TestTwoClaimsOnOneAddress(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	runDriver(t, d)
	old := rec("h2", "old", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")
	nu := rec("h3", "new", 300, "10.10.0.20", "02:42:0a:0a:00:99", "198.18.0.3")
	cat.events.Publish(catalog.Event{Kind: catalog.Added, Record: old}, catalog.Event{Kind: catalog.Added, Record: nu})
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
	cat.events.Publish(catalog.Event{Kind: catalog.Removed, Record: nu})
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
	cat.events.Publish(catalog.Event{Kind: catalog.Removed, Record: old})
	waitTable(t, dp, 300)

	// The holder removed first: the address goes to the claim left.
	cat.events.Publish(catalog.Event{Kind: catalog.Added, Record: old}, catalog.Event{Kind: catalog.Added, Record: nu})
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
	cat.events.Publish(catalog.Event{Kind: catalog.Removed, Record: old})
	waitTable(t, dp, 300, "10.10.0.20 02:42:0a:0a:00:99 198.18.0.3")
}

// down returns r marked as the catalog marks the records of a host whose
// weft is down.
func down(r catalog.Record, d bool) catalog.Record {
	r.Down = d
	return r
}

// A live record beats the record of a host whose weft is down, whichever
// came last, in the per-change path and in the repair pass alike: swarm may
// hand a silent host's address to a new task elsewhere. The kernel never
// points the address at the down host's claim meanwhile. Once the host is
// back its old claim stays behind until its record changes.
func TestLiveBeatsDown(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	d.repair(false)
	live := rec("h3", "new", 300, "10.10.0.20", "02:42:0a:0a:00:99", "198.18.0.3")
	stale := rec("h2", "old", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")
	liveEntry := "10.10.0.20 02:42:0a:0a:00:99 198.18.0.3"
	step := func(what string, want []string, evs ...catalog.Event) {
		t.Helper()
		cat.events.Publish(evs...)
		d.apply(d.sub.Take())
		if got := dp.table(300); !slices.Equal(got, want) {
			t.Fatalf("%s: entries %q, want %q", what, got, want)
		}
		// The repair pass agrees: it finds nothing to repair.
		d.repair(true)
		dp.mu.Lock()
		rep := dp.repaired
		dp.mu.Unlock()
		if rep != (dataplane.Repair{}) {
			t.Fatalf("%s: the repair pass changed %+v", what, rep)
		}
	}
	dp.mu.Lock()
	writes := dp.calls["SetRemote"]
	dp.mu.Unlock()

	// The live claim first, then the down host's (say, in a restarted
	// catalog's first snapshot, where order means nothing).
	step("live then down", []string{liveEntry},
		catalog.Event{Kind: catalog.Added, Record: live},
		catalog.Event{Kind: catalog.Added, Record: down(stale, true)})
	dp.mu.Lock()
	if n := dp.calls["SetRemote"] - writes; n != 1 {
		t.Fatalf("%d entry writes, want 1 (the live claim's)", n)
	}
	dp.mu.Unlock()
	// Its host back: the claim it made before stays behind.
	step("down host back", []string{liveEntry},
		catalog.Event{Kind: catalog.Updated, Old: down(stale, true), Record: stale})
	// It publishes a changed record: a new claim, later than the live
	// one, which keeps the address.
	moved := stale
	moved.MAC = "02:77:0a:0a:00:15"
	step("new claim of the returned host", []string{liveEntry},
		catalog.Event{Kind: catalog.Updated, Old: stale, Record: moved})
	step("it goes", []string{liveEntry},
		catalog.Event{Kind: catalog.Removed, Record: moved})

	// The holder's host goes down while a newer live claim exists: the
	// live one takes the address over, and keeps it when the host is back.
	other := rec("h4", "other", 300, "10.10.0.20", "02:66:0a:0a:00:14", "198.18.0.4")
	step("newer live claim", []string{liveEntry},
		catalog.Event{Kind: catalog.Added, Record: other})
	step("the holder's host down", []string{"10.10.0.20 02:66:0a:0a:00:14 198.18.0.4"},
		catalog.Event{Kind: catalog.Updated, Old: live, Record: down(live, true)})
	step("its host back", []string{"10.10.0.20 02:66:0a:0a:00:14 198.18.0.4"},
		catalog.Event{Kind: catalog.Updated, Old: down(live, true), Record: live})
	// A newer claim of a host that is down: the live holder keeps it, and
	// so does the claim left when the returned one goes.
	third := rec("h5", "third", 300, "10.10.0.20", "02:55:0a:0a:00:14", "198.18.0.5")
	step("newer down claim", []string{"10.10.0.20 02:66:0a:0a:00:14 198.18.0.4"},
		catalog.Event{Kind: catalog.Added, Record: down(third, true)})
	step("live claim gone", []string{"10.10.0.20 02:66:0a:0a:00:14 198.18.0.4"},
		catalog.Event{Kind: catalog.Removed, Record: live})
	// The down claim is the only one left: it holds the address.
	step("returned claim gone", []string{"10.10.0.20 02:55:0a:0a:00:14 198.18.0.5"},
		catalog.Event{Kind: catalog.Removed, Record: other})
}

// The repair pass puts back what was lost from the kernel, and removes
// what nothing wants; before the catalog is complete it only adds.
func TestRepair(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	cat.synced = false
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	// Left in the kernel by the previous run.
	if err := dp.SetRemote(300, dataplane.RemoteEndpoint{IP: []byte{10, 10, 0, 30}, MAC: []byte{2, 0x77, 10, 10, 0, 30}, VTEP: []byte{198, 18, 0, 2}}); err != nil {
		t.Fatal(err)
	}
	cat.events.Publish(catalog.Event{Kind: catalog.Added, Record: rec("h3", "r", 300, "10.10.0.21", "02:77:0a:0a:00:15", "198.18.0.3")})
	d.apply(d.sub.Take())
	d.repair(false)
	waitTable(t, dp, 300, "10.10.0.21 02:77:0a:0a:00:15 198.18.0.3", "10.10.0.30 02:77:0a:0a:00:1e 198.18.0.2")
	cat.mu.Lock()
	cat.synced = true
	cat.mu.Unlock()
	d.repair(true)
	waitTable(t, dp, 300, "10.10.0.21 02:77:0a:0a:00:15 198.18.0.3")
	// Drift: an entry deleted behind weft's back comes back.
	if err := dp.DeleteRemote(300, dataplane.RemoteEndpoint{IP: []byte{10, 10, 0, 21}}); err != nil {
		t.Fatal(err)
	}
	d.repair(true)
	waitTable(t, dp, 300, "10.10.0.21 02:77:0a:0a:00:15 198.18.0.3")
}

// A network without an MTU of its own follows the underlay's path MTU;
// one with follows nothing.
func TestMTUFollowsTheUnderlay(t *testing.T) {
	dp, cat := newFakePlane(), newFakeCatalog()
	ul := &fakeUnderlay{mtu: 9000, changed: make(chan struct{}, 1)}
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	d, err := New(cfg, dp, cat, ul)
	if err != nil {
		t.Fatal(err)
	}
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	if err := createNet(t, d, netB, map[string]any{OptVNI: "301", OptMTU: "1300"}); err != nil {
		t.Fatal(err)
	}
	runDriver(t, d)
	ul.mu.Lock()
	ul.mtu = 1500
	ul.mu.Unlock()
	ul.changed <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for {
		dp.mu.Lock()
		a, b := dp.networks[300].MTU, dp.networks[301].MTU
		dp.mu.Unlock()
		if a == 1450 && b == 1300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("device MTUs %d and %d, want 1450 (followed) and 1300 (the user's)", a, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, n := range d.Networks() {
		if n.ID == netA && n.MTU != 1450 {
			t.Fatalf("network MTU %d not saved as followed", n.MTU)
		}
	}
}

func TestNetworkEvents(t *testing.T) {
	d, _, _ := newTestDriver(t, "")
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	sub := d.SubscribeNetworks()
	defer sub.Close()
	if err := createNet(t, d, netB, map[string]any{OptVNI: "301"}); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range sub.Take() {
		got = append(got, fmt.Sprintf("%v %d %s %s", ev.Up, ev.VNI, ev.Subnet, ev.Gateway))
	}
	want := []string{"true 300 10.10.0.0/24 10.10.0.1", "true 301 10.10.0.0/24 10.10.0.1", "false 300 10.10.0.0/24 10.10.0.1"}
	if !slices.Equal(got, want) {
		t.Fatalf("network events:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// A repair that finds the catalog complete first applies what the catalog
// has queued for the driver: just after a start, the records of the mesh's
// first state exchange may still be queued, and a repair from what was
// applied so far would delete their entries until they are (seen on a
// plugin upgrade: every remote entry deleted for 3 ms).
func TestRepairAppliesQueuedRecordsFirst(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	// The entries the previous run left, and the records that say so,
	// queued but not applied.
	left := rec("h2", "r", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")
	r, _ := toRemote(left)
	if err := dp.EnsureSegment(dataplane.Segment{VNI: 300, MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	if err := dp.SetRemote(300, r); err != nil {
		t.Fatal(err)
	}
	cat.events.Publish(catalog.Event{Kind: catalog.Added, Record: left})
	d.repair(false)
	dp.mu.Lock()
	rep := dp.repaired
	dp.mu.Unlock()
	if rep.FDBRemoved != 0 || rep.NeighRemoved != 0 {
		t.Fatalf("the repair removed entries whose records were queued: %+v", rep)
	}
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
}

// A record is programmed only with an address inside its network's
// subnet, other than its gateway and this host's own endpoints', in the
// per-change path and in the repair alike. The positive control: a record
// inside the subnet is programmed.
func TestRecordsInsideTheirSubnet(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	for _, n := range d.networks {
		n.Endpoints["local1"] = &Endpoint{ID: "local1", Address: "10.10.0.9/24", MAC: "02:42:0a:0a:00:09"}
	}
	d.mu.Unlock()
	runDriver(t, d)
	cat.events.Publish(
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "outside", 300, "10.11.0.5", "02:77:0a:0b:00:05", "198.18.0.2")},
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "gateway", 300, "10.10.0.1", "02:77:0a:0a:00:01", "198.18.0.2")},
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "mine", 300, "10.10.0.9", "02:77:0a:0a:00:09", "198.18.0.2")},
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "ok", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")},
	)
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
	d.repair(true)
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
}

// A host back with a new mesh identity (its state directory lost)
// republishes its endpoints under new keys while its old keys' records go,
// in one batch: the entries stay in the kernel all along, never deleted
// and written again (found by the soak: a state-damage).
func TestNewIdentityKeepsEntries(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	d.repair(false)
	old := rec("h2-old", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")
	cat.events.Publish(catalog.Event{Kind: catalog.Added, Record: old})
	d.apply(d.sub.Take())
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
	dp.mu.Lock()
	deletes := dp.calls["DeleteRemote"]
	dp.mu.Unlock()

	cat.events.Publish(
		catalog.Event{Kind: catalog.Removed, Record: old},
		catalog.Event{Kind: catalog.Added, Record: rec("h2-new", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")},
	)
	d.apply(d.sub.Take())
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2")
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if n := dp.calls["DeleteRemote"] - deletes; n != 0 {
		t.Fatalf("%d kernel deletes for an endpoint that only changed owner", n)
	}
}

func TestUndone(t *testing.T) {
	r := func(ip, mac, vtep string) dataplane.RemoteEndpoint {
		var e dataplane.RemoteEndpoint
		if ip != "" {
			e.IP = net.ParseIP(ip).To4()
		}
		if mac != "" {
			e.MAC, _ = net.ParseMAC(mac)
		}
		if vtep != "" {
			e.VTEP = net.ParseIP(vtep).To4()
		}
		return e
	}
	a := r("10.0.0.2", "02:00:00:00:00:02", "198.18.0.2")
	moved := r("10.0.0.2", "02:00:00:00:00:02", "198.18.0.3")
	ops := []kernelOp{
		{vni: 1, r: a},                     // put back below: dropped
		{vni: 2, r: a},                     // another network: kept
		{vni: 1, r: r("10.0.0.9", "", "")}, // nothing puts it back: kept
		{vni: 1, set: true, r: a},
		{vni: 1, r: moved},                 // only a set before it: kept
		{vni: 1, r: r("10.0.0.2", "", "")}, // neighbour only, put back below: dropped
		{vni: 1, set: true, r: a},
	}
	got := undone(ops)
	want := []kernelOp{ops[1], ops[2], ops[3], ops[4], ops[6]}
	if len(got) != len(want) {
		t.Fatalf("kept %d writes, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].vni != want[i].vni || got[i].set != want[i].set || !rewrites(got[i].r, want[i].r) || !rewrites(want[i].r, got[i].r) {
			t.Fatalf("write %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
