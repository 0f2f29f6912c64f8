package antispoof

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/nstest"
)

// These tests need root: each builds two hosts as fresh network
// namespaces linked by a veth pair, with weft's real VXLAN devices
// (dataplane.Kernel), and a container namespace on each; never in the
// caller's namespace.

func needRoot(t testing.TB) { nstest.NeedRoot(t, "antispoof tests", "ip", "ping") }

func run(t testing.TB, args ...string) string { return nstest.Run(t, args...) }

func newNS(t testing.TB) (string, netns.NsHandle) { return nstest.NewNS(t, "was") }

const (
	vni  = 42
	port = 4790
)

// host is one side: its namespace, VTEP, table, and its container's
// namespace, MAC and address.
type host struct {
	ns, ctr string
	vtep    netip.Addr
	mac     net.HardwareAddr
	ip      netip.Addr
	table   *Table
}

func (h host) local() Entry { return Entry{VNI: vni, MAC: h.mac, IP: h.ip} }
func (h host) remote() Entry {
	return Entry{VNI: vni, MAC: h.mac, IP: h.ip, VTEP: h.vtep}
}

// pair builds hosts a and b with one container each, their remote
// entries written, no table yet; and a third endpoint c that b knows
// behind a VTEP that is neither (the one a's container will pose as).
func pair(t testing.TB) (a, b host, c Entry) {
	t.Helper()
	hs := []host{
		{vtep: netip.MustParseAddr("10.99.0.1"), mac: net.HardwareAddr{2, 0, 0, 0, 0, 1}, ip: netip.MustParseAddr("10.9.0.1")},
		{vtep: netip.MustParseAddr("10.99.0.2"), mac: net.HardwareAddr{2, 0, 0, 0, 0, 2}, ip: netip.MustParseAddr("10.9.0.2")},
	}
	c = Entry{VNI: vni, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}, IP: netip.MustParseAddr("10.9.0.3"), VTEP: netip.MustParseAddr("10.99.0.3")}
	var handles []netns.NsHandle
	for i := range hs {
		var h netns.NsHandle
		hs[i].ns, h = newNS(t)
		hs[i].ctr, _ = newNS(t)
		handles = append(handles, h)
	}
	run(t, "ip", "-n", hs[0].ns, "link", "add", "u0", "type", "veth", "peer", "name", "u1", "netns", hs[1].ns)
	for i, h := range hs {
		u := "u" + strconv.Itoa(i)
		run(t, "ip", "-n", h.ns, "addr", "add", h.vtep.String()+"/24", "dev", u)
		run(t, "ip", "-n", h.ns, "link", "set", u, "up")
		k, err := dataplane.NewKernelAt(handles[i], nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		if err := k.EnsureSegment(dataplane.Segment{VNI: vni, MTU: 1450, Port: port}); err != nil {
			t.Fatal(err)
		}
		if err := k.CreateInterface(vni, "wv0", h.mac); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "-n", h.ns, "link", "set", "wv0", "netns", h.ctr)
		run(t, "ip", "-n", h.ctr, "addr", "add", h.ip.String()+"/24", "dev", "wv0")
		run(t, "ip", "-n", h.ctr, "link", "set", "wv0", "up")
		o := hs[1-i]
		rs := []dataplane.RemoteEndpoint{{IP: o.ip.AsSlice(), MAC: o.mac, VTEP: o.vtep.AsSlice()}}
		if i == 1 {
			rs = append(rs, dataplane.RemoteEndpoint{IP: c.IP.AsSlice(), MAC: c.MAC, VTEP: c.VTEP.AsSlice()})
		}
		if _, err := k.SetRemotes(vni, rs); err != nil {
			t.Fatal(err)
		}
		tb, err := New(Config{VXLANPort: port, ExemptVNI: dataplane.ProbeVNI, NetNSFd: int(handles[i])})
		if err != nil {
			t.Fatal(err)
		}
		hs[i].table = tb
	}
	return hs[0], hs[1], c
}

