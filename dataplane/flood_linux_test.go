package dataplane

import (
	"fmt"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestSetFloodStates: the flood list follows SetFlood from state to state
// (added before removed, counted), AddFlood and DeleteFlood are idempotent,
// and the repair of remote endpoints (SetRemotes, EntryCounts, Remotes)
// never takes a flood entry for one of its own.
func TestSetFloodStates(t *testing.T) {
	needRoot(t)
	k := segmentKernel(t, 710)
	v := func(s ...string) []net.IP {
		out := make([]net.IP, len(s))
		for i, a := range s {
			out[i] = net.ParseIP(a).To4()
		}
		return out
	}
	check := func(want []net.IP) {
		t.Helper()
		have, err := k.Flood(710)
		if err != nil {
			t.Fatal(err)
		}
		hs, ws := ipStrings(have), ipStrings(want)
		if !slices.Equal(hs, ws) {
			t.Fatalf("flood list %v, want %v", hs, ws)
		}
	}
	states := []struct {
		vteps        []net.IP
		added, moved int
	}{
		{v("198.18.5.2", "198.18.5.3"), 2, 0},
		{v("198.18.5.2", "198.18.5.3"), 0, 0},
		{v("198.18.5.3", "198.18.5.4"), 1, 1},
		{nil, 0, 2},
		{v("198.18.5.9"), 1, 0},
	}
	for i, s := range states {
		rep, err := k.SetFlood(710, s.vteps)
		if err != nil {
			t.Fatalf("state %d: %v", i, err)
		}
		if rep != (FloodRepair{Added: s.added, Removed: s.moved}) {
			t.Fatalf("state %d: repair %+v, want added %d removed %d", i, rep, s.added, s.moved)
		}
		check(s.vteps)
	}
	for range 2 {
		if err := k.AddFlood(710, net.ParseIP("198.18.5.10")); err != nil {
			t.Fatal(err)
		}
	}
	check(v("198.18.5.9", "198.18.5.10"))
	for range 2 {
		if err := k.DeleteFlood(710, net.ParseIP("198.18.5.9")); err != nil {
			t.Fatal(err)
		}
	}
	check(v("198.18.5.10"))

	// The remote endpoints' repair leaves the flood list alone, and does
	// not count it.
	r := remote("10.71.0.2", "02:42:0a:47:00:02", "198.18.5.10")
	if _, err := k.SetRemotes(710, []RemoteEndpoint{r}); err != nil {
		t.Fatal(err)
	}
	if rep, err := k.SetRemotes(710, []RemoteEndpoint{r}); err != nil || rep != (Repair{}) {
		t.Fatalf("second SetRemotes: %+v, %v; want no change", rep, err)
	}
	if _, err := k.SetRemotes(710, nil); err != nil {
		t.Fatal(err)
	}
	check(v("198.18.5.10"))
	if fdb, _, err := k.EntryCounts(710); err != nil || fdb != 0 {
		t.Fatalf("EntryCounts: %d FDB entries, %v; want 0 (flood entries are not remote endpoints')", fdb, err)
	}
	if err := k.DeleteSegment(710); err != nil {
		t.Fatal(err)
	}
	if err := k.DeleteFlood(710, net.ParseIP("198.18.5.10")); err != nil {
		t.Fatalf("DeleteFlood on a device gone: %v", err)
	}
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	slices.Sort(out)
	return out
}

// TestFloodKernelFacts measures what the kernel's VXLAN device does with a
// flood entry, between two hosts with a container each, counting the
// frames host 2's device receives: without a flood entry a container's
// broadcast stays home; with one towards host 2, broadcast and multicast
// frames reach the container there (a receiver that joined the group),
// unknown unicast is sent too (the kernel's fallback: weft's table of
// sources drops it, see antispoof), and ARP is not (proxy on: the device
// consumes it).
func TestFloodKernelFacts(t *testing.T) {
	needRoot(t)
	l := newHosts(t, 97)
	l.segment(t, 0, 720)
	l.segment(t, 1, 720)
	c1, c1h := l.container(t, 0, 720, "wcf1", mac("02:77:0a:48:00:01"), "10.72.0.1/24")
	c2, c2h := l.container(t, 1, 720, "wcf2", mac("02:77:0a:48:00:02"), "10.72.0.2/24")
	for c, dev := range map[string]string{c1: "wcf1", c2: "wcf2"} {
		run(t, "ip", "-n", c, "route", "add", "224.0.0.0/4", "dev", dev)
		// IPv6's own multicast (router solicitations, MLD reports) would
		// be flooded too, at times of its own, and blur the counts.
		run(t, "ip", "netns", "exec", c, "sysctl", "-qw", "net.ipv6.conf."+dev+".disable_ipv6=1")
	}
	bcast := listenUDP(t, c2h, "0.0.0.0:9901")
	mcast := joinGroup(t, c2h, "wcf2", "239.7.7.7", 9902)
	send := senderIn(t, c1h)
	// What host 2's device receives, frame by frame.
	capture := captureIn(t, l.ns[1], DeviceName(720))
	arrived := func(c net.PacketConn, msg string) bool {
		buf := make([]byte, 100)
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return false
			}
			if string(buf[:n]) == msg {
				return true
			}
		}
	}

	send("10.72.0.255:9901", "b0")
	if arrived(bcast, "b0") {
		t.Fatal("a broadcast crossed hosts without a flood entry")
	}
	if err := l.k[0].AddFlood(720, l.vtep[1]); err != nil {
		t.Fatal(err)
	}
	send("10.72.0.255:9901", "b1")
	if !arrived(bcast, "b1") {
		t.Fatal("a broadcast did not reach the other host's container with a flood entry towards it")
	}
	send("239.7.7.7:9902", "m1")
	if !arrived(mcast, "m1") {
		t.Fatal("a multicast datagram did not reach the other host's member with a flood entry towards it")
	}

	// Unknown unicast: a destination MAC no FDB entry holds.
	unknown := mac("02:77:0a:48:00:77")
	run(t, "ip", "-n", c1, "neigh", "replace", "10.72.0.77", "lladdr", unknown.String(), "dev", "wcf1", "nud", "permanent")
	send("10.72.0.77:9903", "u1")
	if !capture(func(f []byte) bool { return string(f[:6]) == string(unknown) }) {
		t.Fatal("the kernel did not flood an unknown unicast frame through the all-zeros entry (the kernel changed: revisit antispoof's rule)")
	}
	// ARP: c1 asks for an address nothing answers for; the request never
	// leaves (the positive control: the broadcast just before does).
	send("10.72.0.255:9901", "b3")
	if !capture(func(f []byte) bool { return f[12] == 0x08 && f[13] == 0x00 && f[0] == 0xff }) {
		t.Fatal("the capture on host 2 misses a broadcast; it proves nothing")
	}
	_ = ping(c1, "10.72.0.88")
	if capture(func(f []byte) bool { return f[12] == 0x08 && f[13] == 0x06 }) {
		t.Fatal("an ARP request from c1 reached host 2 (proxy on should consume it)")
	}

	if err := l.k[0].DeleteFlood(720, l.vtep[1]); err != nil {
		t.Fatal(err)
	}
	send("10.72.0.255:9901", "b2")
	send("239.7.7.7:9902", "m2")
	if arrived(bcast, "b2") || arrived(mcast, "m2") {
		t.Fatal("broadcast or multicast crossed hosts after the flood entry was deleted")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// senderIn returns a function that sends one UDP datagram from namespace
// ns to addr, broadcast allowed.
func senderIn(t *testing.T, ns netns.NsHandle) func(addr, msg string) {
	t.Helper()
	var c net.PacketConn
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	if err := inNamespace(ns, func() (err error) { c, err = lc.ListenPacket(t.Context(), "udp4", ":0"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func(addr, msg string) {
		t.Helper()
		a, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteTo([]byte(msg), a); err != nil {
			t.Fatalf("send to %s: %v", addr, err)
		}
	}
}

// joinGroup opens a UDP socket on group:port in namespace ns, a member of
// group on ifname.
func joinGroup(t *testing.T, ns netns.NsHandle, ifname, group string, port int) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	err := inNamespace(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				mreq := &unix.IPMreqn{Ifindex: int32(ifi.Index)}
				copy(mreq.Multiaddr[:], net.ParseIP(group).To4())
				serr = unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		c, err = lc.ListenPacket(t.Context(), "udp4", fmt.Sprintf("%s:%d", group, port))
		return err
	})
	if err != nil {
		t.Fatalf("join %s on %s: %v", group, ifname, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// captureIn opens a packet socket on device dev of namespace ns; the
// function returned reports whether a frame that match accepts, received
// by the device (not sent), arrives
// within 500 ms, reading through what arrived since the last call (frames
// it passes over are gone).
func captureIn(t *testing.T, ns netns.NsHandle, dev string) func(match func([]byte) bool) bool {
	t.Helper()
	var fd int
	err := inNamespace(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", dev, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	return func(match func([]byte) bool) bool {
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue // the device's own, sent nowhere without an entry
			}
			if err == nil && n >= 14 && match(buf[:n]) {
				return true
			}
		}
		return false
	}
}
