package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/internal/nstest"
)

// These tests need root: they work in fresh network namespaces, never in
// the caller's.

func needRoot(t testing.TB) { nstest.NeedRoot(t, "firewall tests", "ip", "nft") }

func run(t testing.TB, args ...string) string { return nstest.Run(t, args...) }

func newNS(t testing.TB) (string, netns.NsHandle) { return nstest.NewNS(t, "wfw") }

// inNS runs fn on a locked thread in ns (sockets made there stay there).
func inNS(t testing.TB, ns netns.NsHandle, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr != nil {
			errc <- serr // the thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// pair links a "host" namespace (10.77.0.1) and an "outside" one holding
// a member's address (10.77.0.2) and an outsider's (10.77.0.3).
func pair(t *testing.T) (hostName string, host, outside netns.NsHandle) {
	hostName, host = newNS(t)
	outName, outside := newNS(t)
	run(t, "ip", "-n", hostName, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", outName)
	run(t, "ip", "-n", hostName, "addr", "add", "10.77.0.1/24", "dev", "eth0")
	run(t, "ip", "-n", outName, "addr", "add", "10.77.0.2/24", "dev", "eth0")
	run(t, "ip", "-n", outName, "addr", "add", "10.77.0.3/24", "dev", "eth0")
	run(t, "ip", "-n", hostName, "link", "set", "eth0", "up")
	run(t, "ip", "-n", outName, "link", "set", "eth0", "up")
	return hostName, host, outside
}

var (
	member   = netip.MustParseAddr("10.77.0.2")
	outsider = netip.MustParseAddr("10.77.0.3")
)

// TestTableLetsMembersOnly: with the table, the VXLAN, mesh and WireGuard
// ports take packets from members only; other ports and other tables are untouched;
// the same rules applied again change nothing; the table repairs itself
// and goes away when asked.
func TestTableLetsMembersOnly(t *testing.T) {
	needRoot(t)
	hostName, host, outside := pair(t)
	// A table of someone else's, as Docker's iptables-nft makes.
	run(t, "ip", "netns", "exec", hostName, "nft", "add table ip filter; add chain ip filter INPUT { type filter hook input priority 0; policy accept; }; add rule ip filter INPUT tcp dport 9 drop")
	tbl := NewNFTable(int(host))
	rules := Rules{VXLANPort: 4790, MeshPort: 7950, WGPort: 4791, Members: []netip.Addr{member}}
	if err := tbl.Apply(rules); err != nil {
		t.Fatal(err)
	}
	if got, err := tbl.Members(); err != nil || !slices.Equal(got, []netip.Addr{member}) {
		t.Fatalf("members %v, %v", got, err)
	}

	var vx, meshUDP, wg, wg2 net.PacketConn
	var meshTCP, other net.Listener
	inNS(t, host, func() (err error) {
		if vx, err = net.ListenPacket("udp4", ":4790"); err != nil {
			return err
		}
		if wg, err = net.ListenPacket("udp4", ":4791"); err != nil {
			return err
		}
		if wg2, err = net.ListenPacket("udp4", ":4792"); err != nil {
			return err
		}
		if meshUDP, err = net.ListenPacket("udp4", ":7950"); err != nil {
			return err
		}
		if meshTCP, err = net.Listen("tcp4", ":7950"); err != nil {
			return err
		}
		other, err = net.Listen("tcp4", ":7952")
		return err
	})
	defer vx.Close()
	defer wg.Close()
	defer wg2.Close()
	defer meshUDP.Close()
	defer meshTCP.Close()
	defer other.Close()
	go acceptAll(meshTCP)
	go acceptAll(other)

	for _, sock := range []net.PacketConn{vx, meshUDP, wg, wg2} {
		port := sock.LocalAddr().(*net.UDPAddr).Port
		// The outsider's datagram goes first on the same link: when the
		// member's has arrived, the outsider's would have too.
		send(t, outside, outsider, port, "outsider")
		send(t, outside, member, port, "member")
		if got := recv(t, sock); got != "member" {
			t.Fatalf("port %d: first datagram %q, want the member's (the outsider's was let in)", port, got)
		}
	}
	if err := dial(outside, outsider, 7950); err == nil {
		t.Fatal("an outsider connected to the mesh port")
	}
	for _, port := range []int{7950, 7952} {
		if err := dial(outside, member, port); err != nil {
			t.Fatalf("a member cannot connect to port %d: %v", port, err)
		}
	}
	if err := dial(outside, outsider, 7952); err != nil {
		t.Fatalf("the key service's port is closed to an outsider: %v", err)
	}
	if d := tbl.Dropped(); len(d) != 5 || slices.Contains(d, 0) {
		t.Fatalf("drop counters %v", d)
	}

	// The same rules write nothing; new members are let in.
	if err := tbl.Apply(rules); err != nil {
		t.Fatal(err)
	}
	rules.Members = []netip.Addr{member, outsider}
	if err := tbl.Apply(rules); err != nil {
		t.Fatal(err)
	}
	send(t, outside, outsider, 4790, "now a member")
	if got := recv(t, vx); got != "now a member" {
		t.Fatalf("got %q", got)
	}
	// Someone deletes the table: the next Apply builds it again.
	run(t, "ip", "netns", "exec", hostName, "nft", "delete table ip weft")
	if err := tbl.Apply(rules); err != nil {
		t.Fatal(err)
	}
	if got, err := tbl.Members(); err != nil || len(got) != 2 {
		t.Fatalf("after repair: %v, %v", got, err)
	}
	// Other ports, and WireGuard off: a rebuild.
	if err := tbl.Apply(Rules{VXLANPort: 4792, MeshPort: 7960, Members: rules.Members}); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "ip", "netns", "exec", hostName, "nft", "list table ip weft"); !strings.Contains(out, "dport 4792") || strings.Contains(out, "dport 4790") || strings.Contains(out, "dport 4791") {
		t.Fatalf("after a change of ports:\n%s", out)
	}
	if got, err := tbl.Members(); err != nil || len(got) != 2 {
		t.Fatalf("members of the table without WireGuard: %v, %v", got, err)
	}
	for range 2 {
		if err := tbl.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tbl.Members(); err == nil {
		t.Fatal("table still there after Remove")
	}
	if out := run(t, "ip", "netns", "exec", hostName, "nft", "list ruleset"); !strings.Contains(out, "tcp dport 9 drop") {
		t.Fatalf("someone else's table was touched:\n%s", out)
	}
}

func acceptAll(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// send sends one datagram from src in ns to 10.77.0.1:port.
func send(t *testing.T, ns netns.NsHandle, src netip.Addr, port int, msg string) {
	t.Helper()
	inNS(t, ns, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: net.IPv4(10, 77, 0, 1), Port: port})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(msg))
		return err
	})
}

func recv(t *testing.T, c net.PacketConn) string {
	t.Helper()
	buf := make([]byte, 100)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("nothing received: %v", err)
	}
	return string(buf[:n])
}

// dial connects from src in ns to 10.77.0.1:port; a dropped SYN times out
// after half a second.
func dial(ns netns.NsHandle, src netip.Addr, port int) error {
	var err error
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, _ := netns.Get()
		defer orig.Close()
		_ = netns.Set(ns)
		d := net.Dialer{Timeout: 500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var c net.Conn
		c, err = d.Dial("tcp4", fmt.Sprintf("10.77.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
