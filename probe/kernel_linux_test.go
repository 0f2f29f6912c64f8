package probe

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/mesh/meshtest"
	"github.com/weftnet/weft/underlay"
)

// TestKernelProbe runs the probe on the kernel's probe segment between two
// "hosts" (network namespaces) joined through a bridge in a third, as
// hosts are through a switch: the probes must travel inside VXLAN on the
// networks' UDP port, so a firewall rule dropping that port on one host
// makes the other unreachable, and a switch port with a smaller MTU than
// the hosts' (a black hole: nothing tells the sender) shows as the size
// the path carries. Needs root.
func TestKernelProbe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (it creates network namespaces)")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	tag := fmt.Sprintf("wpr%d", rand.IntN(1<<20))
	sw := newNS(t, tag+"s")
	run(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", sw, "link", "set", "br0", "up")
	hosts := []string{newNS(t, tag+"a"), newNS(t, tag+"b")}
	vteps := []netip.Addr{netip.MustParseAddr("198.18.77.1"), netip.MustParseAddr("198.18.77.2")}
	for i, h := range hosts {
		port := fmt.Sprintf("p%d", i)
		run(t, "ip", "link", "add", "eth0", "netns", h, "type", "veth", "peer", "name", port, "netns", sw)
		run(t, "ip", "-n", sw, "link", "set", port, "master", "br0", "up")
		run(t, "ip", "-n", h, "addr", "add", vteps[i].String()+"/24", "dev", "eth0")
		run(t, "ip", "-n", h, "link", "set", "eth0", "up")
	}

	c := meshtest.New(t, []string{"a", "b"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var probers []*Prober
	for i, h := range hosts {
		nh, err := netns.GetFromName(h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nh.Close() })
		k, err := dataplane.NewKernelAt(nh, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		p := New(Config{
			Open:     KernelPorts(k, 4790),
			Store:    c.Members[i],
			Underlay: fixedUnderlay{underlay.State{Addr: vteps[i], MTU: 1500}},
			Overhead: dataplane.Overhead,
			Interval: 100 * time.Millisecond, SizeInterval: time.Second,
		})
		probers = append(probers, p)
		wg.Add(1)
		go func() { defer wg.Done(); p.Run(ctx) }()
	}
	wait := func(i int, what string, within time.Duration, ok func(PeerStatus) bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ps := probers[i].Peers()
			if len(ps) == 1 && ok(ps[0]) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("host %d: peer never %s within %s: %+v", i, what, within, ps)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for i := range probers {
		wait(i, "answering with 1450 bytes", 10*time.Second, func(s PeerStatus) bool { return s.State == StateOK && s.Largest == 1450 })
	}
	// The probe travels as VXLAN on UDP 4790 between the hosts' addresses.
	run(t, "ip", "netns", "exec", hosts[1], "iptables", "-w", "-I", "INPUT", "-p", "udp", "--dport", "4790", "-j", "DROP")
	for i := range probers {
		wait(i, "unreachable with UDP 4790 dropped on host 1", 3*time.Second, func(s PeerStatus) bool { return s.State == StateUnreachable })
	}
	run(t, "ip", "netns", "exec", hosts[1], "iptables", "-w", "-D", "INPUT", "-p", "udp", "--dport", "4790", "-j", "DROP")
	for i := range probers {
		wait(i, "answering again", 3*time.Second, func(s PeerStatus) bool { return s.State == StateOK })
	}

	// The switch's port of host 0 takes 1400-byte frames: larger VXLAN
	// packets from host 0 are dropped there, silently, while host 1's
	// larger packets still pass the other way. (A veth takes frames up to
	// 4 bytes over its MTU, room for a VLAN tag: 1350 to 1354 bytes pass.)
	run(t, "ip", "-n", sw, "link", "set", "p0", "mtu", "1400")
	wait(0, "measuring 1350 to 1354 bytes towards host 1", 10*time.Second, func(s PeerStatus) bool {
		return s.State == StateOK && s.Largest >= 1400-dataplane.Overhead && s.Largest <= 1404-dataplane.Overhead
	})
	wait(1, "still measuring 1450 bytes towards host 0", time.Second, func(s PeerStatus) bool { return s.Largest == 1450 })
}

func newNS(t *testing.T, name string) string {
	t.Helper()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
