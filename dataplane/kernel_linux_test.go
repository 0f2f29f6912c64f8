package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/nstest"
)

// These tests need root: each works in fresh network namespaces made with
// iproute2 and removed at the end, never in the caller's namespace.

func needRoot(t testing.TB) { nstest.NeedRoot(t, "dataplane tests", "ip") }

func run(t testing.TB, args ...string) string { return nstest.Run(t, args...) }

func newNS(t testing.TB) (string, netns.NsHandle) { return nstest.NewNS(t, "wdp") }

func newKernel(t testing.TB, h netns.NsHandle) *Kernel {
	t.Helper()
	k, err := NewKernelAt(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestEnsureSegmentIdempotent(t *testing.T) {
	needRoot(t)
	_, h := newNS(t)
	k := newKernel(t, h)
	n := Segment{VNI: 4242, MTU: 1450, Port: 4790}
	for i := range 3 {
		if err := k.EnsureSegment(n); err != nil {
			t.Fatalf("EnsureSegment #%d: %v", i, err)
		}
	}
	vnis, err := k.Segments()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(vnis, []uint32{4242}) {
		t.Fatalf("Segments() = %v, want [4242]", vnis)
	}
	link, err := k.h.LinkByName("weft4242")
	if err != nil {
		t.Fatal(err)
	}
	v := link.(*netlink.Vxlan)
	if v.Learning || !v.Proxy || v.Port != 4790 || v.MTU != 1450 || v.VxlanId != 4242 {
		t.Fatalf("device attributes: learning=%v proxy=%v port=%d mtu=%d vni=%d", v.Learning, v.Proxy, v.Port, v.MTU, v.VxlanId)
	}

	// A child attached to the device survives a second EnsureSegment with
	// a new MTU: the MTU changes in place.
	if err := k.CreateInterface(4242, "wtest0", mac("02:77:0a:00:00:02")); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureSegment(Segment{VNI: 4242, MTU: 1400, Port: 4790}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.h.LinkByName("wtest0"); err != nil {
		t.Fatalf("child lost after MTU change: %v", err)
	}

	// A different port is incompatible: the device is replaced.
	if err := k.EnsureSegment(Segment{VNI: 4242, MTU: 1400, Port: 4999}); err != nil {
		t.Fatal(err)
	}
	link, _ = k.h.LinkByName("weft4242")
	if link.(*netlink.Vxlan).Port != 4999 {
		t.Fatalf("port not changed")
	}

	if err := k.DeleteSegment(4242); err != nil {
		t.Fatal(err)
	}
	if err := k.DeleteSegment(4242); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if vnis, _ := k.Segments(); len(vnis) != 0 {
		t.Fatalf("devices left: %v", vnis)
	}
}

func TestInterfaceLifecycle(t *testing.T) {
	needRoot(t)
	_, h := newNS(t)
	k := newKernel(t, h)
	if err := k.CreateInterface(7, "wnope", mac("02:77:00:00:00:01")); err == nil {
		t.Fatal("CreateInterface on a missing device succeeded")
	}
	if err := k.EnsureSegment(Segment{VNI: 7, MTU: 1450, Port: 4790}); err != nil {
		t.Fatal(err)
	}
	m := mac("02:77:0a:00:00:05")
	for range 2 {
		if err := k.CreateInterface(7, "wif0", m); err != nil {
			t.Fatal(err)
		}
	}
	l, err := k.h.LinkByName("wif0")
	if err != nil {
		t.Fatal(err)
	}
	mv, ok := l.(*netlink.Macvlan)
	if !ok || mv.Mode != netlink.MACVLAN_MODE_BRIDGE || mv.HardwareAddr.String() != m.String() || mv.MTU != 1450 {
		t.Fatalf("interface is %T %+v", l, l.Attrs())
	}
	if err := k.DeleteInterface("wif0"); err != nil {
		t.Fatal(err)
	}
	if err := k.DeleteInterface("wif0"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if err := k.DeleteInterface("lo"); err == nil {
		t.Fatal("DeleteInterface removed a non-macvlan link")
	}
}

// hosts is a lab of two "hosts": namespaces joined by a veth underlay
// (198.18.<n>.1 and .2 on wdpu1 and wdpu2), a Kernel on each.
type hosts struct {
	name [2]string
	ns   [2]netns.NsHandle
	k    [2]*Kernel
	vtep [2]net.IP
}

func newHosts(t *testing.T, n int) *hosts {
	t.Helper()
	var l hosts
	for i := range 2 {
		l.name[i], l.ns[i] = newNS(t)
		l.k[i] = newKernel(t, l.ns[i])
		l.vtep[i] = net.IPv4(198, 18, byte(n), byte(i+1)).To4()
	}
	run(t, "ip", "link", "add", "wdpu1", "netns", l.name[0], "type", "veth", "peer", "name", "wdpu2", "netns", l.name[1])
	for i := range 2 {
		dev := fmt.Sprintf("wdpu%d", i+1)
		run(t, "ip", "-n", l.name[i], "addr", "add", l.vtep[i].String()+"/24", "dev", dev)
		run(t, "ip", "-n", l.name[i], "link", "set", dev, "up")
	}
	return &l
}

// container makes a "container" namespace holding a new macvlan child
// ifname of segment vni on host i, with the given MAC and address.
func (l *hosts) container(t *testing.T, i int, vni uint32, ifname string, m net.HardwareAddr, addr string) (string, netns.NsHandle) {
	t.Helper()
	c, ch := newNS(t)
	if err := l.k[i].CreateInterface(vni, ifname, m); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", l.name[i], "link", "set", ifname, "netns", c)
	run(t, "ip", "-n", c, "addr", "add", addr, "dev", ifname)
	run(t, "ip", "-n", c, "link", "set", ifname, "up")
	return c, ch
}

func (l *hosts) segment(t *testing.T, i int, vni uint32) {
	t.Helper()
	if err := l.k[i].EnsureSegment(Segment{VNI: vni, MTU: 1450, Port: 4790}); err != nil {
		t.Fatal(err)
	}
}

// ping reports whether namespace from gets an answer from to within 1 s.
func ping(from, to string) bool {
	return exec.Command("ip", "netns", "exec", from, "ping", "-c", "1", "-W", "1", to).Run() == nil
}

// TestTwoHostsPing builds the whole kernel model between two hosts with a
// container on each, and checks that the containers reach each other only
// once the remote endpoints are programmed, that a container that asked
// for the other before has its answer as soon as the entries are written
// (the announcement, not its own ARP retry), and that another VNI cannot
// reach them.
func TestTwoHostsPing(t *testing.T) {
	needRoot(t)
	l := newHosts(t, 99)
	l.segment(t, 0, 500)
	l.segment(t, 1, 500)
	// A second network on host 2 holds c3, with an address in the same
	// subnet: it must stay unreachable from c1.
	l.segment(t, 1, 501)
	m1, m2, m3 := mac("02:77:0a:32:00:01"), mac("02:77:0a:32:00:02"), mac("02:77:0a:32:00:03")
	c1, c1h := l.container(t, 0, 500, "wc1", m1, "10.50.0.1/24")
	c2, _ := l.container(t, 1, 500, "wc2", m2, "10.50.0.2/24")
	c3, _ := l.container(t, 1, 501, "wc3", m3, "10.50.0.3/24")
	// c1 retries ARP every 10 s instead of every second: nothing but the
	// announcement can resolve c2 within the wait below.
	run(t, "ip", "-n", c1, "ntable", "change", "name", "arp_cache", "dev", "wc1", "retrans", "10000")

	ip1, ip2 := net.ParseIP("10.50.0.1").To4(), net.ParseIP("10.50.0.2").To4()
	if ping(c1, ip2.String()) {
		t.Fatal("c1 reached c2 before any remote endpoint was programmed (flooding?)")
	}
	if n, ok := neighbour(t, c1h, ip2); !ok || n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
		t.Fatalf("c1's entry for c2 after a failed ping: %v, state %#x (found %v); want INCOMPLETE or FAILED", n, n.State, ok)
	}

	r2 := RemoteEndpoint{IP: ip2, MAC: m2, VTEP: l.vtep[1]}
	if err := l.k[0].SetRemote(500, r2); err != nil {
		t.Fatal(err)
	}
	waitNeighbour(t, c1h, ip2, m2, 300*time.Millisecond)
	if _, err := l.k[1].SetRemotes(500, []RemoteEndpoint{{IP: ip1, MAC: m1, VTEP: l.vtep[0]}}); err != nil {
		t.Fatal(err)
	}
	if !ping(c1, ip2.String()) || !ping(c2, ip1.String()) {
		t.Fatal("containers on two hosts cannot reach each other with remote endpoints programmed")
	}
	if ping(c1, "10.50.0.3") || ping(c3, ip1.String()) {
		t.Fatal("a container on another VNI is reachable")
	}
	// Withdrawing the remote endpoint cuts the path again.
	if err := l.k[0].DeleteRemote(500, r2); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", c1, "neigh", "flush", "all")
	if ping(c1, ip2.String()) {
		t.Fatal("c2 still reachable after its entries were withdrawn")
	}
}

// nudValid are the neighbour states in which the kernel sends to the
// entry's MAC (NUD_VALID in the kernel).
const nudValid = netlink.NUD_PERMANENT | netlink.NUD_NOARP | netlink.NUD_REACHABLE | netlink.NUD_PROBE | netlink.NUD_STALE | netlink.NUD_DELAY

// neighbour returns the IPv4 neighbour entry of ip in namespace ns.
func neighbour(t *testing.T, ns netns.NsHandle, ip net.IP) (netlink.Neigh, bool) {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	all, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range all {
		if n.IP.Equal(ip) {
			return n, true
		}
	}
	return netlink.Neigh{}, false
}

// waitNeighbour waits, at most within, until namespace ns holds a
// neighbour entry ip -> m it sends on, watching the kernel's neighbour
// events (the entries there at the start included).
func waitNeighbour(t *testing.T, ns netns.NsHandle, ip net.IP, m net.HardwareAddr, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	updates := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	err := netlink.NeighSubscribeWithOptions(updates, done, netlink.NeighSubscribeOptions{Namespace: &ns, ListExisting: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				t.Fatal("neighbour event subscription ended")
			}
			if u.Type == unix.RTM_NEWNEIGH && u.IP.Equal(ip) && u.HardwareAddr.String() == m.String() && u.State&nudValid != 0 {
				return
			}
		case <-deadline.C:
			n, _ := neighbour(t, ns, ip)
			t.Fatalf("no usable neighbour entry %s -> %s within %v; the entry is %v, state %#x", ip, m, within, n, n.State)
		}
	}
}

// TestGateway: the gateway lives in its own namespace, answers containers
// of its network on the gateway address (ICMP and the TCP socket weft's
// DNS uses), adds no route to the host's namespace, and goes away on
// Close.
func TestGateway(t *testing.T) {
	needRoot(t)
	h, hh := newNS(t)
	c, _ := newNS(t)
	k := newKernel(t, hh)
	if err := k.EnsureSegment(Segment{VNI: 600, MTU: 1450, Port: 4790}); err != nil {
		t.Fatal(err)
	}
	if err := k.CreateInterface(600, "wc1", mac("02:77:0a:3c:00:02")); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", h, "link", "set", "wc1", "netns", c)
	run(t, "ip", "-n", c, "addr", "add", "10.60.0.2/24", "dev", "wc1")
	run(t, "ip", "-n", c, "link", "set", "wc1", "up")

	g, err := k.OpenGateway(600, netip.MustParsePrefix("10.60.0.1/24"), mac("02:77:0a:3c:00:01"), 53)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	go func() {
		conn, err := g.TCP.Accept()
		if err == nil {
			conn.Close()
			accepted <- struct{}{}
		}
	}()
	if out, err := exec.Command("ip", "netns", "exec", c, "ping", "-c1", "-W2", "10.60.0.1").CombinedOutput(); err != nil {
		t.Fatalf("container cannot reach the gateway: %v\n%s", err, out)
	}
	if out, err := exec.Command("ip", "netns", "exec", c, "busybox", "nc", "-w", "2", "10.60.0.1", "53").CombinedOutput(); err != nil {
		t.Fatalf("TCP to the gateway: %v\n%s", err, out)
	}
	select {
	case <-accepted:
	case <-time.After(3 * time.Second):
		t.Fatal("gateway socket accepted nothing")
	}
	if routes := run(t, "ip", "-n", h, "route", "show"); strings.Contains(routes, "10.60.0.") {
		t.Fatalf("host namespace got a route into the network:\n%s", routes)
	}
	// A plugin restart: the process ends without closing the gateway (its
	// namespace goes when its last handle does, the child with it, in the
	// kernel's own time); the next process's gateway for the network, with
	// the same MAC, works once the kernel is done.
	g.UDP.Close()
	g.TCP.Close()
	g.ns.Close()
	g2, err := k.OpenGateway(600, netip.MustParsePrefix("10.60.0.1/24"), mac("02:77:0a:3c:00:01"), 53)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if !ping(c, "10.60.0.1") {
		t.Fatal("the reopened gateway does not answer")
	}
	// Close removes the child before it returns.
	g2.Close()
	if ping(c, "10.60.0.1") {
		t.Fatal("gateway still answers after Close")
	}
}

// vxlanPacket builds a VXLAN payload carrying one UDP datagram from src to
// dst:port, addressed to dstMAC.
func vxlanPacket(vni uint32, dstMAC net.HardwareAddr, src, dst net.IP, port int, payload []byte) []byte {
	b := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0} // VXLAN, I flag
	return append(b, udpFrame(dstMAC, mac("02:99:00:00:00:01"), src, dst, port, payload)...)
}

// udpFrame builds an Ethernet frame carrying one UDP datagram from src to
// dst:port.
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst net.IP, port int, payload []byte) []byte {
	udpLen := 8 + len(payload)
	ipLen := 20 + udpLen
	b := append(slices.Clone(dstMAC), srcMAC...)
	b = append(b, 0x08, 0x00) // IPv4
	ip := []byte{0x45, 0, byte(ipLen >> 8), byte(ipLen), 0, 0, 0, 0, 64, 17, 0, 0}
	ip = append(ip, src.To4()...)
	ip = append(ip, dst.To4()...)
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	ip[10], ip[11] = byte(^sum>>8), byte(^sum)
	b = append(b, ip...)
	b = append(b, 0x30, 0x39, byte(port>>8), byte(port), byte(udpLen>>8), byte(udpLen), 0, 0) // checksum 0: none
	return append(b, payload...)
}

