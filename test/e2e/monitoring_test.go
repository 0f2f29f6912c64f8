package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/status"
	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// TestMonitoring: one network with a container on every host, then
//
//   - the metrics scraped on each host match the lab: mesh members alive,
//     local and remote endpoints, kernel entries, the probe's peers
//     reachable with the whole network MTU, the build; and every metric
//     the Grafana dashboard in docs/ uses is in the scrape;
//   - a kernel entry deleted by hand (an FDB and a neighbour entry) is
//     put back by the periodic repair and counted, in the metrics and in
//     `weft status`;
//   - UDP to the VXLAN port dropped on one host (an iptables rule in its
//     namespace): within 10 s the other hosts' `weft status` names the
//     problem and their metrics show the host unreachable, while the mesh
//     stays alive; within 10 s of the rule's removal both clear.
func TestMonitoring(t *testing.T) {
	l := need(t)
	const network = "mon"
	labtest.NoLeaksAfter(t, l, network)
	labtest.CreateSwarmNetwork(t, l, network, "10.96.0.0/24")
	ctrs := labtest.RunOnEach(t, l, "mon", network)
	labtest.WaitConverged(t, l.Hosts, time.Minute)
	netID := strings.TrimSpace(l.Manager().MustDocker(t, "network", "inspect", "-f", "{{.Id}}", network))
	short := netID[:12]
	var vni uint32
	for _, n := range labtest.Status(t, l.Hosts[0]).Networks {
		if n.ID == netID {
			vni = n.VNI
		}
	}
	if vni == 0 {
		t.Fatalf("h1's status lacks network %s", network)
	}
	node := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		node[h] = labtest.Status(t, h).Node
	}

	t.Run("metrics match the lab", func(t *testing.T) {
		for _, h := range l.Hosts {
			// The probe needs a few seconds after the lab's start to
			// measure every path: wait for the figures, then compare.
			var m labtest.Metrics
			err := lab.WaitFor(context.Background(), 30*time.Second, 500*time.Millisecond, func() error {
				var err error
				if m, err = labtest.ScrapeMetrics(context.Background(), h); err != nil {
					return err
				}
				return metricsMatch(h, l, m, node, short, vni)
			})
			if err != nil {
				t.Fatalf("%s: %v", h.Name, err)
			}
			if h == l.Hosts[0] {
				checkDashboard(t, m)
			}
		}
	})

	t.Run("kernel entry deleted by hand is repaired and counted", func(t *testing.T) {
		h1, h2 := l.Hosts[0], l.Hosts[1]
		remote := ctrs[1] // on h2
		mac := strings.TrimSpace(h2.MustDocker(t, "inspect", "-f", fmt.Sprintf("{{(index .NetworkSettings.Networks %q).MacAddress}}", network), remote.Name))
		before := labtest.Scrape(t, h1)
		fdb0, _ := before.Value("weft_repair_fixed_entries_total", "table", "fdb", "action", "added")
		neigh0, _ := before.Value("weft_repair_fixed_entries_total", "table", "neighbour", "action", "added")
		dev := dataplane.DeviceName(vni)
		h1.MustExec(t, "ip", "neigh", "del", remote.IP, "dev", dev)
		h1.MustExec(t, "bridge", "fdb", "del", mac, "dev", dev, "dst", h2.Addr().String())
		deleted := time.Now()
		if k := labtest.MustKernel(t, h1).Device(vni); k == nil || hasNeighbor(k, remote.IP) {
			t.Fatalf("the neighbour entry of %s is still on %s after ip neigh del", remote.IP, h1.Name)
		}
		// The repair runs every 10 s.
		err := lab.WaitFor(context.Background(), 25*time.Second, 200*time.Millisecond, func() error {
			k := labtest.MustKernel(t, h1).Device(vni)
			if k == nil || !hasNeighbor(k, remote.IP) || !hasFDB(k, mac, h2.Addr().String()) {
				return fmt.Errorf("entries of %s (%s) not back on %s", remote.IP, mac, h1.Name)
			}
			m, err := labtest.ScrapeMetrics(context.Background(), h1)
			if err != nil {
				return err
			}
			fdb, _ := m.Value("weft_repair_fixed_entries_total", "table", "fdb", "action", "added")
			neigh, _ := m.Value("weft_repair_fixed_entries_total", "table", "neighbour", "action", "added")
			if fdb != fdb0+1 || neigh != neigh0+1 {
				return fmt.Errorf("repairs counted: fdb %v -> %v, neighbour %v -> %v; want one each", fdb0, fdb, neigh0, neigh)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("repaired and counted %s after the deletion", time.Since(deleted).Round(100*time.Millisecond))
		rep := labtest.Status(t, h1)
		if !anyContains(rep.Problems, "repaired in the last hour") || rep.Repairs.FDBAdded < 1 || rep.Repairs.NeighAdded < 1 {
			t.Fatalf("weft status does not report the repair: problems %q, repairs %+v", rep.Problems, rep.Repairs)
		}
		labtest.Reach(t, h1, ctrs[0].Name, remote.IP, 10*time.Second)
	})

	t.Run("blocked VXLAN port is named", func(t *testing.T) {
		h3 := l.Hosts[2]
		others := l.Hosts[:2]
		rule := []string{"INPUT", "-p", "udp", "--dport", "4790", "-j", "DROP"}
		h3.MustExec(t, "iptables", append([]string{"-w", "-I"}, rule...)...)
		blocked := time.Now()
		removed := false
		unblock := func() {
			if !removed {
				h3.MustExec(t, "iptables", append([]string{"-w", "-D"}, rule...)...)
				removed = true
			}
		}
		defer unblock()
		want := fmt.Sprintf("%s: mesh alive, but VXLAN to %s:4790 unanswered for", node[h3], h3.Addr())
		for _, h := range others {
			waitHealth(t, h, 10*time.Second-time.Since(blocked), "name the blocked port", func(rep status.Report, m labtest.Metrics) error {
				if !anyContains(rep.Problems, want) {
					return fmt.Errorf("problems %q lack %q", rep.Problems, want)
				}
				if v, ok := m.Value("weft_probe_reachable", "peer", node[h3]); !ok || v != 0 {
					return fmt.Errorf("weft_probe_reachable{peer=%s} = %v (found %v), want 0", node[h3], v, ok)
				}
				if v, ok := m.Value("weft_mesh_members", "state", "alive"); !ok || int(v) < len(l.Hosts) {
					return fmt.Errorf("%v members alive, want the mesh whole (%d)", v, len(l.Hosts))
				}
				return nil
			})
		}
		t.Logf("named on %s and %s within %s", others[0].Name, others[1].Name, time.Since(blocked).Round(100*time.Millisecond))
		// The text leads with it too.
		if out, err := labtest.WeftCLI(context.Background(), others[0], "status"); err != nil || !strings.HasPrefix(out, "PROBLEMS\n") || !strings.Contains(out, want) {
			t.Fatalf("weft status on %s (%v):\n%s", others[0].Name, err, out)
		}

		unblock()
		cleared := time.Now()
		for _, h := range l.Hosts {
			waitHealth(t, h, 10*time.Second-time.Since(cleared), "clear", func(rep status.Report, m labtest.Metrics) error {
				for _, p := range rep.Problems {
					if strings.Contains(p, "VXLAN") {
						return fmt.Errorf("problem still reported: %q", p)
					}
				}
				for _, o := range l.Hosts {
					if o == h {
						continue
					}
					if v, ok := m.Value("weft_probe_reachable", "peer", node[o]); !ok || v != 1 {
						return fmt.Errorf("weft_probe_reachable{peer=%s} = %v (found %v), want 1", node[o], v, ok)
					}
				}
				return nil
			})
		}
		t.Logf("cleared everywhere within %s", time.Since(cleared).Round(100*time.Millisecond))
	})
}

// metricsMatch compares one host's scrape with the lab.
func metricsMatch(h *lab.Host, l *lab.Lab, m labtest.Metrics, node map[*lab.Host]string, short string, vni uint32) error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if v, _ := m.Value("weft_mesh_members", "state", "alive"); int(v) != len(l.Hosts) {
		bad("%v members alive, want %d", v, len(l.Hosts))
	}
	if v, _ := m.Value("weft_endpoints", "network", short, "where", "local"); v != 1 {
		bad("%v local endpoints on network %s, want 1", v, short)
	}
	if v, _ := m.Value("weft_endpoints", "network", short, "where", "remote"); int(v) != len(l.Hosts)-1 {
		bad("%v remote endpoints on network %s, want %d", v, short, len(l.Hosts)-1)
	}
	k, err := labtest.Kernel(h)
	if err != nil {
		return err
	}
	d := k.Device(vni)
	if d == nil {
		return fmt.Errorf("no device of VNI %d", vni)
	}
	fdb, neigh := 0, 0
	for _, e := range d.FDB {
		if e.Permanent {
			fdb++
		}
	}
	for _, e := range d.Neighbors {
		if e.Permanent {
			neigh++
		}
	}
	if fdb != len(l.Hosts)-1 || neigh != len(l.Hosts)-1 {
		bad("kernel holds %d FDB and %d neighbour entries, want %d each", fdb, neigh, len(l.Hosts)-1)
	}
	if v, _ := m.Value("weft_kernel_entries", "network", short, "table", "fdb"); int(v) != fdb {
		bad("weft_kernel_entries{table=fdb} = %v, kernel %d", v, fdb)
	}
	if v, _ := m.Value("weft_kernel_entries", "network", short, "table", "neighbour"); int(v) != neigh {
		bad("weft_kernel_entries{table=neighbour} = %v, kernel %d", v, neigh)
	}
	if v, _ := m.Value("weft_network_mtu_bytes", "network", short); v != 1450 {
		bad("network MTU %v, want 1450", v)
	}
	for _, o := range l.Hosts {
		if o == h {
			continue
		}
		if v, ok := m.Value("weft_probe_reachable", "peer", node[o], "vtep", o.Addr().String()); !ok || v != 1 {
			bad("probe to %s: reachable %v (found %v)", o.Name, v, ok)
		}
		if v, _ := m.Value("weft_probe_largest_packet_bytes", "peer", node[o]); v != 1450 {
			bad("probe to %s: largest packet %v, want 1450", o.Name, v)
		}
	}
	if v, _ := m.Value("weft_probe_target_packet_bytes"); v != 1450 {
		bad("probe target %v, want 1450", v)
	}
	if len(m.Series("weft_build_info")) != 1 || m["weft_dns_queries_total"] == nil || m["process_resident_memory_bytes"] == nil {
		bad("build, DNS or process metrics missing")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// checkDashboard: every metric the Grafana dashboard's queries use is in
// a real scrape.
func checkDashboard(t *testing.T, m labtest.Metrics) {
	t.Helper()
	qs, err := labtest.DashboardQueries("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	for title, exprs := range qs {
		for _, e := range exprs {
			if missing := m.MissingMetrics(labtest.QueryMetrics(e)); len(missing) > 0 {
				t.Errorf("dashboard panel %q uses %v, which the plugin does not export", title, missing)
			}
		}
	}
}

// waitHealth waits until h's status and metrics satisfy ok.
func waitHealth(t *testing.T, h *lab.Host, within time.Duration, what string, ok func(status.Report, labtest.Metrics) error) {
	t.Helper()
	ctx := context.Background()
	err := lab.WaitFor(ctx, max(within, time.Second), 250*time.Millisecond, func() error {
		rep, err := labtest.FetchStatus(ctx, h)
		if err != nil {
			return err
		}
		m, err := labtest.ScrapeMetrics(ctx, h)
		if err != nil {
			return err
		}
		return ok(rep, m)
	})
	if err != nil {
		t.Fatalf("%s did not %s in time: %v", h.Name, what, err)
	}
}

func hasNeighbor(d *dataplane.VXLANDevice, ip string) bool {
	for _, n := range d.Neighbors {
		if n.IP.String() == ip && n.Permanent {
			return true
		}
	}
	return false
}

func hasFDB(d *dataplane.VXLANDevice, mac, vtep string) bool {
	for _, e := range d.FDB {
		if e.MAC.String() == mac && e.VTEP.String() == vtep && e.Permanent {
			return true
		}
	}
	return false
}

func anyContains(ss []string, sub string) bool {
	for _, s := range ss {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// engineLine is one line of the engine's log that quotes the plugin: the
// engine's level, then the plugin's line with its own level.
var engineLine = regexp.MustCompile(`level=(\w+) msg="time=\S+ level=(\w+) (.*)" plugin=`)

// TestPluginLogLevels: the engine logs each line of the plugin at the
// line's own level: weft's errors at level=error, everything else
// (debug, info, warnings) at level=info. A real error is made on h3: its
// plugin restarts while the lab's metrics address (WEFT_METRICS_ADDR) is
// taken by another process, which the plugin reports as an error and
// retries until the address is free.
func TestPluginLogLevels(t *testing.T) {
	l := need(t)
	h := l.Hosts[2]
	offset := labtest.LogSize(t, h)
	ctx := context.Background()
	oldPID := labtest.PluginPID(t, h)
	if err := h.DisablePlugin(ctx, pluginName); err != nil {
		t.Fatal(err)
	}
	enabled := false
	defer func() {
		if !enabled {
			_ = h.EnablePlugin(ctx, pluginName)
		}
	}()
	// While the plugin is off, another process takes its metrics address
	// in h3's namespace.
	squat := h.ExecCmd(ctx, "busybox", "httpd", "-f", "-p", metricsAddr, "-h", t.TempDir())
	if err := squat.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- squat.Wait() }()
	stopSquat := func() {
		if squat.Process.Kill() == nil {
			<-exited
		}
	}
	defer stopSquat()
	err := lab.WaitFor(ctx, 10*time.Second, 50*time.Millisecond, func() error {
		select {
		case err := <-exited:
			exited <- err
			return lab.Permanent(fmt.Errorf("busybox httpd on %s exited: %v", metricsAddr, err))
		default:
		}
		_, err := h.Exec(ctx, "wget", "-qO", "/dev/null", "http://"+metricsAddr+"/")
		if err != nil && strings.Contains(err.Error(), "refused") {
			return err
		}
		return nil // answered, if only with an error page: it listens
	})
	if err != nil {
		t.Fatalf("nothing listens on %s in %s: %v", metricsAddr, h.Name, err)
	}
	if err := h.EnablePlugin(ctx, pluginName); err != nil {
		t.Fatal(err)
	}
	enabled = true
	labtest.WaitPluginAnswers(t, h, oldPID, time.Minute)
	const failed = "metrics endpoint unavailable; retrying"
	err = lab.WaitFor(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		if b, _ := os.ReadFile(h.DockerdLog); !strings.Contains(string(b[offset:]), failed) {
			return fmt.Errorf("no %q in %s's engine log yet", failed, h.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stopSquat()
	// The address free, the plugin serves metrics there.
	err = lab.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error {
		_, err := h.Exec(ctx, "wget", "-qO", "/dev/null", "http://"+metricsAddr+"/metrics")
		return err
	})
	if err != nil {
		t.Fatalf("metrics not served on %s once free: %v", metricsAddr, err)
	}

	b, err := os.ReadFile(h.DockerdLog)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		mm := engineLine.FindStringSubmatch(line)
		if mm == nil {
			continue
		}
		engine, own := mm[1], mm[2]
		count[own]++
		want := "info"
		if own == "ERROR" {
			want = "error"
		}
		if engine != want {
			t.Errorf("a %s line of the plugin logged by the engine at level=%s: %s", own, engine, line)
		}
	}
	if count["INFO"] == 0 || count["ERROR"] == 0 {
		t.Fatalf("plugin lines by level in %s's engine log since the restart: %v; want INFO and ERROR lines", h.Name, count)
	}
	t.Logf("plugin lines since the restart, by the plugin's level: %v", count)
}
