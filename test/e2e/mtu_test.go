package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/labtest"
)

// TestMTUFollowsTheVXLANPath: the lab's hosts route by default through
// eth1, 9000 bytes, while swarm's addresses, the mesh and VXLAN use eth0,
// 1500 bytes. On a fresh install (h2's plugin enabled on an empty state
// directory, so it knows no underlay address of an earlier run), a new
// network's MTU must come from the path VXLAN takes between the hosts,
// 1500 - 50 = 1450, on every host and in every container: never from the
// default route (8950 would be fragmented, or dropped, on the 1500 path).
func TestMTUFollowsTheVXLANPath(t *testing.T) {
	l := need(t)
	const network = "mtu"
	fresh := l.Hosts[1]
	// The lab is what the test says it is.
	if out := fresh.MustExec(t, "ip", "-4", "route", "show", "default"); !strings.Contains(out, "dev eth1") {
		t.Fatalf("%s's default route is %q, want it via eth1", fresh.Name, out)
	}
	if mtu := fresh.MustExec(t, "cat", "/sys/class/net/eth1/mtu"); mtu != "9000" {
		t.Fatalf("%s's eth1 MTU %s, want 9000", fresh.Name, mtu)
	}

	// A fresh install on h2.
	ctx := context.Background()
	fresh.MustDocker(t, "plugin", "disable", "-f", pluginName)
	enabled := false
	defer func() {
		if !enabled {
			_, _ = fresh.Docker(ctx, "plugin", "enable", pluginName)
		}
	}()
	ents, err := os.ReadDir(fresh.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(fresh.StateDir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	fresh.MustDocker(t, "plugin", "enable", pluginName)
	enabled = true
	labtest.WaitPluginAnswers(t, fresh, 0, time.Minute)

	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.98.0.0/24")
	ctrs := labtest.RunOnEach(t, l, "mtu", network)
	for _, c := range ctrs {
		if mtu := labtest.WeftMTU(t, c.Host, c.Name); mtu != 1450 {
			t.Errorf("%s on %s: weft interface MTU %d, want 1450 (the 1500-byte VXLAN path less 50)", c.Name, c.Host.Name, mtu)
		}
	}
	for _, h := range l.Hosts {
		for _, d := range labtest.MustKernel(t, h).Devices {
			if d.MTU != 1450 {
				t.Errorf("%s: VXLAN device %s MTU %d, want 1450", h.Name, d.Name, d.MTU)
			}
		}
		for _, n := range labtest.Status(t, h).Networks {
			if n.MTU != 1450 {
				t.Errorf("%s: weft status says network %s has MTU %d, want 1450", h.Name, n.ID, n.MTU)
			}
		}
	}
	// And the network works across hosts.
	for _, c := range ctrs {
		for _, o := range ctrs {
			if c.Host != o.Host {
				labtest.Reach(t, c.Host, c.Name, o.IP, 30*time.Second)
			}
		}
	}
}
