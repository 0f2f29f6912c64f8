package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// Swarm services in the default endpoint mode (a VIP per service) on weft
// networks: the VIP balanced per connection in each client's namespace
// (package vip). Each service's tasks serve their own hostname, so a client
// sees which task answered.

// vipService makes network (on subnet) and, on it, a default-mode service
// of n tasks serving their hostname, one per host as far as they go, and
// returns its running tasks by hostname.
func vipService(t *testing.T, l *lab.Lab, network, subnet, svc string, n int) map[string]taskAt {
	t.Helper()
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, subnet)
	labtest.CreateHostnameService(t, l, svc, "--network", network, "--replicas", strconv.Itoa(n), "--placement-pref", "spread=node.id")
	return taskNames(labtest.ServiceTasks(t, l, svc, network, n, 3*time.Minute))
}

// taskNames returns the hostnames of tasks (their short container IDs)
// and, by hostname, the host and address of each.
func taskNames(ts labtest.Tasks) map[string]taskAt {
	out := map[string]taskAt{}
	for h, byID := range ts {
		for id, ip := range byID {
			out[id[:12]] = taskAt{h: h, ip: ip}
		}
	}
	return out
}

type taskAt struct {
	h  *lab.Host
	ip string
}

func ipsOf(ts map[string]taskAt) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.ip)
	}
	return out
}

func counts(answers []string) map[string]int {
	m := map[string]int{}
	for _, a := range answers {
		m[a]++
	}
	return m
}

