package e2e

// Resilience: nothing that keeps running is cut when the plugin restarts or
// is upgraded, when an engine restarts, when a host is lost or cut off, or
// when weft's state directory is lost; and nothing of weft's is left
// behind. Every figure the issue asks for is logged as "FIGURE ...".
//
// The kernel and weft's own report are checked against what Docker says
// exists (checkHosts): on every host, one VXLAN device per weft network
// Docker has there, one static FDB entry and one permanent neighbour entry
// per endpoint of that network on the other hosts and nothing else, no
// macvlan left in the host namespace, no orphaned veth or bridge, and a
// `weft status --json` that lists the same endpoints.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/status"
	"github.com/weftnet/weft/test/lab"
)

// TestPluginRestart: the plugin disabled and enabled again, and its process
// killed (Docker starts it again by itself), on a host whose container
// pings one on another host every 10 ms while one on a third host pings
// it: no packet is lost, no FDB or neighbour entry of weft's is deleted or
// duplicated on any host while it happens, and afterwards the kernel and
// `weft status` hold exactly the endpoints Docker has.
func TestPluginRestart(t *testing.T) {
	l := need(t)
	const network = "rs-restart"
	noLeaksAfter(t, l, network)
	createNetwork(t, l, network, "10.96.1.0/24")
	ips := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		ips[h] = run(t, h, "rs-restart-"+h.Name, network)
	}
	victim, other, third := l.Hosts[1], l.Hosts[2], l.Hosts[0]
	waitConverged(t, l.Hosts, time.Minute)

	restarts := []struct {
		name    string
		restart func(t *testing.T)
	}{
		{"disable-enable", func(t *testing.T) {
			docker(t, victim, "plugin", "disable", "-f", pluginName)
			docker(t, victim, "plugin", "enable", pluginName)
		}},
		{"kill", func(t *testing.T) {
			pid := pluginPID(t, victim)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// Docker restarts a managed plugin whose process exits while
			// it is enabled.
			err := lab.WaitFor(context.Background(), 30*time.Second, 50*time.Millisecond, func() error {
				p, err := findPluginPID(victim)
				if err != nil {
					return err
				}
				if p == pid {
					return fmt.Errorf("plugin %d still there", pid)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("Docker did not restart the killed plugin on %s: %v", victim.Name, err)
			}
		}},
	}
	for _, r := range restarts {
		t.Run(r.name, func(t *testing.T) {
			out := startPinger(t, victim, "rs-ping-out-"+r.name, network, ips[other])
			in := startPinger(t, third, "rs-ping-in-"+r.name, network, ips[victim])
			waitConverged(t, l.Hosts, time.Minute)
			before := weftEntries(t, l.Hosts)
			deletes := watchDeletes(t, l.Hosts)
			oldPID := pluginPID(t, victim)

			start := time.Now()
			r.restart(t)
			waitPluginAnswers(t, victim, oldPID, time.Minute)
			t.Logf("FIGURE plugin %s on %s: serving again after %s", r.name, victim.Name, time.Since(start).Round(time.Millisecond))
			waitConverged(t, l.Hosts, time.Minute)
			// Three more seconds of pings after the restart.
			out.waitMore(t, 300)
			in.waitMore(t, 300)

			// Before the pingers stop, which deletes their endpoints.
			if d := deletes(); len(d) > 0 {
				t.Errorf("entries deleted during the plugin %s:\n%s", r.name, strings.Join(d, "\n"))
			}
			if after := weftEntries(t, l.Hosts); !slices.Equal(before, after) {
				t.Errorf("kernel entries changed across the plugin %s:\nbefore:\n%s\nafter:\n%s", r.name, strings.Join(before, "\n"), strings.Join(after, "\n"))
			}
			for _, p := range []*pinger{out, in} {
				res := p.stop(t)
				t.Logf("FIGURE plugin %s: %s: %s", r.name, p, res)
				res.check(t, p)
			}
		})
	}
}

// TestPluginUpgrade: every host's plugin replaced, one host after the
// other, by a new build (another version string), the way it is done
// without a registry: disable -f, rm -f, create, set, enable. Containers
// pinging across every pair of hosts lose nothing, running containers keep
// their interfaces, new containers work, and the build under test is put
// back the same way at the end.
func TestPluginUpgrade(t *testing.T) {
	l := need(t)
	const network = "rs-upgrade"
	noLeaksAfter(t, l, network)
	const version = "e2e-upgrade"
	newDir := buildPluginDir(t, version)
	oldDir := os.Getenv("WEFT_PLUGIN_DIR")
	oldVersion := weftStatus(t, l.Hosts[0]).Version

	createNetwork(t, l, network, "10.96.2.0/24")
	ips := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		ips[h] = run(t, h, "rs-upg-"+h.Name, network)
	}
	waitConverged(t, l.Hosts, time.Minute)
	var pingers []*pinger
	for i, h := range l.Hosts {
		next := l.Hosts[(i+1)%len(l.Hosts)]
		pingers = append(pingers, startPinger(t, h, "rs-upg-ping-"+h.Name, network, ips[next]))
	}
	waitConverged(t, l.Hosts, time.Minute)
	deletes := watchDeletes(t, l.Hosts)

	upgradeAll := func(dir, want string) {
		t.Helper()
		for _, h := range l.Hosts {
			oldPID := pluginPID(t, h)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			err := h.UpgradePlugin(ctx, dir, pluginName, l.Config().PluginSettings...)
			cancel()
			if err != nil {
				t.Fatalf("upgrade on %s: %v", h.Name, err)
			}
			waitPluginAnswers(t, h, oldPID, time.Minute)
			if v := weftStatus(t, h).Version; v != want {
				t.Fatalf("%s runs version %q after the upgrade, want %q", h.Name, v, want)
			}
			t.Logf("FIGURE plugin upgrade to %s on %s: serving again after %s", want, h.Name, time.Since(start).Round(time.Millisecond))
			waitConverged(t, l.Hosts, time.Minute)
		}
	}
	upgradeAll(newDir, version)
	for _, p := range pingers {
		p.waitMore(t, 300)
	}
	if d := deletes(); len(d) > 0 {
		t.Errorf("entries deleted during the upgrade:\n%s", strings.Join(d, "\n"))
	}
	for _, p := range pingers {
		res := p.stop(t)
		t.Logf("FIGURE plugin upgrade: %s: %s", p, res)
		res.check(t, p)
	}

	// The running containers kept their interfaces and addresses.
	for _, h := range l.Hosts {
		if out := docker(t, h, "exec", "rs-upg-"+h.Name, "ip", "-o", "addr", "show"); !strings.Contains(out, ips[h]+"/24") {
			t.Errorf("rs-upg-%s lost its weft address across the upgrade:\n%s", h.Name, out)
		}
	}
	// New containers, after the upgrade, reach and are reached.
	fresh := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		fresh[h] = run(t, h, "rs-upg-new-"+h.Name, network)
	}
	for i, h := range l.Hosts {
		next := l.Hosts[(i+1)%len(l.Hosts)]
		reach(t, h, "rs-upg-new-"+h.Name, ips[next], 30*time.Second)
		reach(t, h, "rs-upg-"+h.Name, fresh[next], 30*time.Second)
	}
	waitConverged(t, l.Hosts, time.Minute)

	// Back to the build under test, for the tests that follow.
	upgradeAll(oldDir, oldVersion)
	reach(t, l.Hosts[0], "rs-upg-new-h1", fresh[l.Hosts[2]], 30*time.Second)
}

