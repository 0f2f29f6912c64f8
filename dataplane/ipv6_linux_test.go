package dataplane

import (
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
)

// ping6 reports whether namespace from gets an IPv6 answer from to within
// 1 s.
func ping6(from, to string) bool {
	return exec.Command("ip", "netns", "exec", from, "ping", "-6", "-c", "1", "-W", "1", to).Run() == nil
}

// TestDualStackTwoHosts: containers on two hosts with an IPv4 and an IPv6
// address each reach each other over IPv6 only once the remote endpoints
// (with their IPv6 address) are programmed: the device answers neighbour
// solicitations from its table (proxy), and no IPv6 frame crosses before
// (nothing is flooded: no solicitation, no router or listener message).
// The repair keeps the IPv6 entries, rewrites one changed behind its back,
// and DeleteRemote removes them.
func TestDualStackTwoHosts(t *testing.T) {
	needRoot(t)
	l := newHosts(t, 96)
	l.segment(t, 0, 730)
	l.segment(t, 1, 730)
	m1, m2 := mac("02:77:0a:49:00:01"), mac("02:77:0a:49:00:02")
	c1, _ := l.container(t, 0, 730, "wc61", m1, "10.73.0.1/24")
	c2, _ := l.container(t, 1, 730, "wc62", m2, "10.73.0.2/24")
	run(t, "ip", "-n", c1, "-6", "addr", "add", "fd00:73::1/64", "dev", "wc61", "nodad")
	run(t, "ip", "-n", c2, "-6", "addr", "add", "fd00:73::2/64", "dev", "wc62", "nodad")
	capture := captureIn(t, l.ns[1], DeviceName(730))
	ipv6Frame := func(f []byte) bool { return f[12] == 0x86 && f[13] == 0xdd }

	if ping6(c1, "fd00:73::2") {
		t.Fatal("c1 reached c2 over IPv6 before any remote endpoint was programmed (flooding?)")
	}
	if capture(ipv6Frame) {
		t.Fatal("an IPv6 frame crossed hosts before any remote endpoint was programmed")
	}
	r1 := RemoteEndpoint{IP: net.ParseIP("10.73.0.1").To4(), IP6: net.ParseIP("fd00:73::1"), MAC: m1, VTEP: l.vtep[0]}
	r2 := RemoteEndpoint{IP: net.ParseIP("10.73.0.2").To4(), IP6: net.ParseIP("fd00:73::2"), MAC: m2, VTEP: l.vtep[1]}
	if err := l.k[0].SetRemote(730, r2); err != nil {
		t.Fatal(err)
	}
	if rep, err := l.k[1].SetRemotes(730, []RemoteEndpoint{r1}); err != nil || rep != (Repair{FDBAdded: 1, NeighAdded: 2}) {
		t.Fatalf("SetRemotes: %+v, %v; want 1 FDB and 2 neighbour entries added", rep, err)
	}
	if !ping6(c1, "fd00:73::2") || !ping6(c2, "fd00:73::1") {
		t.Fatal("containers on two hosts cannot reach each other over IPv6 with remote endpoints programmed")
	}
	if !ping(c1, "10.73.0.2") {
		t.Fatal("IPv4 broke beside IPv6")
	}
	if rep, err := l.k[0].SetRemotes(730, []RemoteEndpoint{r2}); err != nil || rep != (Repair{}) {
		t.Fatalf("SetRemotes on what SetRemote wrote: %+v, %v; want no change", rep, err)
	}
	have, err := l.k[0].Remotes(730)
	if err != nil || len(have) != 1 || !have[0].IP6.Equal(r2.IP6) {
		t.Fatalf("Remotes: %v, %v; want %v", have, err, r2)
	}
	// Drift: the IPv6 entry pointed elsewhere by hand.
	run(t, "ip", "-n", l.name[0], "-6", "neigh", "replace", "fd00:73::2", "lladdr", "02:77:0a:49:00:99", "dev", DeviceName(730), "nud", "permanent")
	if rep, err := l.k[0].SetRemotes(730, []RemoteEndpoint{r2}); err != nil || rep != (Repair{NeighAdded: 1}) {
		t.Fatalf("repair of a changed IPv6 entry: %+v, %v; want 1 neighbour entry rewritten", rep, err)
	}
	// An endpoint without IPv6 any more: its IPv6 entry goes.
	v4only := r2
	v4only.IP6 = nil
	if rep, err := l.k[0].SetRemotes(730, []RemoteEndpoint{v4only}); err != nil || rep != (Repair{NeighRemoved: 1}) {
		t.Fatalf("SetRemotes without the IPv6 address: %+v, %v; want 1 neighbour entry removed", rep, err)
	}
	if err := l.k[0].SetRemote(730, r2); err != nil {
		t.Fatal(err)
	}
	if err := l.k[0].DeleteRemote(730, r2); err != nil {
		t.Fatal(err)
	}
	_, _, nd, err := l.k[0].tables(DeviceName(730))
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(nd, isStaticNeigh) {
		t.Fatalf("neighbour entries left after DeleteRemote: %v", nd)
	}
}

// TestGateway6: a dual-stack network's IPv6 gateway (a second gateway, its
// own child and MAC) answers a container of the network on its IPv6
// address, beside the IPv4 one, and goes on Close.
func TestGateway6(t *testing.T) {
	needRoot(t)
	h, hh := newNS(t)
	c, _ := newNS(t)
	k := newKernel(t, hh)
	if err := k.EnsureSegment(Segment{VNI: 601, MTU: 1450, Port: 4790}); err != nil {
		t.Fatal(err)
	}
	if err := k.CreateInterface(601, "wc6", mac("02:77:0a:3d:00:02")); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", h, "link", "set", "wc6", "netns", c)
	run(t, "ip", "-n", c, "addr", "add", "10.61.0.2/24", "dev", "wc6")
	run(t, "ip", "-n", c, "-6", "addr", "add", "fd00:61::2/64", "dev", "wc6", "nodad")
	run(t, "ip", "-n", c, "link", "set", "wc6", "up")
	gw4 := netip.MustParsePrefix("10.61.0.1/24")
	gw6 := netip.MustParsePrefix("fd00:61::1/64")
	if m := MACFor(gw6.Addr()); m.String() != "06:77:00:00:00:01" {
		t.Fatalf("MACFor(%s) = %s", gw6, m)
	}
	g4, err := k.OpenGateway(601, gw4, MACFor(gw4.Addr()), 53)
	if err != nil {
		t.Fatal(err)
	}
	defer g4.Close()
	g6, err := k.OpenGateway(601, gw6, MACFor(gw6.Addr()), 53)
	if err != nil {
		t.Fatal(err)
	}
	if g6.UDP.LocalAddr().String() != "[fd00:61::1]:53" {
		t.Fatalf("IPv6 gateway listens on %s", g6.UDP.LocalAddr())
	}
	if !ping6(c, "fd00:61::1") || !ping(c, "10.61.0.1") {
		t.Fatal("a container cannot reach both gateways")
	}
	g6.Close()
	if ping6(c, "fd00:61::1") {
		t.Fatal("IPv6 gateway still answers after Close")
	}
}
