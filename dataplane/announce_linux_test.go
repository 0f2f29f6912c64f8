package dataplane

import (
	"encoding/hex"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestAnnounceNewMAC: a container that holds a reachable entry for a
// remote address keeps sending to the old MAC when the remote container is
// re-created with the same address and a new one (moby#52661's stale ARP),
// until the entry goes stale tens of seconds later; the announcement the
// repair sends with the new entries updates it at once.
func TestAnnounceNewMAC(t *testing.T) {
	needRoot(t)
	l := newHosts(t, 97)
	l.segment(t, 0, 510)
	l.segment(t, 1, 510)
	m1, m2, m2new := mac("02:77:0a:33:00:01"), mac("02:77:0a:33:00:02"), mac("02:42:0a:33:00:02")
	ip1, ip2 := net.ParseIP("10.51.0.1").To4(), net.ParseIP("10.51.0.2").To4()
	c1, c1h := l.container(t, 0, 510, "wc1", m1, "10.51.0.1/24")
	c2, _ := l.container(t, 1, 510, "wc2", m2, "10.51.0.2/24")
	for i, r := range []RemoteEndpoint{{IP: ip2, MAC: m2, VTEP: l.vtep[1]}, {IP: ip1, MAC: m1, VTEP: l.vtep[0]}} {
		if err := l.k[i].SetRemote(510, r); err != nil {
			t.Fatal(err)
		}
	}
	if !ping(c1, ip2.String()) {
		t.Fatal("c1 cannot reach c2")
	}
	if n, _ := neighbour(t, c1h, ip2); n.HardwareAddr.String() != m2.String() || n.State&netlink.NUD_REACHABLE == 0 {
		t.Fatalf("c1's entry for c2 after a ping: %v, state %#x; want REACHABLE at %s", n, n.State, m2)
	}

	run(t, "ip", "-n", c2, "link", "del", "wc2")
	l.container(t, 1, 510, "wc2new", m2new, "10.51.0.2/24")
	rep, err := l.k[0].SetRemotes(510, []RemoteEndpoint{{IP: ip2, MAC: m2new, VTEP: l.vtep[1]}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Repair{FDBAdded: 1, FDBRemoved: 1, NeighAdded: 1}); rep != want {
		t.Fatalf("repair %+v, want %+v", rep, want)
	}
	waitNeighbour(t, c1h, ip2, m2new, 300*time.Millisecond)
	if !ping(c1, ip2.String()) {
		t.Fatal("c1 cannot reach the re-created c2")
	}
}

// TestAnnouncerIsolated: the announcer is not in the host namespace, and a
// broadcast a container sends reaches the other containers of its segment
// and no socket of the host namespace (a child of the device there would
// take a datagram from 0.0.0.0 to 255.255.255.255 into the host's stack).
func TestAnnouncerIsolated(t *testing.T) {
	needRoot(t)
	l := newHosts(t, 96)
	l.segment(t, 0, 520)
	m1 := mac("02:77:0a:34:00:01")
	_, c1h := l.container(t, 0, 520, "wc1", m1, "10.52.0.1/24")
	_, c2h := l.container(t, 0, 520, "wc2", mac("02:77:0a:34:00:02"), "10.52.0.2/24")
	links, err := l.k[0].h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, lk := range links {
		if _, ok := lk.(*netlink.Macvlan); ok {
			t.Fatalf("a macvlan child in the host namespace: %s", lk.Attrs().Name)
		}
	}

	hostSock, c2Sock := listenUDP(t, l.ns[0], "0.0.0.0:9999"), listenUDP(t, c2h, "0.0.0.0:9999")

	frame := udpFrame(mac("ff:ff:ff:ff:ff:ff"), m1, net.IPv4zero, net.IPv4bcast, 9999, []byte("broadcast"))
	err = inNamespace(c1h, func() error {
		ifc, err := net.InterfaceByName("wc1")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = c2Sock.SetReadDeadline(time.Now().Add(time.Second))
	if n, _, err := c2Sock.ReadFrom(buf); err != nil || string(buf[:n]) != "broadcast" {
		t.Fatalf("the broadcast did not reach the other container (%v); the probe proves nothing", err)
	}
	// Delivered to every child in the same pass: had the host namespace a
	// child, the datagram would be there by now.
	_ = hostSock.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := hostSock.ReadFrom(buf); err == nil {
		t.Fatalf("a container's broadcast reached a socket of the host namespace: %q", buf[:n])
	}
}

// listenUDP opens a UDP socket on addr in namespace ns, closed when the
// test ends.
func listenUDP(t *testing.T, ns netns.NsHandle, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	if err := inNamespace(ns, func() (err error) { c, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGARPFrame: the announcement is an ARP reply to broadcast whose sender
// and target are both the endpoint (a gratuitous ARP in the form Linux
// takes for an entry it has, and a proxying VXLAN device does not answer).
func TestGARPFrame(t *testing.T) {
	r := remote("10.51.0.2", "02:42:0a:33:00:02", "198.18.0.2")
	var f [42]byte
	garp(&f, r)
	want := "ffffffffffff" + "02420a330002" + "0806" + // Ethernet: broadcast, from the endpoint, ARP
		"0001" + "0800" + "06" + "04" + "0002" + // Ethernet, IPv4, lengths, reply
		"02420a330002" + "0a330002" + // sender
		"02420a330002" + "0a330002" // target
	if got := hex.EncodeToString(f[:]); got != want {
		t.Fatalf("frame\n%s\nwant\n%s", got, want)
	}
}
