package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// member is one container of a cross-host test: where it runs, its name or
// ID there, and its address on the network under test.
type member struct {
	h  *lab.Host
	id string
	ip string
}

// spread starts a global service (one task per host) and one plain
// container per host on network, and returns them all.
func spread(t *testing.T, l *lab.Lab, prefix, network string) []member {
	t.Helper()
	createService(t, l, prefix+"-svc", "--network", network, "--mode", "global", "--endpoint-mode", "dnsrr")
	var ms []member
	for h, tasks := range serviceTasks(t, l, prefix+"-svc", network, len(l.Hosts), 3*time.Minute) {
		for id, ip := range tasks {
			ms = append(ms, member{h, id, ip})
		}
	}
	for _, h := range l.Hosts {
		name := prefix + "-" + h.Name
		ms = append(ms, member{h, name, run(t, h, name, network)})
	}
	return ms
}

// TestAcrossHosts: a service with a task on every host plus a container
// on every host; every one reaches every other, by ICMP and TCP; a second
// weft network over the same hosts stays apart; Docker's overlay works
// beside weft.
func TestAcrossHosts(t *testing.T) {
	l := need(t)
	createNetwork(t, l, "mesh-a", "10.93.1.0/24")
	createNetwork(t, l, "mesh-b", "10.93.2.0/24")
	a := spread(t, l, "ma", "mesh-a")
	for _, from := range a {
		for _, to := range a {
			if from.id != to.id {
				reach(t, from.h, from.id, to.ip, 30*time.Second)
			}
		}
	}

	// The MTU comes from the 1500-byte underlay without options.
	if out := docker(t, a[0].h, "exec", a[0].id, "ip", "-o", "link", "show"); !strings.Contains(out, "mtu 1450") {
		t.Fatalf("no 1450-MTU weft interface:\n%s", out)
	}

	// A second weft network, on the same hosts: isolated from the first.
	var b []member
	for _, h := range l.Hosts {
		name := "mb-" + h.Name
		b = append(b, member{h, name, run(t, h, name, "mesh-b")})
	}
	reach(t, b[0].h, b[0].id, b[1].ip, 30*time.Second)
	for _, x := range b {
		for _, y := range a {
			if x.h != y.h {
				unreachable(t, x.h, x.id, y.ip)
				unreachable(t, y.h, y.id, x.ip)
			}
		}
	}

	// Docker's overlay on the same hosts, side by side with weft.
	docker(t, l.Manager(), "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.93.9.0/24", "mesh-ov")
	t.Cleanup(func() { _, _ = l.Manager().Docker(context.Background(), "network", "rm", "mesh-ov") })
	ov1 := run(t, l.Hosts[0], "mov-1", "mesh-ov")
	ov2 := run(t, l.Hosts[1], "mov-2", "mesh-ov")
	reach(t, l.Hosts[0], "mov-1", ov2, 30*time.Second)
	reach(t, l.Hosts[1], "mov-2", ov1, 30*time.Second)
	reach(t, a[0].h, a[0].id, a[len(a)-1].ip, 10*time.Second)
}

// TestScale: tasks added by scaling up are reachable from every host
// within seconds; tasks removed by scaling down leave no FDB or neighbour
// entry on any host.
func TestScale(t *testing.T) {
	l := need(t)
	createNetwork(t, l, "scale", "10.94.0.0/24")
	var probes []member
	for _, h := range l.Hosts {
		name := "sc-" + h.Name
		probes = append(probes, member{h, name, run(t, h, name, "scale")})
	}
	createService(t, l, "sc-svc", "--network", "scale", "--replicas", "1", "--endpoint-mode", "dnsrr")
	serviceTasks(t, l, "sc-svc", "scale", 1, 3*time.Minute)
	docker(t, l.Manager(), "service", "scale", "--detach", "sc-svc=6")
	tasks := serviceTasks(t, l, "sc-svc", "scale", 6, 3*time.Minute)
	start := time.Now()
	for _, p := range probes {
		for th, ts := range tasks {
			for _, ip := range ts {
				if th != p.h {
					reach(t, p.h, p.id, ip, 10*time.Second)
				}
			}
		}
	}
	t.Logf("6 tasks reachable from every host %s after they ran", time.Since(start).Round(time.Millisecond))

	var gone []string
	for _, ts := range tasks {
		for _, ip := range ts {
			gone = append(gone, ip)
		}
	}
	docker(t, l.Manager(), "service", "scale", "--detach", "sc-svc=1")
	left := serviceTasks(t, l, "sc-svc", "scale", 1, 3*time.Minute)
	for _, ts := range left {
		for _, ip := range ts {
			gone = slices.DeleteFunc(gone, func(s string) bool { return s == ip })
		}
	}
	for _, h := range l.Hosts {
		err := lab.WaitFor(context.Background(), 10*time.Second, 200*time.Millisecond, func() error {
			neigh := hostExec(t, h, "ip", "neigh", "show", "nud", "permanent")
			for _, ip := range gone {
				if strings.Contains(neigh+"\n", ip+" ") {
					return fmt.Errorf("neighbour entry for removed task %s remains", ip)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
	}
}

// remoteEntries counts, on h, the static FDB entries pointing at vtep.
func remoteEntries(t *testing.T, h *lab.Host, vtep string) int {
	t.Helper()
	out := hostExec(t, h, "bridge", "fdb", "show")
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, " dev weft") && strings.Contains(line, "dst "+vtep+" ") {
			n++
		}
	}
	return n
}

// TestHostCutOff: a host cut from the underlay has its entries removed by
// the others, and its containers are reachable again soon after it comes
// back, with nothing done on the other hosts.
func TestHostCutOff(t *testing.T) {
	l := need(t)
	createNetwork(t, l, "cut", "10.95.0.0/24")
	var ms []member
	for _, h := range l.Hosts {
		name := "cut-" + h.Name
		ms = append(ms, member{h, name, run(t, h, name, "cut")})
	}
	for _, m := range ms[1:] {
		reach(t, ms[0].h, ms[0].id, m.ip, 30*time.Second)
	}
	victim := l.Hosts[len(l.Hosts)-1]
	vtep := victim.Addr().String()
	if n := remoteEntries(t, l.Hosts[0], vtep); n == 0 {
		t.Fatalf("no FDB entry for %s on %s before the cut", vtep, l.Hosts[0].Name)
	}

	if err := victim.CutUnderlay(context.Background()); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	restored := false
	defer func() {
		if !restored {
			_ = victim.RestoreUnderlay(context.Background())
		}
	}()
	for _, h := range l.Hosts[:len(l.Hosts)-1] {
		err := lab.WaitFor(context.Background(), 30*time.Second, 100*time.Millisecond, func() error {
			if n := remoteEntries(t, h, vtep); n > 0 {
				return fmt.Errorf("%d FDB entries still point at %s", n, vtep)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
	}
	purge := time.Since(cut)
	t.Logf("cut-off host purged everywhere after %s", purge.Round(100*time.Millisecond))

	if err := victim.RestoreUnderlay(context.Background()); err != nil {
		t.Fatal(err)
	}
	restored = true
	back := time.Now()
	reach(t, ms[0].h, ms[0].id, ms[len(ms)-1].ip, 60*time.Second)
	t.Logf("returning host reachable after %s", time.Since(back).Round(100*time.Millisecond))
	reach(t, ms[len(ms)-1].h, ms[len(ms)-1].id, ms[1].ip, 30*time.Second)
}