// TestVIPService: a default-mode service of 3 tasks, one per host, and a
// `docker run` client on h2. 30 connections by the service's name are all
// answered, by all 3 tasks. Scaled to 5 while the client connects every
// 50 ms: each new task answers within 3 s of its start. Scaled to 2: no
// connection fails, and the tasks removed answer none from 1 s after the
// scale command (the manager's weft drains them at once; swarm waits 2 s
// before it stops them). Last, new clients started with `docker run`
// connect at once: how long their first connection takes shows whether
// their table was written before it.
func TestVIPService(t *testing.T) {
	l := need(t)
	const network, svc = "vip-net", "vip-web"
	three := vipService(t, l, network, "10.88.1.0/24", svc, 3)
	client := l.Hosts[1]
	labtest.Run(t, client, "vip-client", network)
	vipAddr := labtest.WaitVIPBackends(t, client, "vip-client", ipsOf(three), 30*time.Second)

	// The name resolves to the VIP (Docker's resolver), which answers,
	// pings too (translated to a task like any other flow).
	out := client.MustDocker(t, "exec", "vip-client", "nslookup", svc)
	if !strings.Contains(out, vipAddr) {
		t.Fatalf("%s does not resolve to its VIP %s:\n%s", svc, vipAddr, out)
	}
	if err := labtest.CanPing(client, "vip-client", svc); err != nil {
		t.Errorf("ping %s (its VIP): %v", svc, err)
	}
	answers := labtest.FetchN(t, client, "vip-client", svc, 30)
	got := counts(answers)
	t.Logf("FIGURE 30 connections by name to %s (VIP %s) from %s: answered by %v", svc, vipAddr, client.Name, got)
	if len(answers) != 30 || got["FAIL"] != 0 {
		t.Fatalf("%d answers, %d failed: %v", len(answers), got["FAIL"], answers)
	}
	for name := range three {
		if got[name] == 0 {
			t.Errorf("task %s on %s answered no connection: %v", name, three[name].h.Name, got)
		}
	}
	if len(got) != 3 {
		t.Errorf("answers from %d hostnames, want the 3 tasks': %v", len(got), got)
	}

	stream := labtest.StartStream(t, client, "vip-client", svc)
	stream.WaitAnswers(t, 10, 30*time.Second)

	// 3 -> 5: each new task answers within 3 s of its start.
	l.Manager().MustDocker(t, "service", "scale", "--detach", svc+"=5")
	five := taskNames(labtest.ServiceTasks(t, l, svc, network, 5, 3*time.Minute))
	added := map[string]time.Time{}
	for name, ta := range five {
		if _, old := three[name]; !old {
			added[name] = labtest.StartedAt(t, ta.h, name)
		}
	}
	firstAnswer := func(name string) (time.Time, bool) {
		for _, a := range stream.Answers() {
			if a.Who == name {
				return a.At, true
			}
		}
		return time.Time{}, false
	}
	err := lab.WaitFor(context.Background(), 30*time.Second, 100*time.Millisecond, func() error {
		for name := range added {
			if _, ok := firstAnswer(name); !ok {
				return fmt.Errorf("new task %s has answered no connection", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, started := range added {
		at, _ := firstAnswer(name)
		gap := at.Sub(started)
		t.Logf("FIGURE scale 3->5: new task %s on %s answered its first connection %s after it started", name, five[name].h.Name, gap.Round(10*time.Millisecond))
		if gap > 3*time.Second {
			t.Errorf("new task %s answered %s after its start, want within 3 s", name, gap.Round(10*time.Millisecond))
		}
	}

	// 5 -> 2: nothing fails; the removed tasks are drained at once.
	n := len(stream.Answers())
	scaled := time.Now()
	l.Manager().MustDocker(t, "service", "scale", "--detach", svc+"=2")
	two := taskNames(labtest.ServiceTasks(t, l, svc, network, 2, 3*time.Minute))
	// Until every removed task's container is gone, and 3 s more.
	err = lab.WaitFor(context.Background(), time.Minute, 200*time.Millisecond, func() error {
		for name, ta := range five {
			if _, kept := two[name]; kept {
				continue
			}
			if out, _ := ta.h.Docker(context.Background(), "ps", "-q", "--filter", "id="+name); strings.TrimSpace(out) != "" {
				return fmt.Errorf("removed task %s still runs on %s", name, ta.h.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stream.WaitAnswers(t, len(stream.Answers())+60, 30*time.Second)
	labtest.WaitVIPBackends(t, client, "vip-client", ipsOf(two), 10*time.Second)
	var last time.Time
	var failed, after int
	for _, a := range stream.Answers()[n:] {
		if a.Who == "FAIL" {
			failed++
			continue
		}
		after++
		if _, kept := two[a.Who]; !kept && a.At.After(last) {
			last = a.At
		}
	}
	t.Logf("FIGURE scale 5->2: %d connections after the scale command, %d failed; the removed tasks answered their last connection %s after it",
		after+failed, failed, last.Sub(scaled).Round(10*time.Millisecond))
	if failed > 0 {
		t.Errorf("%d connections failed across the scale to 2", failed)
	}
	if !last.IsZero() && last.Sub(scaled) > time.Second {
		t.Errorf("a removed task answered %s after the scale command, want none after 1 s", last.Sub(scaled).Round(10*time.Millisecond))
	}
	stream.Stop()
	if f := counts(whos(stream.Answers()))["FAIL"]; f > 0 {
		t.Errorf("%d of the stream's %d connections failed", f, len(stream.Answers()))
	}

	// New clients: how long their first connection takes. Within a few
	// milliseconds, their table was there before it; about 1 s, its
	// first SYN went before the table and was sent again (the sweep let
	// the retry through).
	var firsts []string
	for i := range 5 {
		name := fmt.Sprintf("vip-first-%d", i)
		out := l.Hosts[i%3].MustDocker(t, "run", "--rm", "--name", name, "--network", network, lab.ImageTag, "sh", "-c",
			`read a _ < /proc/uptime; r=$(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 "$0" 8080 | tail -n 1); read b _ < /proc/uptime; echo "${r:-FAIL} $a $b"`, svc)
		f := strings.Fields(out)
		if len(f) != 3 || f[0] == "FAIL" {
			t.Errorf("first connection of a new client on %s: %q", l.Hosts[i%3].Name, out)
			continue
		}
		a, _ := strconv.ParseFloat(f[1], 64)
		b, _ := strconv.ParseFloat(f[2], 64)
		firsts = append(firsts, fmt.Sprintf("%.2fs", b-a))
	}
	t.Logf("FIGURE first connection of 5 new clients (docker run, connecting at once; /proc/uptime resolution 10 ms): %s", strings.Join(firsts, " "))
}

func whos(as []labtest.Answer) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Who
	}
	return out
}

// TestVIPHostCut: a host holding one of a service's tasks is cut from the
// underlay. The clients on the other hosts drop its backend from their
// tables within the time the mesh takes to purge the host's endpoints.
func TestVIPHostCut(t *testing.T) {
	l := need(t)
	const network, svc = "vip-cut", "vip-cut-svc"
	tasks := vipService(t, l, network, "10.88.2.0/24", svc, 3)
	victim, others := l.Hosts[2], l.Hosts[:2]
	var gone string
	for _, ta := range tasks {
		if ta.h == victim {
			gone = ta.ip
		}
	}
	if gone == "" {
		t.Fatalf("swarm placed no task of %s on %s: %v", svc, victim.Name, tasks)
	}
	all := ipsOf(tasks)
	for _, h := range others {
		labtest.Run(t, h, "vip-cut-"+h.Name, network)
		labtest.WaitVIPBackends(t, h, "vip-cut-"+h.Name, all, 30*time.Second)
	}
	labtest.WaitConverged(t, l.Hosts, time.Minute)

	ctx := context.Background()
	t.Cleanup(func() {
		_ = victim.RestoreUnderlay(ctx)
		_ = l.WaitSwarmReady(ctx, 2*time.Minute)
	})
	if err := victim.CutUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	purged := map[*lab.Host]time.Duration{}
	dropped := map[*lab.Host]time.Duration{}
	vtep := victim.Addr().String()
	err := lab.WaitFor(ctx, 30*time.Second, 50*time.Millisecond, func() error {
		for _, h := range others {
			if _, ok := purged[h]; !ok && labtest.EntriesTowards(t, h, vtep) == 0 {
				purged[h] = time.Since(cut)
			}
			if _, ok := dropped[h]; !ok {
				m, err := labtest.VIPTable(ctx, h, "vip-cut-"+h.Name)
				if err != nil {
					return err
				}
				for _, bs := range m {
					if !slices.Contains(bs, gone) {
						dropped[h] = time.Since(cut)
					}
				}
			}
		}
		if len(purged) < len(others) || len(dropped) < len(others) {
			return fmt.Errorf("endpoints purged on %d hosts, backend %s dropped on %d, of %d", len(purged), gone, len(dropped), len(others))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range others {
		t.Logf("FIGURE host cut: on %s the endpoints of %s were purged %s after the cut, its task's backend dropped after %s",
			h.Name, victim.Name, purged[h].Round(50*time.Millisecond), dropped[h].Round(50*time.Millisecond))
		if dropped[h] > purged[h]+500*time.Millisecond {
			t.Errorf("on %s the backend went %s after the endpoints, want with them", h.Name, (dropped[h] - purged[h]).Round(50*time.Millisecond))
		}
	}
	// The remaining tasks still answer by name.
	for _, h := range others {
		if got := counts(labtest.FetchN(t, h, "vip-cut-"+h.Name, svc, 6)); got["FAIL"] > 0 {
			t.Errorf("after the cut, from %s: %v", h.Name, got)
		}
	}
}

// TestVIPPluginRestart: a client connects to a service's VIP every 50 ms
// while the plugin is disabled and enabled again on its own host, then on
// a host holding a task: no connection fails (the tables live in the
// sandboxes, and a starting plugin writes nothing before it knows
// everything).
func TestVIPPluginRestart(t *testing.T) {
	l := need(t)
	const network, svc = "vip-rs", "vip-rs-svc"
	tasks := vipService(t, l, network, "10.88.3.0/24", svc, 2)
	client := l.Hosts[1]
	labtest.Run(t, client, "vip-rs-client", network)
	labtest.WaitVIPBackends(t, client, "vip-rs-client", ipsOf(tasks), 30*time.Second)
	stream := labtest.StartStream(t, client, "vip-rs-client", svc)
	stream.WaitAnswers(t, 10, 30*time.Second)

	victims := []*lab.Host{client}
	for _, ta := range tasks {
		if ta.h != client && len(victims) < 2 {
			victims = append(victims, ta.h)
		}
	}
	for _, v := range victims {
		n := len(stream.Answers())
		old := labtest.PluginPID(t, v)
		start := time.Now()
		v.MustDocker(t, "plugin", "disable", "-f", pluginName)
		v.MustDocker(t, "plugin", "enable", pluginName)
		labtest.WaitPluginAnswers(t, v, old, time.Minute)
		back := time.Since(start)
		// Ten more seconds of connections with the new process.
		stream.WaitAnswers(t, len(stream.Answers())+150, time.Minute)
		during := stream.Answers()[n:]
		failed := counts(whos(during))["FAIL"]
		t.Logf("FIGURE plugin restart on %s (serving again after %s): %d connections to the VIP, %d failed",
			v.Name, back.Round(10*time.Millisecond), len(during), failed)
		if failed > 0 {
			t.Errorf("%d connections failed across the plugin restart on %s", failed, v.Name)
		}
	}
}

// TestVIPStack: a stack file in the default endpoint mode, deployed with
// `docker stack deploy` (its network of weft's driver made by the stack):
// a `docker run` client on the stack's network reaches the service by its
// name in the stack and by its full name.
func TestVIPStack(t *testing.T) {
	l := need(t)
	const stack = "vipst"
	network := stack + "_net"
	labtest.NoLeaksAfter(t, l, network)
	file := filepath.Join(t.TempDir(), "stack.yml")
	quoted := make([]string, len(labtest.HostnameServerCmd))
	for i, a := range labtest.HostnameServerCmd {
		quoted[i] = strconv.Quote(strings.ReplaceAll(a, "$", "$$"))
	}
	yml := fmt.Sprintf(`version: "3.8"
networks:
  net:
    driver: %s
    attachable: true
    ipam:
      config:
        - subnet: 10.88.4.0/24
services:
  api:
    image: %s
    command: [%s]
    networks: [net]
    deploy:
      replicas: 2
`, l.Config().PluginName, lab.ImageTag, strings.Join(quoted, ", "))
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	m := l.Manager()
	m.MustDocker(t, "stack", "deploy", "--resolve-image", "never", "-c", file, stack)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = m.Docker(ctx, "stack", "rm", stack)
		_ = labtest.RemoveNetwork(ctx, m, network, 50*time.Second)
	})
	tasks := taskNames(labtest.ServiceTasks(t, l, stack+"_api", network, 2, 3*time.Minute))
	client := l.Hosts[2]
	labtest.Run(t, client, "vip-st-client", network)
	labtest.WaitVIPBackends(t, client, "vip-st-client", ipsOf(tasks), 30*time.Second)
	for _, name := range []string{"api", stack + "_api"} {
		got := counts(labtest.FetchN(t, client, "vip-st-client", name, 10))
		t.Logf("FIGURE stack deploy: 10 connections to %q from %s: %v", name, client.Name, got)
		if got["FAIL"] > 0 || len(got) != 2 {
			t.Errorf("connections to %q: %v, want all answered by both tasks", name, got)
		}
	}
}
