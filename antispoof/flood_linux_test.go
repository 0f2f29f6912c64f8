package antispoof

import (
	"os/exec"
	"strconv"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/dataplane"
)

// pingTo pings dst from a's container count times with extra flags (the
// replies are not needed) and returns how many echo requests b's container
// took in.
func pingTo(t testing.TB, a, b host, dst string, count int, flags ...string) int {
	t.Helper()
	before := echoes(t, b.ctr)
	args := append([]string{"netns", "exec", a.ctr, "ping", "-c", strconv.Itoa(count), "-i", "0.01", "-W", "1"}, flags...)
	_ = exec.Command("ip", append(args, dst)...).Run()
	return echoes(t, b.ctr) - before
}

// TestFloodOnlyWhereOpted: with a flood entry from a towards b, a
// broadcast and a multicast echo request cross from a's container to b's
// only while both tables list the network in Flood (each side's table
// drops them alone); on such a network unicast to b's container still
// passes, and a's flooded copies of an unknown destination are dropped.
func TestFloodOnlyWhereOpted(t *testing.T) {
	needRoot(t)
	a, b, _ := pair(t)
	h, err := netns.GetFromName(a.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	k, err := dataplane.NewKernelAt(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.AddFlood(vni, b.vtep.AsSlice()); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", a.ctr, "route", "add", "224.0.0.0/4", "dev", "wv0")
	// IPv6's own multicast from a's device and container would be dropped
	// too, at times of its own, and blur the drop counts.
	run(t, "ip", "netns", "exec", a.ns, "sysctl", "-qw", "net.ipv6.conf."+dataplane.DeviceName(vni)+".disable_ipv6=1")
	run(t, "ip", "netns", "exec", a.ctr, "sysctl", "-qw", "net.ipv6.conf.wv0.disable_ipv6=1")
	const n = 5
	bcast := func() int { return pingTo(t, a, b, "10.9.0.255", n, "-b") }
	mcast := func() int { return pingTo(t, a, b, "224.0.0.1", n) }

	// No tables: the flood entry alone carries them (the control).
	if got, gotm := bcast(), mcast(); got != n || gotm != n {
		t.Fatalf("without tables, %d and %d of %d broadcast and multicast echo requests arrived", got, gotm, n)
	}

	// Neither table lists the network: a drops them on the way out.
	la, lb := Sources{Local: []Entry{a.local()}, Remote: []Entry{b.remote()}}, Sources{Local: []Entry{b.local()}, Remote: []Entry{a.remote()}}
	syncs(t, a.table, la)
	syncs(t, b.table, lb)
	out := a.table.Dropped().Out
	if got, gotm := bcast(), mcast(); got != 0 || gotm != 0 {
		t.Fatalf("on a network without flooding, %d and %d of %d broadcast and multicast echo requests arrived", got, gotm, n)
	}
	if d := a.table.Dropped().Out - out; d < 2*n {
		t.Errorf("a's output dropped %d packets, want at least %d", d, 2*n)
	}
	// a lists it, b does not: b drops them on the way in.
	la.Flood = []uint32{vni}
	syncs(t, a.table, la)
	in := b.table.Dropped().In
	if got, gotm := bcast(), mcast(); got != 0 || gotm != 0 {
		t.Fatalf("into a host whose network does not flood, %d and %d of %d broadcast and multicast echo requests arrived", got, gotm, n)
	}
	if d := b.table.Dropped().In - in; d < 2*n {
		t.Errorf("b's input dropped %d packets, want at least %d", d, 2*n)
	}

	// Both list it: they arrive, and unicast still does.
	lb.Flood = []uint32{vni}
	syncs(t, b.table, lb)
	if got, gotm := bcast(), mcast(); got != n || gotm != n {
		t.Fatalf("on a flooding network, %d and %d of %d broadcast and multicast echo requests arrived", got, gotm, n)
	}
	if got := send(t, a, b, a.ip, n); got != n {
		t.Fatalf("on a flooding network, %d of %d unicast echo requests arrived", got, n)
	}
	if s, err := a.table.Sources(); err != nil || len(s.Flood) != 1 || s.Flood[0] != vni {
		t.Fatalf("a's table floods %v (%v), want [%d]", s.Flood, err, vni)
	}

	// Unknown unicast: a destination MAC no FDB entry holds. The kernel
	// floods it towards b; a's table drops the copy.
	run(t, "ip", "-n", a.ctr, "neigh", "replace", "10.9.0.77", "lladdr", "02:00:00:00:00:77", "dev", "wv0", "nud", "permanent")
	out = a.table.Dropped().Out
	_ = pingTo(t, a, b, "10.9.0.77", n)
	if d := a.table.Dropped().Out - out; d < n {
		t.Errorf("a's output dropped %d flooded copies of unknown unicast, want at least %d", d, n)
	}
}