// TestForeignVNIDropped: a crafted VXLAN packet reaches a container only
// with the VNI of that container's network; with any other VNI it is
// dropped. (The positive case proves the probe can see a delivery.)
func TestForeignVNIDropped(t *testing.T) {
	needRoot(t)
	l := newHosts(t, 98)
	l.segment(t, 0, 800)
	l.segment(t, 0, 801)
	m1 := mac("02:77:0a:50:00:01")
	_, c1h := l.container(t, 0, 800, "wcv1", m1, "10.80.0.1/24")
	h2h := l.ns[1]
	sink := listenUDP(t, c1h, "10.80.0.1:9999")
	var out net.Conn
	if err := inNamespace(h2h, func() (err error) { out, err = net.Dial("udp4", "198.18.98.1:4790"); return err }); err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	received := func(vni uint32) bool {
		pkt := vxlanPacket(vni, m1, net.ParseIP("10.80.0.9"), net.ParseIP("10.80.0.1"), 9999, []byte(fmt.Sprint("vni ", vni)))
		if _, err := out.Write(pkt); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		_ = sink.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := sink.ReadFrom(buf)
		return err == nil && string(buf[:n]) == fmt.Sprint("vni ", vni)
	}
	for _, vni := range []uint32{801, 802, 1} {
		if received(vni) {
			t.Fatalf("a packet with VNI %d reached a container of VNI 800", vni)
		}
	}
	if !received(800) {
		t.Fatal("the probe cannot see a delivery with the right VNI; the test proves nothing")
	}
}
