package e2e

// Resilience: nothing that keeps running is cut when the plugin restarts or
// is upgraded, when an engine restarts, when a host is lost or cut off, or
// when weft's state directory is lost; and nothing of weft's is left
// behind. Every figure the issue asks for is logged as "FIGURE ...".
//
// The kernel and weft's own report are checked against what Docker says
// exists by labtest's invariant checker (labtest.Check, WaitConverged,
// NoLeaksAfter); the pingers and plugin helpers are labtest's too.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
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
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.96.1.0/24")
	ips := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		ips[h] = labtest.Run(t, h, "rs-restart-"+h.Name, network)
	}
	victim, other, third := l.Hosts[1], l.Hosts[2], l.Hosts[0]
	labtest.WaitConverged(t, l.Hosts, time.Minute)

	restarts := []struct {
		name    string
		restart func(t *testing.T)
	}{
		{"disable-enable", func(t *testing.T) {
			victim.MustDocker(t, "plugin", "disable", "-f", pluginName)
			victim.MustDocker(t, "plugin", "enable", pluginName)
		}},
		{"kill", func(t *testing.T) {
			pid := labtest.PluginPID(t, victim)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// Docker restarts a managed plugin whose process exits while
			// it is enabled.
			err := lab.WaitFor(context.Background(), 30*time.Second, 50*time.Millisecond, func() error {
				p, err := labtest.FindPluginPID(victim)
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
			out := labtest.StartPinger(t, victim, "rs-ping-out-"+r.name, network, ips[other])
			in := labtest.StartPinger(t, third, "rs-ping-in-"+r.name, network, ips[victim])
			labtest.WaitConverged(t, l.Hosts, time.Minute)
			devs := labtest.Devices(t, l, network)
			before := labtest.Entries(t, l.Hosts, devs...)
			deletes := labtest.WatchDeletes(t, l.Hosts, devs...)
			oldPID := labtest.PluginPID(t, victim)

			start := time.Now()
			r.restart(t)
			labtest.WaitPluginAnswers(t, victim, oldPID, time.Minute)
			t.Logf("FIGURE plugin %s on %s: serving again after %s", r.name, victim.Name, time.Since(start).Round(time.Millisecond))
			labtest.WaitConverged(t, l.Hosts, time.Minute)
			// Three more seconds of pings after the restart.
			out.WaitMore(t, 300)
			in.WaitMore(t, 300)

			// Before the pingers stop, which deletes their endpoints.
			if d := deletes(); len(d) > 0 {
				t.Errorf("entries deleted during the plugin %s:\n%s", r.name, strings.Join(d, "\n"))
			}
			if after := labtest.Entries(t, l.Hosts, devs...); !slices.Equal(before, after) {
				t.Errorf("kernel entries changed across the plugin %s:\nbefore:\n%s\nafter:\n%s", r.name, strings.Join(before, "\n"), strings.Join(after, "\n"))
			}
			for _, p := range []*labtest.Pinger{out, in} {
				res := p.Stop(t)
				t.Logf("FIGURE plugin %s: %s: %s", r.name, p, res)
				res.Check(t, p)
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
	labtest.NoLeaksAfter(t, l, network)
	const version = "e2e-upgrade"
	newDir := labtest.BuildPluginDir(t, l, version)
	oldDir := l.Config().PluginDir
	oldVersion := labtest.Status(t, l.Hosts[0]).Version

	labtest.CreateSwarmNetwork(t, l, network, "10.96.2.0/24")
	ips := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		ips[h] = labtest.Run(t, h, "rs-upg-"+h.Name, network)
	}
	labtest.WaitConverged(t, l.Hosts, time.Minute)
	var pingers []*labtest.Pinger
	for i, h := range l.Hosts {
		next := l.Hosts[(i+1)%len(l.Hosts)]
		pingers = append(pingers, labtest.StartPinger(t, h, "rs-upg-ping-"+h.Name, network, ips[next]))
	}
	labtest.WaitConverged(t, l.Hosts, time.Minute)
	deletes := labtest.WatchDeletes(t, l.Hosts, labtest.Devices(t, l, network)...)

	upgradeAll := func(dir, want string) {
		t.Helper()
		for _, h := range l.Hosts {
			oldPID := labtest.PluginPID(t, h)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			err := h.UpgradePlugin(ctx, dir, pluginName, l.Config().PluginSettings...)
			cancel()
			if err != nil {
				t.Fatalf("upgrade on %s: %v", h.Name, err)
			}
			labtest.WaitPluginAnswers(t, h, oldPID, time.Minute)
			if v := labtest.Status(t, h).Version; v != want {
				t.Fatalf("%s runs version %q after the upgrade, want %q", h.Name, v, want)
			}
			t.Logf("FIGURE plugin upgrade to %s on %s: serving again after %s", want, h.Name, time.Since(start).Round(time.Millisecond))
			labtest.WaitConverged(t, l.Hosts, time.Minute)
		}
	}
	upgradeAll(newDir, version)
	for _, p := range pingers {
		p.WaitMore(t, 300)
	}
	if d := deletes(); len(d) > 0 {
		t.Errorf("entries deleted during the upgrade:\n%s", strings.Join(d, "\n"))
	}
	for _, p := range pingers {
		res := p.Stop(t)
		t.Logf("FIGURE plugin upgrade: %s: %s", p, res)
		res.Check(t, p)
	}

	// The running containers kept their interfaces and addresses.
	for _, h := range l.Hosts {
		if out := h.MustDocker(t, "exec", "rs-upg-"+h.Name, "ip", "-o", "addr", "show"); !strings.Contains(out, ips[h]+"/24") {
			t.Errorf("rs-upg-%s lost its weft address across the upgrade:\n%s", h.Name, out)
		}
	}
	// New containers, after the upgrade, reach and are reached.
	fresh := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		fresh[h] = labtest.Run(t, h, "rs-upg-new-"+h.Name, network)
	}
	for i, h := range l.Hosts {
		next := l.Hosts[(i+1)%len(l.Hosts)]
		labtest.Reach(t, h, "rs-upg-new-"+h.Name, ips[next], 30*time.Second)
		labtest.Reach(t, h, "rs-upg-"+h.Name, fresh[next], 30*time.Second)
	}
	labtest.WaitConverged(t, l.Hosts, time.Minute)

	// Back to the build under test, for the tests that follow.
	upgradeAll(oldDir, oldVersion)
	labtest.Reach(t, l.Hosts[0], "rs-upg-new-h1", fresh[l.Hosts[2]], 30*time.Second)
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
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.96.3.0/24")
	for _, h := range others {
		labtest.Run(t, h, "rs-eng-"+h.Name, network)
	}
	ctx := context.Background()
	labtest.Run(t, victim, "rs-eng-ctr", network, "--restart", "always")
	labtest.CreateService(t, l, "rs-eng-svc", "--network", network, "--replicas", "2", "--endpoint-mode", "dnsrr",
		"--constraint", "node.hostname=="+victim.Name)
	labtest.ServiceTasks(t, l, "rs-eng-svc", network, 2, 3*time.Minute)
	// reachVictim waits until the victim's container (and, with tasks, its
	// service's tasks) and the other hosts' containers reach each other.
	reachVictim := func(tasks bool, within time.Duration) {
		t.Helper()
		// Docker's own race, not weft's: a slow engine start can have the
		// swarm agent remove and re-create the network while the engine
		// restarts the container, whose start then fails for good.
		waitRestarted(t, victim, "rs-eng-ctr", within, func(why string) bool { return strings.Contains(why, "not found") })
		targets := []string{labtest.ContainerIP(t, victim, "rs-eng-ctr", network)}
		if tasks {
			for _, ip := range labtest.ServiceTasks(t, l, "rs-eng-svc", network, 2, within)[victim] {
				targets = append(targets, ip)
			}
		}
		for _, h := range others {
			for _, ip := range targets {
				labtest.Reach(t, h, "rs-eng-"+h.Name, ip, within)
			}
			labtest.Reach(t, victim, "rs-eng-ctr", labtest.ContainerIP(t, h, "rs-eng-"+h.Name, network), within)
		}
	}
	reachVictim(true, 30*time.Second)
	labtest.WaitConverged(t, l.Hosts, time.Minute)

	start := time.Now()
	if err := victim.StopEngine(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("engine on %s stopped in %s", victim.Name, time.Since(start).Round(time.Millisecond))
	// Its containers are stopped: the other hosts forget their endpoints.
	d := labtest.WaitConverged(t, others, time.Minute)
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
	labtest.WaitConverged(t, l.Hosts, time.Minute)
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
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.96.4.0/24")
	for _, h := range others {
		labtest.Run(t, h, "rs-loss-"+h.Name, network)
	}
	labtest.Run(t, victim, "rs-loss-ctr", network, "--restart", "always")
	labtest.CreateService(t, l, "rs-loss-svc", "--network", network, "--replicas", "3", "--endpoint-mode", "dnsrr")
	tasks := labtest.ServiceTasks(t, l, "rs-loss-svc", network, 3, 3*time.Minute)
	if len(tasks[victim]) == 0 {
		t.Fatalf("swarm placed no task of rs-loss-svc on %s: %v", victim.Name, tasks)
	}
	for _, h := range others {
		for _, ts := range tasks {
			for _, ip := range ts {
				labtest.Reach(t, h, "rs-loss-"+h.Name, ip, 30*time.Second)
			}
		}
	}
	labtest.WaitConverged(t, l.Hosts, time.Minute)
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
	labtest.WaitPurged(t, others, vtep, 30*time.Second)
	purge := time.Since(lost)
	t.Logf("FIGURE host loss: %s purged from every other host %s after it was lost", victim.Name, purge.Round(100*time.Millisecond))
	if purge > 10*time.Second {
		t.Errorf("purge took %s, longer than the mesh's failure detection (a few seconds)", purge.Round(100*time.Millisecond))
	}
	labtest.WaitConverged(t, others, 30*time.Second)

	// Swarm reschedules the lost host's task; the new task is reachable.
	var moved labtest.Tasks
	err := lab.WaitFor(ctx, 3*time.Minute, time.Second, func() error {
		var err error
		moved, err = labtest.RunningTasks(ctx, others, "rs-loss-svc", network)
		if err != nil {
			return err
		}
		if n := moved.Count(); n != 3 {
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
				labtest.Reach(t, h, "rs-loss-"+h.Name, ip, time.Minute)
			}
		}
	}
	t.Logf("FIGURE host loss: tasks rescheduled %s after the loss, reachable %s after they ran",
		rescheduled.Sub(lost).Round(100*time.Millisecond), time.Since(rescheduled).Round(100*time.Millisecond))
	labtest.WaitConverged(t, others, 30*time.Second)

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
			if err := labtest.MeshComplete(ctx, h, l.Hosts); err != nil {
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
			if err := labtest.MeshComplete(ctx, h, l.Hosts); err != nil {
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
	// Docker's own limit, not weft's: an engine that restarts before its
	// node is back in the swarm cannot attach the container to the
	// swarm-scoped network ("attaching to network failed ... context
	// deadline exceeded") and gives up on its restart policy for good.
	waitRestarted(t, victim, "rs-loss-ctr", 2*time.Minute, func(why string) bool {
		return why != "" || time.Since(returned) > time.Minute
	})
	ctrIP := labtest.ContainerIP(t, victim, "rs-loss-ctr", network)
	for _, h := range others {
		labtest.Reach(t, h, "rs-loss-"+h.Name, ctrIP, time.Minute)
		labtest.Reach(t, victim, "rs-loss-ctr", labtest.ContainerIP(t, h, "rs-loss-"+h.Name, network), time.Minute)
	}
	t.Logf("FIGURE host loss: %s's container reachable %s after its link and engine returned", victim.Name, time.Since(returned).Round(100*time.Millisecond))
	// Nothing stale: the endpoints of the containers that died with the
	// engine are gone everywhere.
	labtest.WaitConverged(t, l.Hosts, time.Minute)
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
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.96.5.0/24")
	var all []labtest.Ctr
	for _, h := range pair {
		name := "rs-part-" + h.Name
		all = append(all, labtest.Ctr{Host: h, Name: name, IP: labtest.Run(t, h, name, network)})
	}
	for _, s := range []string{"a", "b"} {
		name := "rs-part-" + lone.Name + s
		all = append(all, labtest.Ctr{Host: lone, Name: name, IP: labtest.Run(t, lone, name, network)})
	}
	reachAll := func(within time.Duration) {
		t.Helper()
		for _, a := range all {
			for _, b := range all {
				if a != b {
					labtest.Reach(t, a.Host, a.Name, b.IP, within)
				}
			}
		}
	}
	reachAll(30 * time.Second)
	labtest.WaitConverged(t, l.Hosts, time.Minute)
	across := labtest.StartPinger(t, pair[0], "rs-part-ping-pair", network, all[1].IP)
	inside := labtest.StartPinger(t, lone, "rs-part-ping-lone", network, all[3].IP)

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
	d := labtest.WaitConverged(t, pair, 30*time.Second)
	t.Logf("partition: the pair forgot %s after %s", lone.Name, d.Round(100*time.Millisecond))
	d = labtest.WaitConverged(t, []*lab.Host{lone}, 30*time.Second)
	t.Logf("partition: %s forgot the pair after %s", lone.Name, d.Round(100*time.Millisecond))
	for _, a := range all {
		for _, b := range all {
			if a != b && (a.Host == b.Host || a.Host != lone && b.Host != lone) {
				labtest.Reach(t, a.Host, a.Name, b.IP, 5*time.Second)
			}
		}
	}
	// The partition's length is the scenario, not a wait: the pingers
	// prove that each side kept working for all of it.
	time.Sleep(time.Until(cut.Add(30 * time.Second)))
	for _, p := range []*labtest.Pinger{across, inside} {
		res := p.Stop(t)
		t.Logf("FIGURE partition: %s during the 30 s cut: %s", p, res)
		res.Check(t, p)
	}

	if err := lone.RestoreUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	healed = true
	heal := time.Now()
	d = labtest.WaitConverged(t, l.Hosts, 2*time.Minute)
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
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.96.6.0/24")
	ips := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		ips[h] = labtest.Run(t, h, "rs-state-"+h.Name, network)
	}
	labtest.WaitConverged(t, l.Hosts, time.Minute)

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
			victim.MustDocker(t, "plugin", "disable", "-f", pluginName)
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
			logFrom := labtest.LogSize(t, victim)
			start := time.Now()
			victim.MustDocker(t, "plugin", "enable", pluginName)
			enabled = true
			labtest.WaitPluginAnswers(t, victim, 0, time.Minute)
			t.Logf("plugin with a %s state directory serving after %s", dmg.name, time.Since(start).Round(time.Millisecond))

			// The hold below outlasts the mesh's repair grace, counted from
			// when the victim's mesh started: at its end a host that lost
			// track of its endpoints would withdraw them everywhere.
			meshUp := waitMeshStarted(t, victim, time.Minute)
			d := labtest.WaitConverged(t, l.Hosts, time.Minute)
			t.Logf("converged %s after the restart", d.Round(100*time.Millisecond))
			hold := time.Until(meshUp.Add(mesh.DefaultConfig().RepairGrace + 3*time.Second))
			if err := lab.Hold(ctx, hold, 500*time.Millisecond, func() error { return labtest.Check(ctx, l.Hosts) }); err != nil {
				t.Fatalf("%s after the restart: %v", time.Since(start).Round(100*time.Millisecond), err)
			}
			labtest.WaitConverged(t, l.Hosts, time.Minute)
			for _, h := range l.Hosts {
				if h != victim {
					labtest.Reach(t, h, "rs-state-"+h.Name, ips[victim], 10*time.Second)
					labtest.Reach(t, victim, "rs-state-"+victim.Name, ips[h], 10*time.Second)
				}
			}
			// New containers on the damaged host, reached both ways.
			name := "rs-state-new-" + dmg.name
			ip := labtest.Run(t, victim, name, network)
			for _, h := range l.Hosts {
				if h != victim {
					labtest.Reach(t, h, "rs-state-"+h.Name, ip, 30*time.Second)
					labtest.Reach(t, victim, name, ips[h], 30*time.Second)
				}
			}
			labtest.WaitConverged(t, l.Hosts, time.Minute)

			// It said what it did, once.
			logged := labtest.PluginWarnings(t, victim, logFrom)
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

// waitRestarted waits until the container ctr on h, which has the restart
// policy "always", runs again. Where gaveUp says, from the container's
// State.Error, that Docker gave up on the policy, it starts the container
// as the policy would have.
func waitRestarted(t *testing.T, h *lab.Host, ctr string, within time.Duration, gaveUp func(why string) bool) {
	t.Helper()
	ctx := context.Background()
	err := lab.WaitFor(ctx, within, 250*time.Millisecond, func() error {
		out, err := h.Docker(ctx, "inspect", "-f", "{{.State.Running}} {{.State.Error}}", ctr)
		if err != nil {
			return err
		}
		running, why, _ := strings.Cut(strings.TrimSpace(out), " ")
		if running == "true" {
			return nil
		}
		if gaveUp(why) {
			t.Logf("Docker did not restart %s (%s); starting it", ctr, why)
			if _, err := h.Docker(ctx, "start", ctr); err != nil {
				return err
			}
		}
		return fmt.Errorf("%s not running on %s: %s", ctr, h.Name, why)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitMeshStarted waits until h's mesh runs (its status lists h itself
// alive) and returns when that was first seen.
func waitMeshStarted(t *testing.T, h *lab.Host, within time.Duration) time.Time {
	t.Helper()
	ctx := context.Background()
	err := lab.WaitFor(ctx, within, 50*time.Millisecond, func() error {
		rep, err := labtest.FetchStatus(ctx, h)
		if err != nil {
			return err
		}
		for _, p := range rep.Members {
			if p.Name == rep.Node && p.State == "alive" {
				return nil
			}
		}
		return fmt.Errorf("%s's mesh has not started: members %+v", h.Name, rep.Members)
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Now()
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
