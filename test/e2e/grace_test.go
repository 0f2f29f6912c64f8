package e2e

// A plugin down is not a host gone. While a host's plugin is disabled its
// kernel entries and containers carry traffic on, and its host still
// answers: the other hosts show it as "plugin down" and keep its endpoints
// for its grace (WEFT_DOWN_GRACE), so nothing is cut; a host really gone is
// purged as fast as before (TestHostCutOff, mesh_test.go); a plugin down
// past its grace is purged too. Figures are logged as "FIGURE ...".

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// seesDown reports whether h's weft status shows the member at victim's
// address as "plugin down", in its JSON and as rendered for people.
func seesDown(ctx context.Context, h, victim *lab.Host) error {
	rep, err := labtest.FetchStatus(ctx, h)
	if err != nil {
		return err
	}
	state := ""
	for _, m := range rep.Members {
		if strings.HasPrefix(m.Addr, victim.Addr().String()+":") {
			state = m.State
		}
	}
	if state != "down" {
		return fmt.Errorf("%s sees %s %q, want down", h.Name, victim.Name, state)
	}
	out, err := labtest.WeftCLI(ctx, h, "status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, victim.Addr().String()+":") && strings.Contains(line, "plugin down") {
			return nil
		}
	}
	return fmt.Errorf("%s's weft status does not show %s as plugin down:\n%s", h.Name, victim.Name, out)
}

// allSeeDown reports whether every host of rest shows victim as "plugin
// down".
func allSeeDown(ctx context.Context, rest []*lab.Host, victim *lab.Host) error {
	for _, h := range rest {
		if err := seesDown(ctx, h, victim); err != nil {
			return err
		}
	}
	return nil
}

// waitSeenDown waits until every host of rest shows victim as "plugin
// down".
func waitSeenDown(t *testing.T, rest []*lab.Host, victim *lab.Host) {
	t.Helper()
	ctx := context.Background()
	err := lab.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error { return allSeeDown(ctx, rest, victim) })
	if err != nil {
		t.Fatal(err)
	}
}

// others returns the hosts of l but h.
func others(l *lab.Lab, h *lab.Host) []*lab.Host {
	return slices.DeleteFunc(slices.Clone(l.Hosts), func(o *lab.Host) bool { return o == h })
}

