package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// These tests need root: each works in fresh network namespaces made with
// iproute2 and removed at the end, never in the caller's namespace.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dataplane tests need root (they create network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("dataplane tests need iproute2's ip command")
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNS creates a named namespace removed when the test ends.
func newNS(t *testing.T) (string, netns.NsHandle) {
	t.Helper()
	name := fmt.Sprintf("wdp-%d-%d", os.Getpid(), rand.IntN(1<<30))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name, h
}

func newKernel(t *testing.T, h netns.NsHandle) *Kernel {
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

// TestTwoHostsPing builds the whole kernel model between two "hosts"
// (namespaces joined by a veth underlay) with a "container" namespace on
// each, and checks that the containers reach each other only once the
// remote endpoints are programmed, and that another VNI cannot reach them.
func TestTwoHostsPing(t *testing.T) {
	needRoot(t)
	h1, h1h := newNS(t)
	h2, h2h := newNS(t)
	c1, _ := newNS(t)
	c2, _ := newNS(t)
	c3, _ := newNS(t)
	run(t, "ip", "link", "add", "wdpu1", "netns", h1, "type", "veth", "peer", "name", "wdpu2", "netns", h2)
	run(t, "ip", "-n", h1, "addr", "add", "198.18.99.1/24", "dev", "wdpu1")
	run(t, "ip", "-n", h2, "addr", "add", "198.18.99.2/24", "dev", "wdpu2")
	run(t, "ip", "-n", h1, "link", "set", "wdpu1", "up")
	run(t, "ip", "-n", h2, "link", "set", "wdpu2", "up")
	k1, k2 := newKernel(t, h1h), newKernel(t, h2h)

	if mtu := k1.UnderlayMTU(net.ParseIP("198.18.99.1")); mtu != 1500 {
		t.Fatalf("UnderlayMTU = %d, want 1500", mtu)
	}
	n := Segment{VNI: 500, MTU: 1450, Port: 4790}
	for _, k := range []*Kernel{k1, k2} {
		if err := k.EnsureSegment(n); err != nil {
			t.Fatal(err)
		}
	}
	// A second network on host 2 holds c3, with an address in the same
	// subnet: it must stay unreachable from c1.
	if err := k2.EnsureSegment(Segment{VNI: 501, MTU: 1450, Port: 4790}); err != nil {
		t.Fatal(err)
	}
	m1, m2, m3 := mac("02:77:0a:32:00:01"), mac("02:77:0a:32:00:02"), mac("02:77:0a:32:00:03")
	attach := func(k *Kernel, host string, vni uint32, ifname string, m net.HardwareAddr, cont, addr string) {
		if err := k.CreateInterface(vni, ifname, m); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "-n", host, "link", "set", ifname, "netns", cont)
		run(t, "ip", "-n", cont, "addr", "add", addr, "dev", ifname)
		run(t, "ip", "-n", cont, "link", "set", ifname, "up")
	}
	attach(k1, h1, 500, "wc1", m1, c1, "10.50.0.1/24")
	attach(k2, h2, 500, "wc2", m2, c2, "10.50.0.2/24")
	attach(k2, h2, 501, "wc3", m3, c3, "10.50.0.3/24")

	ping := func(from, to string) bool {
		return exec.Command("ip", "netns", "exec", from, "ping", "-c", "1", "-W", "1", to).Run() == nil
	}
	if ping(c1, "10.50.0.2") {
		t.Fatal("c1 reached c2 before any remote endpoint was programmed (flooding?)")
	}
	if _, err := k1.SetRemotes(500, []RemoteEndpoint{{IP: net.ParseIP("10.50.0.2"), MAC: m2, VTEP: net.ParseIP("198.18.99.2")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := k2.SetRemotes(500, []RemoteEndpoint{{IP: net.ParseIP("10.50.0.1"), MAC: m1, VTEP: net.ParseIP("198.18.99.1")}}); err != nil {
		t.Fatal(err)
	}
	if !ping(c1, "10.50.0.2") || !ping(c2, "10.50.0.1") {
		t.Fatal("containers on two hosts cannot reach each other with remote endpoints programmed")
	}
	if ping(c1, "10.50.0.3") || ping(c3, "10.50.0.1") {
		t.Fatal("a container on another VNI is reachable")
	}
	// Withdrawing the remote endpoint cuts the path again.
	if _, err := k1.SetRemotes(500, nil); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", c1, "neigh", "flush", "all")
	if ping(c1, "10.50.0.2") {
		t.Fatal("c2 still reachable after its entries were withdrawn")
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
	// A second gateway for the same network (a plugin restart) works too.
	g.Close()
	g2, err := k.OpenGateway(600, netip.MustParsePrefix("10.60.0.1/24"), mac("02:77:0a:3c:00:01"), 53)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	g2.Close()
	// The kernel tears the namespace down asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for exec.Command("ip", "netns", "exec", c, "ping", "-c1", "-W1", "10.60.0.1").Run() == nil {
		if time.Now().After(deadline) {
			t.Fatal("gateway still answers 5 s after Close")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// vxlanPacket builds a VXLAN payload carrying one UDP datagram from src to
// dst:port, addressed to dstMAC.
func vxlanPacket(vni uint32, dstMAC net.HardwareAddr, src, dst net.IP, port int, payload []byte) []byte {
	udpLen := 8 + len(payload)
	ipLen := 20 + udpLen
	b := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0} // VXLAN, I flag
	b = append(b, dstMAC...)
	b = append(b, 0x02, 0x99, 0, 0, 0, 1, 0x08, 0x00) // source MAC, IPv4
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
	h1, h1h := newNS(t)
	h2, h2h := newNS(t)
	c1, _ := newNS(t)
	run(t, "ip", "link", "add", "wdpv1", "netns", h1, "type", "veth", "peer", "name", "wdpv2", "netns", h2)
	run(t, "ip", "-n", h1, "addr", "add", "198.18.98.1/24", "dev", "wdpv1")
	run(t, "ip", "-n", h2, "addr", "add", "198.18.98.2/24", "dev", "wdpv2")
	run(t, "ip", "-n", h1, "link", "set", "wdpv1", "up")
	run(t, "ip", "-n", h2, "link", "set", "wdpv2", "up")
	k := newKernel(t, h1h)
	for _, vni := range []uint32{800, 801} {
		if err := k.EnsureSegment(Segment{VNI: vni, MTU: 1450, Port: 4790}); err != nil {
			t.Fatal(err)
		}
	}
	m1 := mac("02:77:0a:50:00:01")
	if err := k.CreateInterface(800, "wcv1", m1); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", h1, "link", "set", "wcv1", "netns", c1)
	run(t, "ip", "-n", c1, "addr", "add", "10.80.0.1/24", "dev", "wcv1")
	run(t, "ip", "-n", c1, "link", "set", "wcv1", "up")

	c1h, err := netns.GetFromName(c1)
	if err != nil {
		t.Fatal(err)
	}
	defer c1h.Close()
	var sink net.PacketConn
	if err := inNamespace(c1h, func() (err error) { sink, err = net.ListenPacket("udp4", "10.80.0.1:9999"); return err }); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
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
