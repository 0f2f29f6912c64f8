package e2elocal

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// TestManyContainersAcrossHosts: 33 containers started at once on three
// engines that share nothing but the mesh get 33 distinct addresses of the
// network's subnet, and every one reaches every other by address and by
// name.
func TestManyContainersAcrossHosts(t *testing.T) {
	l := need(t)
	const network, gw = "hlnet", "10.40.0.1"
	labtest.CreateLocalNetwork(t, l, network, "10.40.0.0/16")
	var want []labtest.Ctr
	for i := range 33 {
		want = append(want, labtest.Ctr{Host: l.Hosts[i%3], Name: fmt.Sprintf("m%02d", i+1)})
	}
	t0 := time.Now()
	cs := startMany(t, network, gw, want)
	t.Logf("33 containers started at once on 3 hosts in %s", time.Since(t0).Round(100*time.Millisecond))
	byIP := addresses(t, l, network)
	if len(byIP) != len(cs) {
		t.Fatalf("%d distinct addresses for %d containers: %v", len(byIP), len(cs), byIP)
	}
	if _, ok := byIP[gw]; ok {
		t.Fatalf("the gateway %s went to a container", gw)
	}
	for _, c := range cs {
		if !strings.HasPrefix(c.IP, "10.40.") {
			t.Fatalf("%s got %s, outside the subnet", c.Name, c.IP)
		}
	}
	t1 := time.Now()
	meshReach(t, cs, func(c labtest.Ctr) string { return c.IP }, 2*time.Minute)
	t.Logf("each of the 33 reaches the 32 others by address, %s after the last start", time.Since(t1).Round(100*time.Millisecond))
	t2 := time.Now()
	meshReach(t, cs, func(c labtest.Ctr) string { return c.Name }, 2*time.Minute)
	t.Logf("and by name, %s later", time.Since(t2).Round(100*time.Millisecond))
	labtest.Reach(t, cs[0].Host, cs[0].Name, cs[1].Name, 30*time.Second)
	labtest.Reach(t, cs[2].Host, cs[2].Name, cs[4].IP, 30*time.Second)

	// A removed container's address goes back to its host: the next
	// container there gets it (the only hole in the host's block).
	h1 := l.Hosts[0]
	h1.MustDocker(t, "rm", "-f", cs[3].Name)
	if ip := labtest.Run(t, h1, "m34", network, "--dns", gw); ip != cs[3].IP {
		t.Fatalf("m34 got %s, not %s which %s released", ip, cs[3].IP, cs[3].Name)
	}
	// A plugin restart keeps every address where it is: the next
	// containers get new ones, and the old ones are still reached.
	h2 := l.Hosts[1]
	ctx := context.Background()
	if err := h2.DisablePlugin(ctx, pluginName); err != nil {
		t.Fatal(err)
	}
	if err := h2.EnablePlugin(ctx, pluginName); err != nil {
		t.Fatal(err)
	}
	more := startMany(t, network, gw, []labtest.Ctr{{Host: h2, Name: "m35"}, {Host: h2, Name: "m36"}, {Host: l.Hosts[2], Name: "m37"}})
	if n := len(addresses(t, l, network)); n != 36 {
		t.Fatalf("%d distinct addresses for 36 containers", n)
	}
	labtest.Reach(t, more[0].Host, more[0].Name, cs[0].IP, time.Minute)
	labtest.Reach(t, cs[2].Host, cs[2].Name, more[1].Name, time.Minute)
	d := labtest.WaitConverged(t, l.Hosts, time.Minute)
	t.Logf("every host's kernel entries and weft status match the engines' 36 endpoints, %s later", d.Round(100*time.Millisecond))
}