// TestEngineRestart: dockerd stopped and started on one host. While it is
// down its endpoints disappear from the other hosts; when it is back, its
// --restart always container and its service's tasks are on the weft
// network again and reachable from the other hosts, and nothing stale
// remains anywhere.
func TestEngineRestart(t *testing.T) {
	l := need(t)
	victim := l.Hosts[1]
	others := []*lab.Host{l.Hosts[0], l.Hosts[2]}
	const network = "rs-engine"
	noLeaksAfter(t, l, network)
	createNetwork(t, l, network, "10.96.3.0/24")
	for _, h := range others {
		run(t, h, "rs-eng-"+h.Name, network)
	}
	ctx := context.Background()
	run(t, victim, "rs-eng-ctr", network, "--restart", "always")
	createService(t, l, "rs-eng-svc", "--network", network, "--replicas", "2", "--endpoint-mode", "dnsrr",
		"--constraint", "node.hostname=="+victim.Name)
	serviceTasks(t, l, "rs-eng-svc", network, 2, 3*time.Minute)
	// reachVictim waits until the victim's container (and, with tasks, its
	// service's tasks) and the other hosts' containers reach each other.
	reachVictim := func(tasks bool, within time.Duration) {
		t.Helper()
		err := lab.WaitFor(ctx, within, 250*time.Millisecond, func() error {
			out, err := victim.Docker(ctx, "inspect", "-f", "{{.State.Running}} {{.State.Error}}", "rs-eng-ctr")
			if err != nil {
				return err
			}
			running, why, _ := strings.Cut(strings.TrimSpace(out), " ")
			if running == "true" {
				return nil
			}
			if strings.Contains(why, "not found") {
				// Docker's own race, not weft's: a slow engine start can
				// have the swarm agent remove and re-create the network
				// while the engine restarts the container, whose start
				// then fails for good. Start it as its restart policy
				// would have.
				t.Logf("Docker did not restart rs-eng-ctr (%s); starting it", why)
				if _, err := victim.Docker(ctx, "start", "rs-eng-ctr"); err != nil {
					return err
				}
			}
			return fmt.Errorf("rs-eng-ctr not running on %s: %s", victim.Name, why)
		})
		if err != nil {
			t.Fatal(err)
		}
		targets := []string{containerIP(t, victim, "rs-eng-ctr", network)}
		if tasks {
			for _, ip := range serviceTasks(t, l, "rs-eng-svc", network, 2, within)[victim] {
				targets = append(targets, ip)
			}
		}
		for _, h := range others {
			for _, ip := range targets {
				reach(t, h, "rs-eng-"+h.Name, ip, within)
			}
			reach(t, victim, "rs-eng-ctr", containerIP(t, h, "rs-eng-"+h.Name, network), within)
		}
	}
	reachVictim(true, 30*time.Second)
	waitConverged(t, l.Hosts, time.Minute)

	start := time.Now()
	if err := victim.StopEngine(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("engine on %s stopped in %s", victim.Name, time.Since(start).Round(time.Millisecond))
	// Its containers are stopped: the other hosts forget their endpoints.
	d := waitConverged(t, others, time.Minute)
	t.Logf("FIGURE engine restart: endpoints of the stopped engine gone from the other hosts %s after it stopped", d.Round(100*time.Millisecond))

	start = time.Now()
	if err := victim.StartEngine(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("engine restart: dockerd on %s answers %s after it was started", victim.Name, time.Since(start).Round(100*time.Millisecond))
	reachVictim(false, 3*time.Minute)
	t.Logf("FIGURE engine restart: the --restart always container on %s reachable both ways %s after the engine was started", victim.Name, time.Since(start).Round(100*time.Millisecond))
	if err := l.WaitSwarmReady(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	reachVictim(true, 3*time.Minute)
	t.Logf("FIGURE engine restart: the service's tasks on %s reachable too %s after the engine was started", victim.Name, time.Since(start).Round(100*time.Millisecond))
	waitConverged(t, l.Hosts, time.Minute)
	t.Logf("engine restart: every host converged, nothing stale, %s after the engine was started", time.Since(start).Round(100*time.Millisecond))
}

// TestHostLoss: a host's engine killed and its underlay cut. The other
// hosts purge its endpoints within the mesh's failure detection, swarm
// reschedules its tasks and they are reachable; when the host returns
// (link up, engine started) it rejoins the mesh by itself and everything
// converges, with nothing stale.
func TestHostLoss(t *testing.T) {
	l := need(t)
	victim := l.Hosts[2]
	others := l.Hosts[:2]
	const network = "rs-loss"
	noLeaksAfter(t, l, network)
	createNetwork(t, l, network, "10.96.4.0/24")
	for _, h := range others {
		run(t, h, "rs-loss-"+h.Name, network)
	}
	run(t, victim, "rs-loss-ctr", network, "--restart", "always")
	createService(t, l, "rs-loss-svc", "--network", network, "--replicas", "3", "--endpoint-mode", "dnsrr")
	tasks := serviceTasks(t, l, "rs-loss-svc", network, 3, 3*time.Minute)
	if len(tasks[victim]) == 0 {
		t.Fatalf("swarm placed no task of rs-loss-svc on %s: %v", victim.Name, tasks)
	}
	for _, h := range others {
		for _, ts := range tasks {
			for _, ip := range ts {
				reach(t, h, "rs-loss-"+h.Name, ip, 30*time.Second)
			}
		}
	}
	waitConverged(t, l.Hosts, time.Minute)
	vtep := victim.Addr().String()

	ctx := context.Background()
	back := false
	t.Cleanup(func() {
		if !back {
			_ = victim.RestoreUnderlay(ctx)
			_ = victim.StartEngine(ctx)
			_ = l.WaitSwarmReady(ctx, 2*time.Minute)
		}
	})
	if err := victim.KillEngine(ctx); err != nil {
		t.Fatal(err)
	}
	if err := victim.CutUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()

	// Purge: no entry of the other hosts points at the lost host.
	for _, h := range others {
		err := lab.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
			if n := remoteEntries(t, h, vtep); n > 0 {
				return fmt.Errorf("%d FDB entries still point at %s", n, vtep)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
	}
	purge := time.Since(lost)
	t.Logf("FIGURE host loss: %s purged from every other host %s after it was lost", victim.Name, purge.Round(100*time.Millisecond))
	if purge > 10*time.Second {
		t.Errorf("purge took %s, longer than the mesh's failure detection (a few seconds)", purge.Round(100*time.Millisecond))
	}
	waitConverged(t, others, 30*time.Second)

	// Swarm reschedules the lost host's task; the new task is reachable.
	var moved map[*lab.Host]map[string]string
	err := lab.WaitFor(ctx, 3*time.Minute, time.Second, func() error {
		var err error
		moved, err = runningTasks(ctx, others, "rs-loss-svc", network)
		if err != nil {
			return err
		}
		if n := countTasks(moved); n != 3 {
			return fmt.Errorf("%d tasks of rs-loss-svc running on the remaining hosts, want 3", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rescheduled := time.Now()
	for _, h := range others {
		for _, ts := range moved {
			for _, ip := range ts {
				reach(t, h, "rs-loss-"+h.Name, ip, time.Minute)
			}
		}
	}
	t.Logf("FIGURE host loss: tasks rescheduled %s after the loss, reachable %s after they ran",
		rescheduled.Sub(lost).Round(100*time.Millisecond), time.Since(rescheduled).Round(100*time.Millisecond))
	waitConverged(t, others, 30*time.Second)

	// The host returns and rejoins by itself.
	if err := victim.RestoreUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	back = true
	// The engine starts in the background: its plugin, which kept running
	// with the engine dead, rejoins as soon as the link is back; the
	// engine then starts the plugin anew, which joins again.
	started := make(chan error, 1)
	go func() { started <- victim.StartEngine(ctx) }()
	err = lab.WaitFor(ctx, 2*time.Minute, 100*time.Millisecond, func() error {
		for _, h := range others {
			if err := meshComplete(ctx, h, l.Hosts); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s did not rejoin the mesh: %v", victim.Name, err)
	}
	t.Logf("FIGURE host loss: %s back in the other hosts' mesh %s after its link returned", victim.Name, time.Since(returned).Round(100*time.Millisecond))
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Logf("host loss: engine on %s answers %s after it was started", victim.Name, time.Since(returned).Round(100*time.Millisecond))
	err = lab.WaitFor(ctx, 2*time.Minute, 250*time.Millisecond, func() error {
		for _, h := range l.Hosts {
			if err := meshComplete(ctx, h, l.Hosts); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s did not rejoin the mesh: %v", victim.Name, err)
	}
	if err := l.WaitSwarmReady(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	err = lab.WaitFor(ctx, 2*time.Minute, 250*time.Millisecond, func() error {
		out, err := victim.Docker(ctx, "inspect", "-f", "{{.State.Running}} {{.State.Error}}", "rs-loss-ctr")
		if err != nil {
			return err
		}
		running, why, _ := strings.Cut(strings.TrimSpace(out), " ")
		if running == "true" {
			return nil
		}
		if why != "" || time.Since(returned) > time.Minute {
			// Docker's own limit, not weft's: an engine that restarts
			// before its node is back in the swarm cannot attach the
			// container to the swarm-scoped network ("attaching to network
			// failed ... context deadline exceeded") and gives up on its
			// restart policy for good. Start it as the policy would have.
			t.Logf("Docker did not restart rs-loss-ctr (%s); starting it", why)
			if _, err := victim.Docker(ctx, "start", "rs-loss-ctr"); err != nil {
				return err
			}
		}
		return fmt.Errorf("rs-loss-ctr not running on %s: %s", victim.Name, why)
	})
	if err != nil {
		t.Fatal(err)
	}
	ctrIP := containerIP(t, victim, "rs-loss-ctr", network)
	for _, h := range others {
		reach(t, h, "rs-loss-"+h.Name, ctrIP, time.Minute)
		reach(t, victim, "rs-loss-ctr", containerIP(t, h, "rs-loss-"+h.Name, network), time.Minute)
	}
	t.Logf("FIGURE host loss: %s's container reachable %s after its link and engine returned", victim.Name, time.Since(returned).Round(100*time.Millisecond))
	// Nothing stale: the endpoints of the containers that died with the
	// engine are gone everywhere.
	waitConverged(t, l.Hosts, time.Minute)
}

// TestPartition: one host cut from the others for 30 s. Each side keeps
// working inside (two containers on the lone host, and across the two
// hosts of the other side, with no ping lost); after healing the whole
// mesh converges and every container reaches every other.
func TestPartition(t *testing.T) {
	l := need(t)
	lone := l.Hosts[2]
	pair := l.Hosts[:2]
	const network = "rs-part"
	noLeaksAfter(t, l, network)
	createNetwork(t, l, network, "10.96.5.0/24")
	type ctr struct {
		h        *lab.Host
		name, ip string
	}
	var all []ctr
	for _, h := range pair {
		name := "rs-part-" + h.Name
		all = append(all, ctr{h, name, run(t, h, name, network)})
	}
	for _, s := range []string{"a", "b"} {
		name := "rs-part-" + lone.Name + s
		all = append(all, ctr{lone, name, run(t, lone, name, network)})
	}
	reachAll := func(within time.Duration) {
		t.Helper()
		for _, a := range all {
			for _, b := range all {
				if a != b {
					reach(t, a.h, a.name, b.ip, within)
				}
			}
		}
	}
	reachAll(30 * time.Second)
	waitConverged(t, l.Hosts, time.Minute)
	across := startPinger(t, pair[0], "rs-part-ping-pair", network, all[1].ip)
	inside := startPinger(t, lone, "rs-part-ping-lone", network, all[3].ip)

	ctx := context.Background()
	healed := false
	t.Cleanup(func() {
		if !healed {
			_ = lone.RestoreUnderlay(ctx)
		}
	})
	if err := lone.CutUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	// Each side purges the other, and only the other.
	d := waitConverged(t, pair, 30*time.Second)
	t.Logf("partition: the pair forgot %s after %s", lone.Name, d.Round(100*time.Millisecond))
	d = waitConverged(t, []*lab.Host{lone}, 30*time.Second)
	t.Logf("partition: %s forgot the pair after %s", lone.Name, d.Round(100*time.Millisecond))
	for _, a := range all {
		for _, b := range all {
			if a != b && (a.h == b.h || a.h != lone && b.h != lone) {
				reach(t, a.h, a.name, b.ip, 5*time.Second)
			}
		}
	}
	time.Sleep(time.Until(cut.Add(30 * time.Second))) // the partition's hold
	for _, p := range []*pinger{across, inside} {
		res := p.stop(t)
		t.Logf("FIGURE partition: %s during the 30 s cut: %s", p, res)
		res.check(t, p)
	}

	if err := lone.RestoreUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	healed = true
	heal := time.Now()
	d = waitConverged(t, l.Hosts, 2*time.Minute)
	t.Logf("FIGURE partition: mesh converged (every host's FDB holds every other host's endpoints) %s after healing", d.Round(100*time.Millisecond))
	reachAll(time.Minute)
	t.Logf("FIGURE partition: every container reaches every other %s after healing", time.Since(heal).Round(100*time.Millisecond))
}

// TestStateDirLost: the plugin stopped, its state directory emptied or
// garbled, and started again: it starts, says once what it did, rebuilds
// its view from the engine, the kernel and the mesh; running containers
// keep their connectivity and new containers can be created and reached.
func TestStateDirLost(t *testing.T) {
	l := need(t)
	victim := l.Hosts[1]
	const network = "rs-state"
	noLeaksAfter(t, l, network)
	createNetwork(t, l, network, "10.96.6.0/24")
	ips := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		ips[h] = run(t, h, "rs-state-"+h.Name, network)
	}
	waitConverged(t, l.Hosts, time.Minute)

	damages := []struct {
		name   string
		damage func(t *testing.T)
	}{
		{"missing", func(t *testing.T) {
			ents, err := os.ReadDir(victim.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if err := os.RemoveAll(filepath.Join(victim.StateDir, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"corrupt", func(t *testing.T) {
			garble(t, victim.StateDir, func(name string) bool { return name != meshKeyring })
		}},
		{"corrupt-keyring", func(t *testing.T) {
			garble(t, victim.StateDir, func(name string) bool { return name == meshKeyring })
		}},
	}
	for _, dmg := range damages {
		t.Run(dmg.name, func(t *testing.T) {
			ctx := context.Background()
			docker(t, victim, "plugin", "disable", "-f", pluginName)
			enabled := false
			defer func() {
				if !enabled {
					_, _ = victim.Docker(ctx, "plugin", "enable", pluginName)
				}
			}()
			dmg.damage(t)
			defer func() {
				if t.Failed() {
					// Leave the host usable for the tests that follow: a
					// garbled keyring keeps its mesh off.
					_ = os.Remove(filepath.Join(victim.StateDir, meshKeyring))
					_, _ = victim.Docker(ctx, "plugin", "disable", "-f", pluginName)
					_, _ = victim.Docker(ctx, "plugin", "enable", pluginName)
				}
			}()
			logFrom := logSize(t, victim)
			start := time.Now()
			docker(t, victim, "plugin", "enable", pluginName)
			enabled = true
			waitPluginAnswers(t, victim, 0, time.Minute)
			t.Logf("plugin with a %s state directory serving after %s", dmg.name, time.Since(start).Round(time.Millisecond))

			// Past the mesh's repair grace (10 s), when a host that lost
			// track of its endpoints would withdraw them everywhere.
			d := waitConverged(t, l.Hosts, time.Minute)
			t.Logf("converged %s after the restart", d.Round(100*time.Millisecond))
			for time.Since(start) < 15*time.Second {
				if err := checkHosts(ctx, l.Hosts); err != nil {
					t.Fatalf("%s after the restart: %v", time.Since(start).Round(100*time.Millisecond), err)
				}
				time.Sleep(500 * time.Millisecond)
			}
			waitConverged(t, l.Hosts, time.Minute)
			for _, h := range l.Hosts {
				if h != victim {
					reach(t, h, "rs-state-"+h.Name, ips[victim], 10*time.Second)
					reach(t, victim, "rs-state-"+victim.Name, ips[h], 10*time.Second)
				}
			}
			// New containers on the damaged host, reached both ways.
			name := "rs-state-new-" + dmg.name
			ip := run(t, victim, name, network)
			for _, h := range l.Hosts {
				if h != victim {
					reach(t, h, "rs-state-"+h.Name, ip, 30*time.Second)
					reach(t, victim, name, ips[h], 30*time.Second)
				}
			}
			waitConverged(t, l.Hosts, time.Minute)

			// It said what it did, once.
			logged := pluginWarnings(t, victim, logFrom)
			t.Logf("plugin's warnings after the restart:\n%s", strings.Join(logged, "\n"))
			if len(logged) == 0 {
				t.Errorf("the plugin logged no warning about its %s state directory", dmg.name)
			}
			seen := map[string]int{}
			for _, m := range logged {
				seen[m]++
				if seen[m] == 2 {
					t.Errorf("logged more than once: %s", m)
				}
			}
		})
	}
}

// meshKeyring is the mesh's keyring file in the state directory.
const meshKeyring = "mesh-keys.json"

// garble overwrites with garbage the regular files of dir that pick
// chooses; at least one must be chosen.
func garble(t *testing.T, dir string, pick func(name string) bool) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.Type().IsRegular() && pick(e.Name()) {
			if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte("{\x00garbage\xff"), 0o600); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no file to garble in %s", dir)
	}
	t.Logf("garbled %d files in %s", n, dir)
}

// ---- convergence and leaks ----

// noLeaksAfter checks, once the test and its own cleanups are done (it is
// registered first, so it runs last), that no kernel object or entry of
// weft's is left on any host: it waits until no host's Docker has any of
// the test's networks any more (swarm removes them from the workers after
// their tasks, in the background), then compares every host's kernel and
// weft status with what Docker still has.
func noLeaksAfter(t *testing.T, l *lab.Lab, networks ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		err := lab.WaitFor(ctx, 2*time.Minute, 500*time.Millisecond, func() error {
			for _, h := range l.Hosts {
				out, err := h.Docker(ctx, "network", "ls", "--format", "{{.Name}}")
				if err != nil {
					return err
				}
				for _, n := range strings.Fields(out) {
					if slices.Contains(networks, n) {
						return fmt.Errorf("%s still has network %s", h.Name, n)
					}
				}
			}
			return checkHosts(ctx, l.Hosts)
		})
		if err != nil {
			t.Errorf("left behind after the test: %v", err)
		}
	})
}

// waitConverged waits until checkHosts passes for side and returns how
// long it took.
func waitConverged(t *testing.T, side []*lab.Host, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx := context.Background()
	err := lab.WaitFor(ctx, within, 100*time.Millisecond, func() error { return checkHosts(ctx, side) })
	if err != nil {
		t.Fatalf("hosts %s did not converge: %v", hostNames(side), err)
	}
	return time.Since(start)
}

func hostNames(hs []*lab.Host) string {
	var n []string
	for _, h := range hs {
		n = append(n, h.Name)
	}
	return strings.Join(n, ",")
}

// dockerEndpoint is one container's interface on a weft network, as Docker
// has it.
type dockerEndpoint struct {
	host    *lab.Host
	vni     uint32
	ip, mac string
}

// dockerView is what Docker has on one host.
type dockerView struct {
	nets      map[uint32]string // VNI -> weft network ID
	endpoints []dockerEndpoint
	gwbridge  int // endpoints on docker_gwbridge
}

func readDocker(ctx context.Context, h *lab.Host) (dockerView, error) {
	v := dockerView{nets: map[uint32]string{}}
	ids, err := h.Docker(ctx, "network", "ls", "-q", "--filter", "driver="+pluginName)
	if err != nil {
		return v, err
	}
	if f := strings.Fields(ids); len(f) > 0 {
		out, err := h.Docker(ctx, append([]string{"network", "inspect", "--format", "{{json .}}"}, f...)...)
		if err != nil {
			return v, err
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var n struct {
				ID         string `json:"Id"`
				Name       string
				Options    map[string]string
				Containers map[string]struct {
					MacAddress  string
					IPv4Address string
				}
			}
			if err := json.Unmarshal([]byte(line), &n); err != nil {
				return v, fmt.Errorf("%s: network inspect: %w", h.Name, err)
			}
			vni, err := strconv.ParseUint(n.Options["weft.vni"], 10, 32)
			if err != nil {
				return v, fmt.Errorf("%s: network %s has no weft.vni option: %v", h.Name, n.Name, n.Options)
			}
			v.nets[uint32(vni)] = n.ID
			for _, c := range n.Containers {
				ip, _, _ := strings.Cut(c.IPv4Address, "/")
				v.endpoints = append(v.endpoints, dockerEndpoint{h, uint32(vni), ip, c.MacAddress})
			}
		}
	}
	out, err := h.Docker(ctx, "network", "inspect", "-f", "{{len .Containers}}", "docker_gwbridge")
	if err != nil {
		return v, err
	}
	v.gwbridge, err = strconv.Atoi(strings.TrimSpace(out))
	return v, err
}

// kernelView is weft's state in a host's namespace.
type kernelView struct {
	devices map[uint32]bool
	fdb     map[uint32][]string // "mac dst"
	neigh   map[uint32][]string // "ip mac"
	stray   []string            // macvlans left in the host namespace, orphaned veths, foreign bridges
	gwVeths int                 // veths on docker_gwbridge
}

func weftVNI(dev string) (uint32, bool) {
	rest, ok := strings.CutPrefix(dev, "weft")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(rest, 10, 32)
	return uint32(v), err == nil && v > 0
}

func readKernel(ctx context.Context, h *lab.Host) (kernelView, error) {
	k := kernelView{devices: map[uint32]bool{}, fdb: map[uint32][]string{}, neigh: map[uint32][]string{}}
	links, err := h.Exec(ctx, "ip", "-o", "-d", "link", "show")
	if err != nil {
		return k, err
	}
	for _, line := range strings.Split(links, "\n") {
		parts := strings.Split(line, `\`)
		f := strings.Fields(parts[0])
		if len(f) < 2 || len(parts) < 3 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		kind := ""
		if kf := strings.Fields(parts[2]); len(kf) > 0 {
			kind = kf[0]
		}
		master := ""
		if i := slices.Index(f, "master"); i >= 0 && i+1 < len(f) {
			master = f[i+1]
		}
		switch kind {
		case "vxlan":
			if vni, ok := weftVNI(name); ok {
				k.devices[vni] = true
			}
		case "macvlan":
			if strings.HasPrefix(name, "wv") {
				k.stray = append(k.stray, "macvlan "+name+" in the host namespace")
			}
		case "veth":
			switch {
			case name == "eth0":
			case master == "docker_gwbridge":
				k.gwVeths++
			default:
				k.stray = append(k.stray, "veth "+name+" on no bridge")
			}
		case "bridge":
			if name != "docker_gwbridge" {
				k.stray = append(k.stray, "bridge "+name)
			}
		}
	}
	fdb, err := h.Exec(ctx, "bridge", "fdb", "show")
	if err != nil {
		return k, err
	}
	for _, line := range strings.Split(fdb, "\n") {
		f := strings.Fields(line)
		if i := slices.Index(f, "dev"); i < 0 || i+1 >= len(f) {
			continue
		} else if vni, ok := weftVNI(f[i+1]); ok {
			dst := "-"
			if j := slices.Index(f, "dst"); j >= 0 && j+1 < len(f) {
				dst = f[j+1]
			}
			k.fdb[vni] = append(k.fdb[vni], f[0]+" "+dst)
		}
	}
	neigh, err := h.Exec(ctx, "ip", "-4", "neigh", "show", "nud", "permanent")
	if err != nil {
		return k, err
	}
	for _, line := range strings.Split(neigh, "\n") {
		f := strings.Fields(line)
		if i := slices.Index(f, "dev"); i < 0 || i+1 >= len(f) {
			continue
		} else if vni, ok := weftVNI(f[i+1]); ok {
			mac := "-"
			if j := slices.Index(f, "lladdr"); j >= 0 && j+1 < len(f) {
				mac = f[j+1]
			}
			k.neigh[vni] = append(k.neigh[vni], f[0]+" "+mac)
		}
	}
	return k, nil
}

// entryDiff describes how have differs from want (both lists of entries), naming
// duplicates too.
func entryDiff(what string, have, want []string) []string {
	var out []string
	count := map[string]int{}
	for _, e := range have {
		count[e]++
		if count[e] == 2 {
			out = append(out, what+" duplicated: "+e)
		}
	}
	wanted := map[string]bool{}
	for _, e := range want {
		wanted[e] = true
		if count[e] == 0 {
			out = append(out, what+" missing: "+e)
		}
	}
	for e := range count {
		if !wanted[e] {
			out = append(out, what+" stale: "+e)
		}
	}
	slices.Sort(out)
	return out
}

// checkHosts compares, on every host of side, weft's kernel state and its
// status report with what Docker has on the hosts of side: one VXLAN device
// per weft network Docker has on the host and none other; on it one static
// FDB entry (MAC -> VTEP) and one permanent neighbour entry (IP -> MAC) per
// endpoint of that network on the other hosts of side, and nothing else; no
// macvlan of weft's left in the host namespace; no veth outside
// docker_gwbridge and as many on it as Docker has endpoints there; no other
// bridge; and a status that lists the same networks and endpoints, every
// host of side alive in its mesh.
func checkHosts(ctx context.Context, side []*lab.Host) error {
	views := map[*lab.Host]dockerView{}
	byVNI := map[uint32][]dockerEndpoint{}
	for _, h := range side {
		v, err := readDocker(ctx, h)
		if err != nil {
			return err
		}
		views[h] = v
		for _, e := range v.endpoints {
			byVNI[e.vni] = append(byVNI[e.vni], e)
		}
	}
	var problems []string
	for _, h := range side {
		bad := func(format string, args ...any) {
			problems = append(problems, h.Name+": "+fmt.Sprintf(format, args...))
		}
		v := views[h]
		k, err := readKernel(ctx, h)
		if err != nil {
			return err
		}
		rep, err := fetchStatus(ctx, h)
		if err != nil {
			return err
		}
		repNets := map[uint32]status.Network{}
		for _, n := range rep.Networks {
			if _, dup := repNets[n.VNI]; dup {
				bad("status lists VNI %d twice", n.VNI)
			}
			repNets[n.VNI] = n
		}
		vnis := map[uint32]bool{}
		for vni := range v.nets {
			vnis[vni] = true
		}
		for vni := range k.devices {
			vnis[vni] = true
		}
		for vni := range repNets {
			vnis[vni] = true
		}
		for vni := range vnis {
			id, ok := v.nets[vni]
			switch {
			case !ok && k.devices[vni]:
				bad("orphaned VXLAN device weft%d (Docker has no weft network with that VNI here)", vni)
			case ok && !k.devices[vni]:
				bad("no VXLAN device weft%d for network %.12s", vni, id)
			}
			var wantFDB, wantNeigh, wantRemote, wantLocal []string
			for _, e := range byVNI[vni] {
				if e.host == h {
					if ok {
						wantLocal = append(wantLocal, e.ip+" "+e.mac)
					}
					continue
				}
				if !ok {
					continue
				}
				wantFDB = append(wantFDB, e.mac+" "+e.host.Addr().String())
				wantNeigh = append(wantNeigh, e.ip+" "+e.mac)
				wantRemote = append(wantRemote, e.ip+" "+e.mac+" "+e.host.Addr().String())
			}
			for _, p := range entryDiff(fmt.Sprintf("FDB entry on weft%d", vni), k.fdb[vni], wantFDB) {
				bad("%s", p)
			}
			for _, p := range entryDiff(fmt.Sprintf("neighbour entry on weft%d", vni), k.neigh[vni], wantNeigh) {
				bad("%s", p)
			}
			rn, listed := repNets[vni]
			switch {
			case ok && !listed:
				bad("weft status lacks network %.12s (VNI %d)", id, vni)
			case !ok && listed:
				bad("weft status lists network %.12s (VNI %d), which Docker does not have here", rn.ID, vni)
			case ok && rn.ID != id:
				bad("weft status has network %.12s for VNI %d, Docker has %.12s", rn.ID, vni, id)
			}
			var haveRemote, haveLocal []string
			for _, e := range rn.Remote {
				haveRemote = append(haveRemote, e.IP+" "+e.MAC+" "+e.VTEP)
			}
			for _, e := range rn.Local {
				haveLocal = append(haveLocal, e.IP+" "+e.MAC)
			}
			for _, p := range entryDiff(fmt.Sprintf("weft status remote endpoint (VNI %d)", vni), haveRemote, wantRemote) {
				bad("%s", p)
			}
			for _, p := range entryDiff(fmt.Sprintf("weft status local endpoint (VNI %d)", vni), haveLocal, wantLocal) {
				bad("%s", p)
			}
		}
		for _, s := range k.stray {
			bad("%s", s)
		}
		if k.gwVeths != v.gwbridge {
			bad("%d veths on docker_gwbridge, Docker has %d endpoints there", k.gwVeths, v.gwbridge)
		}
		if rep.VTEP != h.Addr().String() {
			bad("weft status says VTEP %s", rep.VTEP)
		}
		alive := map[string]bool{}
		for _, p := range rep.Peers {
			if p.State == "alive" {
				host, _, _ := strings.Cut(p.Addr, ":")
				alive[host] = true
			}
		}
		for _, o := range side {
			if !alive[o.Addr().String()] {
				bad("mesh member %s (%s) is not alive here", o.Name, o.Addr())
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// meshComplete reports whether h's mesh has every host of all alive.
func meshComplete(ctx context.Context, h *lab.Host, all []*lab.Host) error {
	rep, err := fetchStatus(ctx, h)
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	for _, o := range all {
		found := false
		for _, p := range rep.Peers {
			if strings.HasPrefix(p.Addr, o.Addr().String()+":") && p.State == "alive" {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s does not see %s alive in its mesh: %+v", h.Name, o.Name, rep.Peers)
		}
	}
	return nil
}

// weftEntries lists every weft FDB and neighbour entry of the hosts.
func weftEntries(t *testing.T, hosts []*lab.Host) []string {
	t.Helper()
	var out []string
	for _, h := range hosts {
		k, err := readKernel(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		for vni, es := range k.fdb {
			for _, e := range es {
				out = append(out, fmt.Sprintf("%s weft%d fdb %s", h.Name, vni, e))
			}
		}
		for vni, es := range k.neigh {
			for _, e := range es {
				out = append(out, fmt.Sprintf("%s weft%d neigh %s", h.Name, vni, e))
			}
		}
	}
	slices.Sort(out)
	return out
}

// watchDeletes records the deletions of FDB and neighbour entries on weft
// devices on the hosts, from now until the returned function is called;
// the function returns them.
func watchDeletes(t *testing.T, hosts []*lab.Host) func() []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type mon struct {
		h   *lab.Host
		cmd *exec.Cmd
		buf *syncBuffer
	}
	var mons []mon
	for _, h := range hosts {
		for _, args := range [][]string{{"bridge", "monitor", "fdb"}, {"ip", "-4", "monitor", "neigh"}} {
			cmd := h.ExecCmd(ctx, args[0], args[1:]...)
			buf := &syncBuffer{}
			cmd.Stdout = buf
			if err := cmd.Start(); err != nil {
				cancel()
				t.Fatal(err)
			}
			mons = append(mons, mon{h, cmd, buf})
			// Wait until nsenter and ip netns exec have become the monitor.
			err := lab.WaitFor(ctx, 5*time.Second, 10*time.Millisecond, func() error {
				comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
				if err != nil || strings.TrimSpace(string(comm)) != args[0] {
					return fmt.Errorf("monitor not started: %q", comm)
				}
				return nil
			})
			if err != nil {
				cancel()
				t.Fatal(err)
			}
		}
	}
	stopped := false
	stop := func() []string {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		var out []string
		for _, m := range mons {
			_ = m.cmd.Wait()
			sc := bufio.NewScanner(bytes.NewReader(m.buf.Bytes()))
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, "Deleted ") && strings.Contains(line, " dev weft") {
					out = append(out, m.h.Name+": "+line)
				}
			}
		}
		return out
	}
	t.Cleanup(func() { stop() })
	return stop
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// runningTasks lists the running tasks of service on hosts, with their
// addresses on network.
func runningTasks(ctx context.Context, hosts []*lab.Host, service, network string) (map[*lab.Host]map[string]string, error) {
	got := map[*lab.Host]map[string]string{}
	for _, h := range hosts {
		ids, err := h.Docker(ctx, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service, "--filter", "status=running")
		if err != nil {
			return nil, err
		}
		for _, id := range strings.Fields(ids) {
			ip, err := h.Docker(ctx, "inspect", "-f", fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), id)
			if err != nil || strings.TrimSpace(ip) == "" {
				return nil, fmt.Errorf("task %s on %s has no address yet", id, h.Name)
			}
			if got[h] == nil {
				got[h] = map[string]string{}
			}
			got[h][id] = strings.TrimSpace(ip)
		}
	}
	return got, nil
}

func countTasks(m map[*lab.Host]map[string]string) int {
	n := 0
	for _, ts := range m {
		n += len(ts)
	}
	return n
}

// ---- the plugin ----

// findPluginPID returns the pid of the weft plugin process running in h's
// network namespace.
func findPluginPID(h *lab.Host) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", h.NetNS), &st); err != nil {
		return 0, err
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || string(cmdline) != "/weft\x00plugin\x00" {
			continue
		}
		if ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err == nil && ns == want {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		return 0, fmt.Errorf("%d weft plugin processes on %s: %v", len(pids), h.Name, pids)
	}
	return pids[0], nil
}

func pluginPID(t *testing.T, h *lab.Host) int {
	t.Helper()
	pid, err := findPluginPID(h)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitPluginAnswers waits until a plugin process other than oldPID serves
// weft's status on h and Docker reports it enabled.
func waitPluginAnswers(t *testing.T, h *lab.Host, oldPID int, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	err := lab.WaitFor(ctx, within, 50*time.Millisecond, func() error {
		pid, err := findPluginPID(h)
		if err != nil {
			return err
		}
		if pid == oldPID {
			return fmt.Errorf("old plugin process %d still runs", pid)
		}
		if _, err := fetchStatus(ctx, h); err != nil {
			return err
		}
		out, err := h.Docker(ctx, "plugin", "inspect", "-f", "{{.Enabled}}", pluginName)
		if err != nil || strings.TrimSpace(out) != "true" {
			return fmt.Errorf("plugin enabled = %q (%v)", out, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("plugin on %s: %v", h.Name, err)
	}
}

// weftBinary is the weft command of the build under test.
func weftBinary() string {
	return filepath.Join(os.Getenv("WEFT_PLUGIN_DIR"), "rootfs", "weft")
}

func fetchStatus(ctx context.Context, h *lab.Host) (status.Report, error) {
	var rep status.Report
	out, err := h.Exec(ctx, weftBinary(), "status", "--json")
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		return rep, fmt.Errorf("%s: weft status --json: %w", h.Name, err)
	}
	return rep, nil
}

func weftStatus(t *testing.T, h *lab.Host) status.Report {
	t.Helper()
	rep, err := fetchStatus(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// buildPluginDir builds weft from this tree with another version string
// and lays out a managed plugin directory around it, like `make
// plugin-dir`, with the config.json of the build under test.
func buildPluginDir(t *testing.T, version string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	dir := filepath.Join(t.TempDir(), "plugin")
	for _, d := range []string{"rootfs/run/docker/plugins", "rootfs/var/lib/weft", "rootfs/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "rootfs/tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version,
		"-o", filepath.Join(dir, "rootfs", "weft"), "./cmd/weft")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build weft %s: %v\n%s", version, err, out)
	}
	config, err := os.ReadFile(filepath.Join(os.Getenv("WEFT_PLUGIN_DIR"), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// logSize returns the current length of h's dockerd log.
func logSize(t *testing.T, h *lab.Host) int64 {
	t.Helper()
	st, err := os.Stat(h.DockerdLog)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// pluginLogMsg matches a warning or error of the plugin's in dockerd's log,
// where dockerd quotes the plugin's own line: its level, then its message
// and attributes.
var pluginLogMsg = regexp.MustCompile(`level=(WARN|ERROR) (.*)" plugin=`)

// pluginWarnings returns the plugin's warnings and errors logged in h's
// dockerd log after offset, each as "LEVEL msg=... attributes".
func pluginWarnings(t *testing.T, h *lab.Host, offset int64) []string {
	t.Helper()
	b, err := os.ReadFile(h.DockerdLog)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		if !strings.Contains(line, " plugin=") {
			continue
		}
		if m := pluginLogMsg.FindStringSubmatch(line); m != nil && !strings.Contains(line, "component=memberlist") {
			out = append(out, m[1]+" "+strings.ReplaceAll(m[2], `\"`, `"`))
		}
	}
	return out
}

// ---- pinging every 10 ms ----

// pinger is a container that pings a target every 10 ms until stopped.
type pinger struct {
	h            *lab.Host
	name, target string
}

func (p *pinger) String() string { return fmt.Sprintf("%s on %s -> %s", p.name, p.h.Name, p.target) }

// startPinger runs a container on h that waits until it reaches target,
// then pings it every 10 ms; it returns once the pings have started.
func startPinger(t *testing.T, h *lab.Host, name, network, target string) *pinger {
	t.Helper()
	docker(t, h, "run", "-d", "--name", name, "--network", network, lab.ImageTag, "sh", "-c",
		`until ping -c1 -W1 "$0" >/dev/null 2>&1; do sleep 0.1; done; exec ping -i 0.01 "$0"`, target)
	t.Cleanup(func() { _, _ = h.Docker(context.Background(), "rm", "-f", name) })
	p := &pinger{h, name, target}
	p.waitMore(t, 1)
	return p
}

// replies counts the replies logged so far.
func (p *pinger) replies(ctx context.Context) (int, error) {
	out, err := p.h.Docker(ctx, "logs", p.name)
	if err != nil {
		return 0, err
	}
	return strings.Count(out, " seq="), nil
}

// waitMore waits until n more replies have come in.
func (p *pinger) waitMore(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	base, err := p.replies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = lab.WaitFor(ctx, time.Minute, 100*time.Millisecond, func() error {
		got, err := p.replies(ctx)
		if err != nil {
			return err
		}
		if got < base+n {
			return fmt.Errorf("%d replies, waiting for %d", got-base, n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

type pingResult struct {
	sent, received, dups int
	lost                 []int // sequence numbers without a reply
}

func (r pingResult) String() string {
	return fmt.Sprintf("%d sent, %d received, %d lost, %d duplicates", r.sent, r.received, len(r.lost), r.dups)
}

func (r pingResult) check(t *testing.T, p *pinger) {
	t.Helper()
	if len(r.lost) > 0 || r.dups > 0 || r.sent < 100 {
		shown := r.lost
		if len(shown) > 20 {
			shown = shown[:20]
		}
		t.Errorf("%s: %s; lost seq %v", p, r, shown)
	}
}

var (
	pingSeq     = regexp.MustCompile(`^\d+ bytes from .*: seq=(\d+) `)
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)
)

// stop interrupts the ping, which prints its summary, and counts.
func (p *pinger) stop(t *testing.T) pingResult {
	t.Helper()
	docker(t, p.h, "kill", "-s", "INT", p.name)
	docker(t, p.h, "wait", p.name)
	out := docker(t, p.h, "logs", p.name)
	var r pingResult
	got := map[int]bool{}
	for _, line := range strings.Split(out, "\n") {
		if m := pingSeq.FindStringSubmatch(line); m != nil {
			seq, _ := strconv.Atoi(m[1])
			if got[seq] || strings.Contains(line, "DUP!") {
				r.dups++
			}
			got[seq] = true
		}
		if m := pingSummary.FindStringSubmatch(line); m != nil {
			r.sent, _ = strconv.Atoi(m[1])
			r.received, _ = strconv.Atoi(m[2])
		}
	}
	if r.sent == 0 {
		t.Fatalf("%s printed no summary:\n%s", p, out)
	}
	for seq := 0; seq < r.sent; seq++ {
		// busybox counts seq 0..sent-1; the last may have been in flight
		// when the ping was interrupted.
		if !got[seq%65536] && seq != r.sent-1 {
			r.lost = append(r.lost, seq)
		}
	}
	return r
}
