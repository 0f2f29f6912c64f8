package driver

import (
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
)

// The repair counts the drift it fixes, in the registry it is given,
// whatever runs it (the timer, an underlay change), but not a network's
// first pass, which programs its entries; the timer's passes are counted;
// the status reads the last hour's drift.
func TestRepairCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	dp, cat := newFakePlane(), newFakeCatalog()
	cfg := DefaultConfig()
	cfg.Registry = reg
	d, err := New(cfg, dp, cat, &fakeUnderlay{mtu: 9000, changed: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	cat.events.Publish(
		catalog.Event{Kind: catalog.Added, Record: rec("h3", "r", 300, "10.10.0.21", "02:77:0a:0a:00:15", "198.18.0.3")},
		catalog.Event{Kind: catalog.Added, Record: rec("h3", "s", 300, "10.10.0.22", "02:77:0a:0a:00:16", "198.18.0.3")},
	)
	d.apply(d.sub.Take())
	fixed := func(table, action string) float64 {
		return testutil.ToFloat64(d.metrics.fixed.WithLabelValues(table, action))
	}
	passes := func() float64 { return testutil.ToFloat64(d.metrics.passes) }
	// The network's first pass (its arrival) writes its two endpoints:
	// programming, not drift.
	d.repair(false)
	if fixed("fdb", "added")+fixed("neighbour", "added") != 0 || passes() != 0 {
		t.Fatalf("a network's first pass counted: %v + %v entries fixed, %v passes", fixed("fdb", "added"), fixed("neighbour", "added"), passes())
	}
	waitTable(t, dp, 300, "10.10.0.21 02:77:0a:0a:00:15 198.18.0.3", "10.10.0.22 02:77:0a:0a:00:16 198.18.0.3")
	d.repair(true)
	if passes() != 1 || fixed("fdb", "added")+fixed("neighbour", "added") != 0 {
		t.Fatalf("a pass over a kernel in line: %v passes, %v + %v entries fixed", passes(), fixed("fdb", "added"), fixed("neighbour", "added"))
	}
	// Drift: one neighbour entry deleted, one FDB entry left behind by
	// something else; an underlay change's pass finds them.
	if err := dp.DeleteRemote(300, dataplane.RemoteEndpoint{IP: []byte{10, 10, 0, 21}}); err != nil {
		t.Fatal(err)
	}
	if err := dp.SetRemote(300, dataplane.RemoteEndpoint{IP: []byte{10, 10, 0, 99}, MAC: []byte{2, 0x77, 10, 10, 0, 99}, VTEP: []byte{198, 18, 0, 9}}); err != nil {
		t.Fatal(err)
	}
	d.repair(false)
	if fixed("neighbour", "added") != 1 || fixed("fdb", "removed") != 1 || fixed("neighbour", "removed") != 1 || passes() != 1 {
		t.Fatalf("drift found by an underlay change's pass: neighbour added %v, fdb removed %v, neighbour removed %v, passes %v",
			fixed("neighbour", "added"), fixed("fdb", "removed"), fixed("neighbour", "removed"), passes())
	}
	// The timer's pass.
	if err := dp.DeleteRemote(300, dataplane.RemoteEndpoint{IP: []byte{10, 10, 0, 22}}); err != nil {
		t.Fatal(err)
	}
	d.repair(true)
	if fixed("neighbour", "added") != 2 || passes() != 2 {
		t.Fatalf("after one more neighbour entry deleted: neighbour added %v, passes %v", fixed("neighbour", "added"), passes())
	}
	if got := d.RecentRepairs(); got != (dataplane.Repair{NeighAdded: 2, FDBRemoved: 1, NeighRemoved: 1}) {
		t.Fatalf("RecentRepairs = %+v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "weft_repair_fixed_entries_total", "weft_repair_passes_total", "weft_repair_errors_total"); err != nil || n != 6 {
		t.Fatalf("registry holds %d series of the repair's (%v), want 4 + 1 + 1", n, err)
	}
	// An hour later, the drift is no longer recent.
	if got := d.metrics.history.since(time.Now().Add(RepairWindow + time.Minute)); got != (dataplane.Repair{}) {
		t.Fatalf("repairs of more than an hour ago still reported: %+v", got)
	}
	// A network that goes and comes back has a first pass again.
	d.mu.Lock()
	n := d.networks[netA]
	delete(d.networks, netA)
	d.mu.Unlock()
	d.repair(false)
	d.mu.Lock()
	d.networks[netA] = n
	d.mu.Unlock()
	if err := dp.DeleteRemote(300, dataplane.RemoteEndpoint{IP: []byte{10, 10, 0, 22}}); err != nil {
		t.Fatal(err)
	}
	d.repair(false)
	if fixed("neighbour", "added") != 2 {
		t.Fatalf("a network's first pass after it came back counted: %v", fixed("neighbour", "added"))
	}
}

// The probe's VNI is never a network's: refused as an option, skipped
// when derived.
func TestProbeVNIReserved(t *testing.T) {
	if _, err := parseOptions(map[string]string{OptVNI: "16777215"}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("-o weft.vni=16777215: %v", err)
	}
	// A network whose derived VNI, or one of the next 1,024 tried, is the
	// probe's; every VNI taken but the probe's and the one after it
	// (MinAutoVNI, where the range wraps).
	span := uint32(dataplane.MaxVNI - MinAutoVNI + 1)
	id := ""
	for i := 0; id == ""; i++ {
		h := fnv.New32a()
		h.Write([]byte(strconv.Itoa(i)))
		if h.Sum32()%span >= span-1024 {
			id = strconv.Itoa(i)
		}
	}
	vni, err := autoVNI(id, func(v uint32) bool { return v != dataplane.ProbeVNI && v != MinAutoVNI })
	if err != nil || vni != MinAutoVNI {
		t.Fatalf("autoVNI = %d, %v; want %d, past the probe's", vni, err, MinAutoVNI)
	}
}