// snmp returns a counter of /proc/net/snmp in namespace ns: field of
// group ("Icmp:", "Ip:").
func snmp(t testing.TB, ns, group, field string) int {
	t.Helper()
	out := run(t, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp")
	var head []string
	for l := range strings.Lines(out) {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != group {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		if i := slices.Index(head, field); i > 0 && i < len(f) {
			n, _ := strconv.Atoi(f[i])
			return n
		}
	}
	t.Fatalf("no %s %s in %s's /proc/net/snmp", group, field, ns)
	return 0
}

// echoes returns how many ICMP echo requests the namespace ns took in.
func echoes(t testing.TB, ns string) int { return snmp(t, ns, "Icmp:", "InEchos") }

// send pings from a's container to b's with source src, count times
// (replies are not needed: b's echo counter tells what arrived), and
// returns how many b took in.
func send(t testing.TB, a, b host, src netip.Addr, count int) int {
	t.Helper()
	before := echoes(t, b.ctr)
	_ = exec.Command("ip", "netns", "exec", a.ctr, "ping", "-c", strconv.Itoa(count), "-i", "0.01", "-W", "1",
		"-I", src.String(), b.ip.String()).Run()
	return echoes(t, b.ctr) - before
}

func TestFiltersHoldSourcesToTheirHosts(t *testing.T) {
	needRoot(t)
	a, b, c := pair(t)
	// a's container also holds c's address (it could, with CAP_NET_ADMIN).
	run(t, "ip", "-n", a.ctr, "addr", "add", c.IP.String()+"/32", "dev", "wv0")
	const n = 5

	// No table: its own address and c's both get through.
	if got := send(t, a, b, a.ip, n); got != n {
		t.Fatalf("without filters, %d of %d echo requests from a's own address arrived", got, n)
	}
	if got := send(t, a, b, c.IP, n); got != n {
		t.Fatalf("without filters, %d of %d spoofed echo requests arrived (the test cannot tell a filter's effect)", got, n)
	}

	// Both hosts filter: its own address gets through, c's does not, and
	// a counts the drops on the way out.
	syncs(t, a.table, Sources{Local: []Entry{a.local()}, Remote: []Entry{b.remote()}})
	syncs(t, b.table, Sources{Local: []Entry{b.local()}, Remote: []Entry{a.remote(), c}})
	if got := send(t, a, b, a.ip, n); got != n {
		t.Fatalf("with filters, %d of %d echo requests from a's own address arrived", got, n)
	}
	out := a.table.Dropped().Out
	if got := send(t, a, b, c.IP, n); got != 0 {
		t.Fatalf("with filters, %d of %d spoofed echo requests arrived", got, n)
	}
	if d := a.table.Dropped().Out - out; d < n {
		t.Errorf("a's output dropped %d packets, want at least %d", d, n)
	}

	// a without its table (a host that does not filter, or a member
	// that forges): b drops what claims a source that lives elsewhere,
	// with c's MAC too.
	if err := a.table.Remove(); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", a.ctr, "link", "set", "wv0", "address", c.MAC.String())
	in := b.table.Dropped().In
	if got := send(t, a, b, c.IP, n); got != 0 {
		t.Fatalf("b took in %d of %d echo requests posing as c from a's VTEP", got, n)
	}
	if d := b.table.Dropped().In - in; d < n {
		t.Errorf("b's input dropped %d packets, want at least %d", d, n)
	}
	// The same packets once b lists c behind a's VTEP: they arrive (the
	// binding to the VTEP is what stopped them).
	if err := b.table.Change(Sources{Remote: []Entry{{VNI: vni, MAC: c.MAC, IP: c.IP, VTEP: a.vtep}}}, Sources{}); err != nil {
		t.Fatal(err)
	}
	if got := send(t, a, b, c.IP, n); got != n {
		t.Fatalf("with c listed behind a's VTEP, %d of %d echo requests arrived", got, n)
	}
}

func syncs(t testing.TB, tb *Table, s Sources) {
	t.Helper()
	if _, err := tb.Sync(s, true); err != nil {
		t.Fatal(err)
	}
}

func TestSyncReconciles(t *testing.T) {
	needRoot(t)
	_, h := newNS(t)
	tb, err := New(Config{VXLANPort: port, ExemptVNI: dataplane.ProbeVNI, NetNSFd: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	e := func(i byte, vtep string) Entry {
		x := Entry{VNI: vni, MAC: net.HardwareAddr{2, 0, 0, 0, 0, i}, IP: netip.AddrFrom4([4]byte{10, 9, 0, i})}
		if vtep != "" {
			x.VTEP = netip.MustParseAddr(vtep)
		}
		return x
	}
	want := Sources{Local: []Entry{e(1, ""), e(2, "")}, Remote: []Entry{e(3, "10.99.0.3"), e(4, "10.99.0.4")}}
	if err := tb.Change(want, Sources{}); err != ErrNotBuilt {
		t.Fatalf("Change before Sync: %v, want ErrNotBuilt", err)
	}
	// No table yet and an incomplete view: nothing is built (it would
	// drop the remote endpoints not known yet).
	if _, err := tb.Sync(want, false); err != ErrNotBuilt {
		t.Fatalf("first Sync before a complete view: %v, want ErrNotBuilt", err)
	}
	if out, _ := exec.Command("ip", "netns", "exec", nsName(t, h), "nft", "list", "table", "ip", "weft_sources").CombinedOutput(); !strings.Contains(string(out), "No such file") {
		t.Fatalf("a table was built before a complete view:\n%s", out)
	}
	d, err := tb.Sync(want, true)
	if err != nil || d != (Diff{LocalAdded: 2, RemoteAdded: 2}) {
		t.Fatalf("first Sync: %+v, %v", d, err)
	}
	if d, err := tb.Sync(want, true); err != nil || d != (Diff{}) {
		t.Fatalf("Sync again: %+v, %v; want nothing written", d, err)
	}
	same(t, tb, want)

	// Drift behind weft's back: an element deleted, one added by hand.
	ns := nsName(t, h)
	run(t, "ip", "netns", "exec", ns, "nft", "delete element ip weft_sources local { 0.0.0.42 . 02:00:00:00:00:01 . 10.9.0.1 }")
	run(t, "ip", "netns", "exec", ns, "nft", "add element ip weft_sources remote { 10.99.0.9 . 0.0.0.42 . 02:00:00:00:00:09 . 10.9.0.9 }")
	if d, err := tb.Sync(want, false); err != nil || d != (Diff{LocalAdded: 1}) {
		t.Fatalf("Sync without pruning: %+v, %v; want the missing one added, nothing removed", d, err)
	}
	if d, err := tb.Sync(want, true); err != nil || d != (Diff{RemoteRemoved: 1}) {
		t.Fatalf("Sync: %+v, %v; want the stray one removed", d, err)
	}
	same(t, tb, want)

	// Per change: removing what is not there, adding what is, is nothing.
	if err := tb.Change(Sources{Remote: []Entry{e(5, "10.99.0.5")}}, Sources{Local: []Entry{e(2, ""), e(7, "")}}); err != nil {
		t.Fatal(err)
	}
	want = Sources{Local: []Entry{e(1, "")}, Remote: []Entry{e(3, "10.99.0.3"), e(4, "10.99.0.4"), e(5, "10.99.0.5")}}
	same(t, tb, want)
	if err := tb.Change(Sources{Local: []Entry{e(1, "")}}, Sources{Local: []Entry{e(1, "")}}); err != nil {
		t.Fatal(err)
	}
	same(t, tb, want)

	// The table deleted by hand: Change fails (nothing to change), the
	// next Sync builds it whole.
	run(t, "ip", "netns", "exec", ns, "nft", "delete table ip weft_sources")
	if err := tb.Change(Sources{Local: []Entry{e(8, "")}}, Sources{}); err == nil {
		t.Fatal("Change on a deleted table succeeded")
	}
	if _, err := tb.Sync(want, true); err != nil {
		t.Fatal(err)
	}
	same(t, tb, want)

	// A new process (nothing built in its memory) keeps what the kernel
	// holds until told to prune.
	tb2, _ := New(Config{VXLANPort: port, ExemptVNI: dataplane.ProbeVNI, NetNSFd: int(h)})
	if d, err := tb2.Sync(Sources{}, false); err != nil || d != (Diff{}) {
		t.Fatalf("restart Sync without pruning: %+v, %v", d, err)
	}
	same(t, tb2, want)
	if err := tb2.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := tb2.Remove(); err != nil {
		t.Fatalf("Remove of a missing table: %v", err)
	}
	if _, err := tb2.Sources(); err == nil {
		t.Fatal("Sources after Remove: no error")
	}
}

func same(t testing.TB, tb *Table, want Sources) {
	t.Helper()
	have, err := tb.Sources()
	if err != nil {
		t.Fatal(err)
	}
	str := func(es []Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.String())
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(str(have.Local), str(want.Local)) || !slices.Equal(str(have.Remote), str(want.Remote)) {
		t.Fatalf("table holds %v / %v, want %v / %v", str(have.Local), str(have.Remote), str(want.Local), str(want.Remote))
	}
}

// nsName finds the name under /run/netns of handle h.
func nsName(t testing.TB, h netns.NsHandle) string {
	t.Helper()
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		o, err := netns.GetFromName(e.Name())
		if err != nil {
			continue
		}
		eq := o.Equal(h)
		o.Close()
		if eq {
			return e.Name()
		}
	}
	t.Fatal("namespace not found under /run/netns")
	return ""
}

// received returns how many IPv4 packets the namespace ns received.
func received(t testing.TB, ns string) int { return snmp(t, ns, "Ip:", "InReceives") }

// A container behind its host (as behind Docker's gateway bridge) that
// sends to another host's VXLAN port: its datagrams reach the other host
// without the table, and none do with it (counted in the other host's
// namespace, where nothing else sends IPv4).
func TestContainersDoNotReachTheVXLANPort(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash (its /dev/udp)")
	}
	a, b, _ := pair(t)
	gw, _ := newNS(t)
	run(t, "ip", "-n", a.ns, "link", "add", "g0", "type", "veth", "peer", "name", "g1", "netns", gw)
	run(t, "ip", "-n", a.ns, "addr", "add", "172.31.0.1/24", "dev", "g0")
	run(t, "ip", "-n", a.ns, "link", "set", "g0", "up")
	run(t, "ip", "-n", gw, "addr", "add", "172.31.0.2/24", "dev", "g1")
	run(t, "ip", "-n", gw, "link", "set", "g1", "up")
	run(t, "ip", "-n", gw, "route", "add", "default", "via", "172.31.0.1")
	run(t, "ip", "netns", "exec", a.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	const n = 5
	send := func() int {
		before := received(t, b.ns)
		for range n {
			run(t, "ip", "netns", "exec", gw, "bash", "-c", "echo forged > /dev/udp/"+b.vtep.String()+"/"+strconv.Itoa(port))
		}
		return received(t, b.ns) - before
	}
	if got := send(); got != n {
		t.Fatalf("without the table %d of %d datagrams reached the other host's VXLAN port (the control)", got, n)
	}
	syncs(t, a.table, Sources{Local: []Entry{a.local()}})
	if got := send(); got != 0 {
		t.Fatalf("with the table %d of %d datagrams reached the other host's VXLAN port", got, n)
	}
	if d := a.table.Dropped().Forward; d != n {
		t.Errorf("forward drops counted: %d, want %d", d, n)
	}
}