// TestPluginDownAMinute: a host's plugin disabled for 60 s while a
// container on it pings one on another host every 10 ms and one on a
// third host pings it: no packet is lost, the other hosts' kernel entries
// do not change (none deleted) and their `weft status` shows the host as
// "plugin down" all along; enabled again, everything converges.
func TestPluginDownAMinute(t *testing.T) {
	l := need(t)
	const network = "gr-down"
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.89.1.0/24")
	victim, other, third := l.Hosts[1], l.Hosts[2], l.Hosts[0]
	ips := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		ips[h] = labtest.Run(t, h, "gr-down-"+h.Name, network)
	}
	out := labtest.StartPinger(t, victim, "gr-down-ping-out", network, ips[other])
	in := labtest.StartPinger(t, third, "gr-down-ping-in", network, ips[victim])
	labtest.WaitConverged(t, l.Hosts, time.Minute)
	rest := others(l, victim)
	devs := labtest.Devices(t, l, network)
	before := labtest.Entries(t, rest, devs...)
	deletes := labtest.WatchDeletes(t, rest, devs...)

	ctx := context.Background()
	oldPID := labtest.PluginPID(t, victim)
	enabled := false
	t.Cleanup(func() {
		if !enabled {
			_ = victim.EnablePlugin(ctx, pluginName)
		}
	})
	if err := victim.DisablePlugin(ctx, pluginName); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	// Both other hosts find it silent within seconds, and say so.
	waitSeenDown(t, rest, victim)
	t.Logf("FIGURE plugin down: the other hosts show %s as plugin down %s after it was disabled", victim.Name, time.Since(down).Round(100*time.Millisecond))
	// The rest of the minute: still shown down, the entries untouched.
	err := lab.Hold(ctx, time.Until(down.Add(60*time.Second)), time.Second, func() error {
		if now := labtest.Entries(t, rest, devs...); !slices.Equal(now, before) {
			return fmt.Errorf("kernel entries changed on the other hosts:\nbefore:\n%s\nnow:\n%s", strings.Join(before, "\n"), strings.Join(now, "\n"))
		}
		return allSeeDown(ctx, rest, victim)
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := victim.EnablePlugin(ctx, pluginName); err != nil {
		t.Fatal(err)
	}
	enabled = true
	labtest.WaitPluginAnswers(t, victim, oldPID, time.Minute)
	t.Logf("FIGURE plugin down: %s's plugin serving again %s after it was disabled", victim.Name, time.Since(down).Round(100*time.Millisecond))
	labtest.WaitConverged(t, l.Hosts, time.Minute)
	out.WaitMore(t, 300)
	in.WaitMore(t, 300)
	if d := deletes(); len(d) > 0 {
		t.Errorf("entries deleted on the other hosts while the plugin was down:\n%s", strings.Join(d, "\n"))
	}
	if now := labtest.Entries(t, rest, devs...); !slices.Equal(now, before) {
		t.Errorf("kernel entries of the other hosts changed across the minute:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(now, "\n"))
	}
	for _, p := range []*labtest.Pinger{out, in} {
		res := p.Stop(t)
		t.Logf("FIGURE plugin down 60 s: %s: %s", p, res)
		res.Check(t, p)
	}
}

// TestPluginDownPastGrace: a host whose plugin announced a 15 s grace
// (WEFT_DOWN_GRACE, set for this test only) and is then disabled is shown
// "plugin down" by the other hosts, which keep its endpoints until the
// grace ends and then purge them; traffic between the other hosts is not
// cut meanwhile. With its setting restored and the plugin enabled, its
// containers are reachable again.
func TestPluginDownPastGrace(t *testing.T) {
	l := need(t)
	const network = "gr-grace"
	const grace = 15 * time.Second
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.89.2.0/24")
	victim := l.Hosts[1]
	rest := others(l, victim)
	ips := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		ips[h] = labtest.Run(t, h, "gr-grace-"+h.Name, network)
	}
	ctx := context.Background()

	// The grace is the victim's own: set, then announced by enabling.
	was := pluginEnv(t, victim, "WEFT_DOWN_GRACE")
	restore := func() {
		_ = victim.DisablePlugin(ctx, pluginName)
		_, _ = victim.Docker(ctx, "plugin", "set", pluginName, "WEFT_DOWN_GRACE="+was)
		_ = victim.EnablePlugin(ctx, pluginName)
	}
	restored := false
	t.Cleanup(func() {
		if !restored {
			restore()
		}
	})
	victim.MustDocker(t, "plugin", "disable", "-f", pluginName)
	victim.MustDocker(t, "plugin", "set", pluginName, fmt.Sprintf("WEFT_DOWN_GRACE=%s", grace))
	victim.MustDocker(t, "plugin", "enable", pluginName)
	labtest.WaitPluginAnswers(t, victim, 0, time.Minute)
	labtest.WaitConverged(t, l.Hosts, time.Minute)
	across := labtest.StartPinger(t, rest[0], "gr-grace-ping", network, ips[rest[1]])
	vtep := victim.Addr().String()
	if n := labtest.EntriesTowards(t, rest[0], vtep); n == 0 {
		t.Fatalf("no entry towards %s on %s before the test", vtep, rest[0].Name)
	}

	victim.MustDocker(t, "plugin", "disable", "-f", pluginName)
	down := time.Now()
	waitSeenDown(t, rest, victim)
	seen := time.Since(down)
	purged := labtest.WaitPurged(t, rest, vtep, time.Minute) + seen
	t.Logf("FIGURE plugin down past a %s grace: shown down after %s, purged from the other hosts %s after it was disabled",
		grace, seen.Round(100*time.Millisecond), purged.Round(100*time.Millisecond))
	// Found silent within seconds, then kept for the grace: not before it.
	if purged < grace {
		t.Errorf("purged %s after the plugin was disabled, before its %s grace", purged.Round(100*time.Millisecond), grace)
	}
	if purged > grace+10*time.Second {
		t.Errorf("purged %s after the plugin was disabled, long after its %s grace", purged.Round(100*time.Millisecond), grace)
	}
	labtest.WaitConverged(t, rest, 30*time.Second)
	for _, h := range rest {
		rep := labtest.Status(t, h)
		for _, m := range rep.Members {
			if strings.HasPrefix(m.Addr, vtep+":") && m.State != "dead" {
				t.Errorf("%s sees %s %s after the grace, want dead", h.Name, victim.Name, m.State)
			}
		}
	}
	res := across.Stop(t)
	t.Logf("FIGURE plugin down past the grace: %s: %s", across, res)
	res.Check(t, across)

	victim.MustDocker(t, "plugin", "set", pluginName, "WEFT_DOWN_GRACE="+was)
	victim.MustDocker(t, "plugin", "enable", pluginName)
	restored = true
	labtest.WaitPluginAnswers(t, victim, 0, time.Minute)
	labtest.WaitConverged(t, l.Hosts, time.Minute)
	for _, h := range rest {
		labtest.Reach(t, h, "gr-grace-"+h.Name, ips[victim], 30*time.Second)
		labtest.Reach(t, victim, "gr-grace-"+victim.Name, ips[h], 30*time.Second)
	}
}

// pluginEnv returns the value of one setting of h's plugin.
func pluginEnv(t *testing.T, h *lab.Host, name string) string {
	t.Helper()
	out := h.MustDocker(t, "plugin", "inspect", "-f", `{{range .Settings.Env}}{{println .}}{{end}}`, pluginName)
	for _, kv := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), name+"="); ok {
			return v
		}
	}
	t.Fatalf("%s's plugin has no setting %s:\n%s", h.Name, name, out)
	return ""
}