// TestPartitionBothSidesAllocate: h3 is cut from the others for longer
// than the reclaim time. Meanwhile h3 starts containers (inside the window
// of addresses the majority acknowledged), h1 and h2 start containers and
// take back h3's block, and h1 even takes an address of it on purpose.
// After the partition heals, no two live containers share an address and
// all reach each other.
func TestPartitionBothSidesAllocate(t *testing.T) {
	l := need(t)
	const network, gw = "ptnet", "10.42.0.1"
	labtest.CreateLocalNetwork(t, l, network, "10.42.0.0/23")
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	before := startMany(t, network, gw, []labtest.Ctr{{Host: h1, Name: "p1a"}, {Host: h2, Name: "p2a"}, {Host: h3, Name: "p3a"}, {Host: h1, Name: "p1b"}, {Host: h2, Name: "p2b"}, {Host: h3, Name: "p3b"}})
	labtest.Reach(t, before[2].Host, before[2].Name, before[0].IP, time.Minute)
	labtest.Reach(t, before[0].Host, before[0].Name, before[5].IP, time.Minute)

	if err := h3.CutUnderlay(context.Background()); err != nil {
		t.Fatal(err)
	}
	restored := false
	t.Cleanup(func() {
		if !restored {
			_ = h3.RestoreUnderlay(context.Background())
		}
	})
	cutAt := time.Now()
	minority := startMany(t, network, gw, []labtest.Ctr{{Host: h3, Name: "p3c"}, {Host: h3, Name: "p3d"}, {Host: h3, Name: "p3e"}})
	t.Logf("h3, cut off, started 3 containers in %s: %s %s %s", time.Since(cutAt).Round(100*time.Millisecond), minority[0].IP, minority[1].IP, minority[2].IP)
	majority := startMany(t, network, gw, []labtest.Ctr{{Host: h1, Name: "p1c"}, {Host: h2, Name: "p2c"}, {Host: h1, Name: "p1d"}, {Host: h2, Name: "p2d"}})

	// Far past the 16 addresses of h3's first window in its /26 block.
	grab := nthInBlock(t, before[2].IP, 26, 60)
	var grabbed string
	err := lab.WaitFor(context.Background(), reclaim+90*time.Second, 2*time.Second, func() error {
		ip, err := labtest.Start(context.Background(), h1, "p1grab", network, "--dns", gw, "--ip", grab)
		grabbed = ip
		return err
	})
	if err != nil {
		t.Fatalf("h1 never got %s, in the block of h3, cut off: %v", grab, err)
	}
	t.Logf("h1 took %s from h3's block %s after the cut (reclaim time %s)", grabbed, time.Since(cutAt).Round(100*time.Millisecond), reclaim)
	// h3 keeps allocating in its window, unaware it was removed.
	late := labtest.Run(t, h3, "p3f", network, "--dns", gw)
	t.Logf("h3, still cut off, started p3f at %s", late)

	if err := h3.RestoreUnderlay(context.Background()); err != nil {
		t.Fatal(err)
	}
	restored = true
	healAt := time.Now()
	labtest.Reach(t, h1, "p1a", minority[0].IP, 2*time.Minute)
	labtest.Reach(t, minority[1].Host, minority[1].Name, majority[0].IP, 2*time.Minute)
	t.Logf("h3's containers reach the others again %s after the partition healed", time.Since(healAt).Round(100*time.Millisecond))

	after := startMany(t, network, gw, []labtest.Ctr{{Host: h3, Name: "p3g"}, {Host: h3, Name: "p3h"}, {Host: h1, Name: "p1e"}, {Host: h2, Name: "p2e"}})
	byIP := addresses(t, l, network)
	if len(byIP) != 19 {
		t.Fatalf("%d distinct addresses for 19 containers: %v", len(byIP), byIP)
	}
	var all []labtest.Ctr
	for _, group := range [][]labtest.Ctr{before, minority, majority, after} {
		all = append(all, group...)
	}
	all = append(all, labtest.Ctr{Host: h1, Name: "p1grab", IP: grabbed}, labtest.Ctr{Host: h3, Name: "p3f", IP: late})
	meshReach(t, all, func(c labtest.Ctr) string { return c.IP }, 2*time.Minute)
	labtest.WaitConverged(t, l.Hosts, time.Minute)
}

// TestDeadHostBlocksReclaimed: h3's engine is killed and h3 cut from the
// underlay. Its block stays its own until the reclaim time has passed;
// then the others take it back, except the addresses h3 may still use.
// When h3 returns, it takes up its place with no address used twice.
func TestDeadHostBlocksReclaimed(t *testing.T) {
	l := need(t)
	const network, gw = "rcnet", "10.41.0.1"
	labtest.CreateLocalNetwork(t, l, network, "10.41.0.0/24", "weft.block=28")
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	x3 := labtest.Run(t, h3, "r3", network, "--dns", gw)
	r1 := labtest.Ctr{Host: h1, Name: "r1", IP: labtest.Run(t, h1, "r1", network, "--dns", gw)}
	labtest.Reach(t, r1.Host, r1.Name, x3, time.Minute)
	beyond := nthInBlock(t, x3, 28, 14)

	ctx := context.Background()
	if err := h3.KillEngine(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h3.CutUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	back := false
	t.Cleanup(func() {
		if !back {
			_ = h3.RestoreUnderlay(ctx)
			_ = h3.StartEngine(ctx)
		}
	})
	killedAt := time.Now()
	if _, err := labtest.Start(context.Background(), h1, "r1grab", network, "--dns", gw, "--ip", beyond); err == nil {
		t.Fatalf("h1 got %s at once, in the block of h3, which is merely unreachable", beyond)
	} else {
		t.Logf("at once: %v", firstLine(err))
	}
	var grabbed string
	err := lab.WaitFor(ctx, reclaim+90*time.Second, 2*time.Second, func() error {
		ip, err := labtest.Start(context.Background(), h1, "r1grab", network, "--dns", gw, "--ip", beyond)
		grabbed = ip
		return err
	})
	if err != nil {
		t.Fatalf("h3's block was never reclaimed: %v", err)
	}
	t.Logf("h3's block reclaimed: h1 got %s %s after the kill (reclaim time %s)", grabbed, time.Since(killedAt).Round(100*time.Millisecond), reclaim)
	_, err = labtest.Start(context.Background(), h2, "r2steal", network, "--dns", gw, "--ip", x3)
	if err == nil || !strings.Contains(err.Error(), "may still be in use") {
		t.Fatalf("h2 asked for %s, which h3 may still use: %v", x3, err)
	}
	t.Logf("h3's own address stays quarantined: %v", firstLine(err))

	if err := h3.RestoreUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h3.StartEngine(ctx); err != nil {
		t.Fatal(err)
	}
	back = true
	var ip3 string
	err = lab.WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error {
		ip, err := labtest.Start(context.Background(), h3, "r3b", network, "--dns", gw)
		ip3 = ip
		return err
	})
	if err != nil {
		t.Fatalf("h3 cannot start a container after it came back: %v", err)
	}
	addresses(t, l, network)
	labtest.Reach(t, h3, "r3b", grabbed, 2*time.Minute)
	labtest.Reach(t, r1.Host, r1.Name, ip3, time.Minute)
	t.Logf("h3 back: r3b got %s; no address used twice", ip3)
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "Error response from daemon: "); i >= 0 {
		s = s[i+len("Error response from daemon: "):]
	}
	s, _, _ = strings.Cut(s, "\n")
	return s
}
