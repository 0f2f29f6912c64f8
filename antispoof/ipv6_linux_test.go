package antispoof

import (
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/dataplane"
)

// echoes6 returns how many ICMPv6 echo requests namespace ns took in.
func echoes6(t testing.TB, ns string) int {
	t.Helper()
	for l := range strings.Lines(run(t, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp6")) {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Icmp6InEchos" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no Icmp6InEchos in %s's /proc/net/snmp6", ns)
	return 0
}

// send6 pings b's IPv6 address from a's container with source src, count
// times, and returns how many echo requests b took in.
func send6(t testing.TB, a, b host, src, dst string, count int) int {
	t.Helper()
	before := echoes6(t, b.ctr)
	_ = exec.Command("ip", "netns", "exec", a.ctr, "ping", "-6", "-c", strconv.Itoa(count), "-i", "0.01", "-W", "1", "-I", src, dst).Run()
	return echoes6(t, b.ctr) - before
}

// TestIPv6Sources: on a dual-stack network, IPv6 frames cross hosts only
// from a source listed for their sender (local6 on the way out, remote6
// behind the sending host on the way in), as IPv4 ones do: with IPv4
// sources alone nothing of IPv6 passes; with the endpoints' IPv6 sources
// their own addresses pass and another's does not.
func TestIPv6Sources(t *testing.T) {
	needRoot(t)
	a, b, _ := pair(t)
	ip6 := map[string]netip.Addr{a.ns: netip.MustParseAddr("fd00:9::1"), b.ns: netip.MustParseAddr("fd00:9::2")}
	for _, h := range []host{a, b} {
		run(t, "ip", "-n", h.ctr, "-6", "addr", "add", ip6[h.ns].String()+"/64", "dev", "wv0", "nodad")
		o := a
		if h.ns == a.ns {
			o = b
		}
		hd, err := netns.GetFromName(h.ns)
		if err != nil {
			t.Fatal(err)
		}
		k, err := dataplane.NewKernelAt(hd, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = k.SetRemote(vni, dataplane.RemoteEndpoint{IP: o.ip.AsSlice(), IP6: ip6[o.ns].AsSlice(), MAC: o.mac, VTEP: o.vtep.AsSlice()})
		k.Close()
		hd.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	// a's container also holds a third address, nobody's source.
	spoof := "fd00:9::3"
	run(t, "ip", "-n", a.ctr, "-6", "addr", "add", spoof+"/128", "dev", "wv0", "nodad")
	const n = 5
	dst := ip6[b.ns].String()
	if got := send6(t, a, b, ip6[a.ns].String(), dst, n); got != n {
		t.Fatalf("without tables, %d of %d IPv6 echo requests arrived (the test cannot tell a table's effect)", got, n)
	}
	if got := send6(t, a, b, spoof, dst, n); got != n {
		t.Fatalf("without tables, %d of %d IPv6 echo requests from the third address arrived", got, n)
	}

	la, lb := Sources{Local: []Entry{a.local()}, Remote: []Entry{b.remote()}}, Sources{Local: []Entry{b.local()}, Remote: []Entry{a.remote()}}
	syncs(t, a.table, la)
	syncs(t, b.table, lb)
	if got := send6(t, a, b, ip6[a.ns].String(), dst, n); got != 0 {
		t.Fatalf("with IPv4 sources only, %d of %d IPv6 echo requests arrived", got, n)
	}
	e6 := func(h host) Entry { return Entry{VNI: vni, MAC: h.mac, IP: ip6[h.ns]} }
	r6 := func(h host) Entry { e := e6(h); e.VTEP = h.vtep; return e }
	la.Local, la.Remote = append(la.Local, e6(a)), append(la.Remote, r6(b))
	lb.Local, lb.Remote = append(lb.Local, e6(b)), append(lb.Remote, r6(a))
	syncs(t, a.table, la)
	syncs(t, b.table, lb)
	if got := send6(t, a, b, ip6[a.ns].String(), dst, n); got != n {
		t.Fatalf("with IPv6 sources, %d of %d IPv6 echo requests from a's own address arrived", got, n)
	}
	out := a.table.Dropped().Out
	if got := send6(t, a, b, spoof, dst, n); got != 0 {
		t.Fatalf("%d of %d IPv6 echo requests from an address not a's arrived", got, n)
	}
	if d := a.table.Dropped().Out - out; d < n {
		t.Errorf("a's output dropped %d packets, want at least %d", d, n)
	}
	// b alone filters: its input drops the same.
	if err := a.table.Remove(); err != nil {
		t.Fatal(err)
	}
	in := b.table.Dropped().In
	if got := send6(t, a, b, spoof, dst, n); got != 0 {
		t.Fatalf("b took in %d of %d IPv6 echo requests from an address not a's", got, n)
	}
	if d := b.table.Dropped().In - in; d < n {
		t.Errorf("b's input dropped %d packets, want at least %d", d, n)
	}
	if s, err := b.table.Sources(); err != nil || len(s.Local) != 2 || len(s.Remote) != 2 {
		t.Fatalf("b's table holds %+v (%v), want 2 local and 2 remote sources", s, err)
	}
}
