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
	"syscall"
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
	sw, hosts, probers := kernelHosts(t, 77, func(c *Config) { c.Interval, c.SizeInterval = 100*time.Millisecond, time.Second })
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

// kernelHosts makes two hosts (namespaces with eth0 on 198.18.<n>.1 and
// .2) joined through a bridge in a third, and a prober on each, over the
// kernel's probe segment and a real mesh, run until the test ends. It
// returns the bridge's namespace, the hosts' and their probers.
func kernelHosts(tb testing.TB, n byte, configure func(*Config)) (string, []string, []*Prober) {
	tb.Helper()
	tag := fmt.Sprintf("wpr%d", rand.IntN(1<<20))
	sw := newNS(tb, tag+"s")
	run(tb, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	run(tb, "ip", "-n", sw, "link", "set", "br0", "up")
	hosts := []string{newNS(tb, tag+"a"), newNS(tb, tag+"b")}
	vteps := []netip.Addr{netip.AddrFrom4([4]byte{198, 18, n, 1}), netip.AddrFrom4([4]byte{198, 18, n, 2})}
	for i, h := range hosts {
		port := fmt.Sprintf("p%d", i)
		run(tb, "ip", "link", "add", "eth0", "netns", h, "type", "veth", "peer", "name", port, "netns", sw)
		run(tb, "ip", "-n", sw, "link", "set", port, "master", "br0", "up")
		run(tb, "ip", "-n", h, "addr", "add", vteps[i].String()+"/24", "dev", "eth0")
		run(tb, "ip", "-n", h, "link", "set", "eth0", "up")
	}
	c := meshtest.New(tb, []string{"a", "b"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	tb.Cleanup(func() { cancel(); wg.Wait() })
	var probers []*Prober
	for i, h := range hosts {
		nh, err := netns.GetFromName(h)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { nh.Close() })
		k, err := dataplane.NewKernelAt(nh, nil)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(k.Close)
		cfg := Config{
			Open:     KernelPorts(k, 4790),
			Store:    c.Members[i],
			Underlay: fixedUnderlay{underlay.State{Addr: vteps[i], MTU: 1500}},
			Overhead: dataplane.Overhead,
		}
		configure(&cfg)
		p := New(cfg)
		probers = append(probers, p)
		wg.Add(1)
		go func() { defer wg.Done(); p.Run(ctx) }()
	}
	return sw, hosts, probers
}

func newNS(t testing.TB, name string) string {
	t.Helper()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// BenchmarkKernelProbe measures what one probe costs: two hosts as in
// TestKernelProbe, probing each other every 2 ms (a small probe and its
// reply each way, through VXLAN), for 5 s; the process's CPU time (both
// hosts' probers, the sockets, the kernel's work charged to it) per probe
// answered. Needs root.
//
//	go test ./probe -run '^$' -bench KernelProbe -benchtime 1x
func BenchmarkKernelProbe(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (it creates network namespaces)")
	}
	var perProbe float64
	for range b.N {
		_, _, probers := kernelHosts(b, 78, func(c *Config) { c.Interval, c.SizeInterval, c.MaxRate = 2*time.Millisecond, time.Hour, 1000 })
		deadline := time.Now().Add(10 * time.Second)
		for {
			ps0, ps1 := probers[0].Peers(), probers[1].Peers()
			if len(ps0) == 1 && len(ps1) == 1 && ps0[0].State == StateOK && ps1[0].State == StateOK {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the probers never reached each other")
			}
			time.Sleep(10 * time.Millisecond)
		}
		answered := func() uint64 { return probers[0].Peers()[0].Answered + probers[1].Peers()[0].Answered }
		a0, c0 := answered(), cpuTime(b)
		time.Sleep(5 * time.Second)
		a1, c1 := answered(), cpuTime(b)
		perProbe = float64((c1 - c0).Microseconds()) / float64(a1-a0)
	}
	b.ReportMetric(perProbe, "cpu-µs/probe")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
