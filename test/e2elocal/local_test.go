package e2elocal

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// TestManyContainersAcrossHosts: 33 containers started at once on three
// engines that share nothing but the mesh get 33 distinct addresses of the
// network's subnet, and every one reaches every other by address and by
// name.
func TestManyContainersAcrossHosts(t *testing.T) {
	l := need(t)
	const network, gw = "hlnet", "10.40.0.1"
	createNetwork(t, l, network, "10.40.0.0/16")
	var want []ctr
	for i := range 33 {
		want = append(want, ctr{h: l.Hosts[i%3], name: fmt.Sprintf("m%02d", i+1)})
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
		if !strings.HasPrefix(c.ip, "10.40.") {
			t.Fatalf("%s got %s, outside the subnet", c.name, c.ip)
		}
	}
	t1 := time.Now()
	meshReach(t, cs, func(c ctr) string { return c.ip }, 2*time.Minute)
	t.Logf("each of the 33 reaches the 32 others by address, %s after the last start", time.Since(t1).Round(100*time.Millisecond))
	t2 := time.Now()
	meshReach(t, cs, func(c ctr) string { return c.name }, 2*time.Minute)
	t.Logf("and by name, %s later", time.Since(t2).Round(100*time.Millisecond))
	reach(t, cs[0], cs[1].name, 30*time.Second)
	reach(t, cs[2], cs[4].ip, 30*time.Second)

	// A removed container's address goes back to its host: the next
	// container there gets it (the only hole in the host's block).
	h1 := l.Hosts[0]
	docker(t, h1, "rm", "-f", cs[3].name)
	if ip := run(t, h1, "m34", network, gw); ip != cs[3].ip {
		t.Fatalf("m34 got %s, not %s which %s released", ip, cs[3].ip, cs[3].name)
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
	more := startMany(t, network, gw, []ctr{{h: h2, name: "m35"}, {h: h2, name: "m36"}, {h: l.Hosts[2], name: "m37"}})
	if n := len(addresses(t, l, network)); n != 36 {
		t.Fatalf("%d distinct addresses for 36 containers", n)
	}
	reach(t, more[0], cs[0].ip, time.Minute)
	reach(t, cs[2], more[1].name, time.Minute)
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
	createNetwork(t, l, network, "10.42.0.0/23")
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	before := startMany(t, network, gw, []ctr{{h: h1, name: "p1a"}, {h: h2, name: "p2a"}, {h: h3, name: "p3a"}, {h: h1, name: "p1b"}, {h: h2, name: "p2b"}, {h: h3, name: "p3b"}})
	reach(t, before[2], before[0].ip, time.Minute)
	reach(t, before[0], before[5].ip, time.Minute)

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
	minority := startMany(t, network, gw, []ctr{{h: h3, name: "p3c"}, {h: h3, name: "p3d"}, {h: h3, name: "p3e"}})
	t.Logf("h3, cut off, started 3 containers in %s: %s %s %s", time.Since(cutAt).Round(100*time.Millisecond), minority[0].ip, minority[1].ip, minority[2].ip)
	majority := startMany(t, network, gw, []ctr{{h: h1, name: "p1c"}, {h: h2, name: "p2c"}, {h: h1, name: "p1d"}, {h: h2, name: "p2d"}})

	// Far past the 16 addresses of h3's first window in its /26 block.
	grab := nthInBlock(t, before[2].ip, 26, 60)
	var grabbed string
	err := lab.WaitFor(context.Background(), reclaim+90*time.Second, 2*time.Second, func() error {
		ip, err := start(h1, "p1grab", network, gw, "--ip", grab)
		grabbed = ip
		return err
	})
	if err != nil {
		t.Fatalf("h1 never got %s, in the block of h3, cut off: %v", grab, err)
	}
	t.Logf("h1 took %s from h3's block %s after the cut (reclaim time %s)", grabbed, time.Since(cutAt).Round(100*time.Millisecond), reclaim)
	// h3 keeps allocating in its window, unaware it was removed.
	late := run(t, h3, "p3f", network, gw)
	t.Logf("h3, still cut off, started p3f at %s", late)

	if err := h3.RestoreUnderlay(context.Background()); err != nil {
		t.Fatal(err)
	}
	restored = true
	healAt := time.Now()
	reach(t, ctr{h: h1, name: "p1a"}, minority[0].ip, 2*time.Minute)
	reach(t, minority[1], majority[0].ip, 2*time.Minute)
	t.Logf("h3's containers reach the others again %s after the partition healed", time.Since(healAt).Round(100*time.Millisecond))

	after := startMany(t, network, gw, []ctr{{h: h3, name: "p3g"}, {h: h3, name: "p3h"}, {h: h1, name: "p1e"}, {h: h2, name: "p2e"}})
	byIP := addresses(t, l, network)
	if len(byIP) != 19 {
		t.Fatalf("%d distinct addresses for 19 containers: %v", len(byIP), byIP)
	}
	var all []ctr
	for _, group := range [][]ctr{before, minority, majority, after} {
		all = append(all, group...)
	}
	all = append(all, ctr{h: h1, name: "p1grab", ip: grabbed}, ctr{h: h3, name: "p3f", ip: late})
	meshReach(t, all, func(c ctr) string { return c.ip }, 2*time.Minute)
}

// TestDeadHostBlocksReclaimed: h3's engine is killed and h3 cut from the
// underlay. Its block stays its own until the reclaim time has passed;
// then the others take it back, except the addresses h3 may still use.
// When h3 returns, it takes up its place with no address used twice.
func TestDeadHostBlocksReclaimed(t *testing.T) {
	l := need(t)
	const network, gw = "rcnet", "10.41.0.1"
	createNetwork(t, l, network, "10.41.0.0/24", "weft.block=28")
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	x3 := run(t, h3, "r3", network, gw)
	r1 := ctr{h: h1, name: "r1", ip: run(t, h1, "r1", network, gw)}
	reach(t, r1, x3, time.Minute)
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
	if _, err := start(h1, "r1grab", network, gw, "--ip", beyond); err == nil {
		t.Fatalf("h1 got %s at once, in the block of h3, which is merely unreachable", beyond)
	} else {
		t.Logf("at once: %v", firstLine(err))
	}
	var grabbed string
	err := lab.WaitFor(ctx, reclaim+90*time.Second, 2*time.Second, func() error {
		ip, err := start(h1, "r1grab", network, gw, "--ip", beyond)
		grabbed = ip
		return err
	})
	if err != nil {
		t.Fatalf("h3's block was never reclaimed: %v", err)
	}
	t.Logf("h3's block reclaimed: h1 got %s %s after the kill (reclaim time %s)", grabbed, time.Since(killedAt).Round(100*time.Millisecond), reclaim)
	_, err = start(h2, "r2steal", network, gw, "--ip", x3)
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
		ip, err := start(h3, "r3b", network, gw)
		ip3 = ip
		return err
	})
	if err != nil {
		t.Fatalf("h3 cannot start a container after it came back: %v", err)
	}
	addresses(t, l, network)
	reach(t, ctr{h: h3, name: "r3b", ip: ip3}, grabbed, 2*time.Minute)
	reach(t, r1, ip3, time.Minute)
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
