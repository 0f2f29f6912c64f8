package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// spread starts a global service (one task per host) and one plain
// container per host on network, and returns them all.
func spread(t *testing.T, l *lab.Lab, prefix, network string) []labtest.Ctr {
	t.Helper()
	labtest.CreateService(t, l, prefix+"-svc", "--network", network, "--mode", "global", "--endpoint-mode", "dnsrr")
	var ms []labtest.Ctr
	for h, tasks := range labtest.ServiceTasks(t, l, prefix+"-svc", network, len(l.Hosts), 3*time.Minute) {
		for id, ip := range tasks {
			ms = append(ms, labtest.Ctr{Host: h, Name: id, IP: ip})
		}
	}
	return append(ms, labtest.RunOnEach(t, l, prefix, network)...)
}

// TestAcrossHosts: a service with a task on every host plus a container
// on every host; every one reaches every other, by ICMP and TCP; a second
// weft network over the same hosts stays apart; Docker's overlay works
// beside weft.
func TestAcrossHosts(t *testing.T) {
	l := need(t)
	labtest.CreateSwarmNetwork(t, l, "mesh-a", "10.93.1.0/24")
	labtest.CreateSwarmNetwork(t, l, "mesh-b", "10.93.2.0/24")
	a := spread(t, l, "ma", "mesh-a")
	for _, from := range a {
		for _, to := range a {
			if from.Name != to.Name {
				labtest.Reach(t, from.Host, from.Name, to.IP, 30*time.Second)
			}
		}
	}

	// The MTU comes from the 1500-byte underlay without options.
	if mtu := labtest.WeftMTU(t, a[0].Host, a[0].Name); mtu != 1450 {
		t.Fatalf("weft interface of %s has MTU %d, want 1450", a[0].Name, mtu)
	}

	// A second weft network, on the same hosts: isolated from the first.
	b := labtest.RunOnEach(t, l, "mb", "mesh-b")
	labtest.Reach(t, b[0].Host, b[0].Name, b[1].IP, 30*time.Second)
	for _, x := range b {
		for _, y := range a {
			if x.Host != y.Host {
				labtest.Unreachable(t, x.Host, x.Name, y.IP)
				labtest.Unreachable(t, y.Host, y.Name, x.IP)
			}
		}
	}

	// Docker's overlay on the same hosts, side by side with weft.
	l.Manager().MustDocker(t, "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.93.9.0/24", "mesh-ov")
	t.Cleanup(func() { _, _ = l.Manager().Docker(context.Background(), "network", "rm", "mesh-ov") })
	ov1 := labtest.Run(t, l.Hosts[0], "mov-1", "mesh-ov")
	ov2 := labtest.Run(t, l.Hosts[1], "mov-2", "mesh-ov")
	labtest.Reach(t, l.Hosts[0], "mov-1", ov2, 30*time.Second)
	labtest.Reach(t, l.Hosts[1], "mov-2", ov1, 30*time.Second)
	labtest.Reach(t, a[0].Host, a[0].Name, a[len(a)-1].IP, 10*time.Second)
}

// TestScale: tasks added by scaling up are reachable from every host
// within seconds; tasks removed by scaling down leave no FDB or neighbour
// entry on any host.
func TestScale(t *testing.T) {
	l := need(t)
	labtest.CreateSwarmNetwork(t, l, "scale", "10.94.0.0/24")
	probes := labtest.RunOnEach(t, l, "sc", "scale")
	labtest.CreateService(t, l, "sc-svc", "--network", "scale", "--replicas", "1", "--endpoint-mode", "dnsrr")
	labtest.ServiceTasks(t, l, "sc-svc", "scale", 1, 3*time.Minute)
	l.Manager().MustDocker(t, "service", "scale", "--detach", "sc-svc=6")
	tasks := labtest.ServiceTasks(t, l, "sc-svc", "scale", 6, 3*time.Minute)
	start := time.Now()
	for _, p := range probes {
		for th, ts := range tasks {
			for _, ip := range ts {
				if th != p.Host {
					labtest.Reach(t, p.Host, p.Name, ip, 10*time.Second)
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
	l.Manager().MustDocker(t, "service", "scale", "--detach", "sc-svc=1")
	left := labtest.ServiceTasks(t, l, "sc-svc", "scale", 1, 3*time.Minute)
	for _, ts := range left {
		for _, ip := range ts {
			gone = slices.DeleteFunc(gone, func(s string) bool { return s == ip })
		}
	}
	for _, h := range l.Hosts {
		err := lab.WaitFor(context.Background(), 10*time.Second, 200*time.Millisecond, func() error {
			k, err := labtest.Kernel(h)
			if err != nil {
				return err
			}
			for _, d := range k.Devices {
				for _, e := range d.Neighbors {
					if slices.Contains(gone, e.IP.String()) {
						return fmt.Errorf("neighbour entry for removed task %s remains on %s", e.IP, d.Name)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
	}
}

// TestHostCutOff: a host cut from the underlay has its entries removed by
// the others within 5 s (its plugin silent and its host not answering
// either), and its containers are reachable again soon after it comes
// back, with nothing done on the other hosts.
func TestHostCutOff(t *testing.T) {
	l := need(t)
	labtest.CreateSwarmNetwork(t, l, "cut", "10.95.0.0/24")
	ms := labtest.RunOnEach(t, l, "cut", "cut")
	for _, m := range ms[1:] {
		labtest.Reach(t, ms[0].Host, ms[0].Name, m.IP, 30*time.Second)
	}
	victim := l.Hosts[len(l.Hosts)-1]
	vtep := victim.Addr().String()
	if n := labtest.EntriesTowards(t, l.Hosts[0], vtep); n == 0 {
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
	labtest.WaitPurged(t, l.Hosts[:len(l.Hosts)-1], vtep, 30*time.Second)
	purge := time.Since(cut)
	t.Logf("FIGURE host cut off: purged everywhere after %s", purge.Round(100*time.Millisecond))
	if purge > 5*time.Second {
		t.Errorf("cut-off host purged after %s, want within 5 s", purge.Round(100*time.Millisecond))
	}

	if err := victim.RestoreUnderlay(context.Background()); err != nil {
		t.Fatal(err)
	}
	restored = true
	back := time.Now()
	labtest.Reach(t, ms[0].Host, ms[0].Name, ms[len(ms)-1].IP, 60*time.Second)
	t.Logf("returning host reachable after %s", time.Since(back).Round(100*time.Millisecond))
	labtest.Reach(t, ms[len(ms)-1].Host, ms[len(ms)-1].Name, ms[1].IP, 30*time.Second)
}
