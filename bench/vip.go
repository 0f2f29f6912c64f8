package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// The VIP part: swarm services in the default endpoint mode on the weft
// network, reached by a client container on h1 through the service's VIP
// (balanced by weft in the client's namespace, package vip) and straight to
// the tasks' addresses, back to back in each repetition:
//
//   - connection rate, one task (on h2): new TCP connections per second,
//     each a 64-byte request and reply, then closed with a reset (so that
//     the client's ports and conntrack entries do not pile up in TIME_WAIT
//     over the run), from 4 concurrent workers;
//   - connection rate, three tasks (one per host): the same, the straight
//     client taking the three task addresses in turn as the VIP does;
//   - throughput, one task: iperf3, 1 stream;
//   - request/response, one task: one connection, as in the data part.
//
// The straight figures are taken from the same client container, whose
// namespace holds weft's VIP table too: what a ratio shows is what the
// translation of a VIP's connections costs.

// VIPResult is the VIP part's figures: per metric, one value per
// repetition for each way.
type VIPResult struct {
	// Via are the figures through the VIP, Straight straight to the
	// tasks, by metric (VIPMetrics).
	Via      map[string]Floats `json:"via"`
	Straight map[string]Floats `json:"straight"`
	// Seconds of each connection-rate test.
	ConnSeconds float64 `json:"conn_seconds"`
}

// VIP metrics, the keys of VIPResult's maps.
const (
	VIPConn1 = "conn1_per_s" // new connections per second, one task
	VIPConn3 = "conn3_per_s" // new connections per second, three tasks
	VIPTCP1  = "tcp1_gbps"   // iperf3, 1 stream, one task
	VIPRR    = "rr_per_s"    // request/response transactions per second, one task
)

// VIPMetrics lists the VIP metrics in report order.
var VIPMetrics = []string{VIPConn1, VIPConn3, VIPTCP1, VIPRR}

var vipMetricNames = map[string]struct {
	name string
	prec int
}{
	VIPConn1: {"new connections/s, 1 task", 0},
	VIPConn3: {"new connections/s, 3 tasks", 0},
	VIPTCP1:  {"TCP, 1 stream, 1 task (Gbit/s)", 2},
	VIPRR:    {"TCP request/response, 1 task (transactions/s)", 0},
}

// vipTarget is the least ratio, through the VIP to straight, wanted of
// every VIP figure.
const vipTarget = 0.95

// The services of the VIP part.
const (
	vipOne   = "wb-vip1"
	vipThree = "wb-vip3"
)

// vip measures the VIP part in e's lab, from the client container the
// data part left on h1.
func (e *env) vip(ctx context.Context) (*VIPResult, error) {
	o := e.o
	h1 := e.h(1)
	cli := "cli-" + NetWeft
	res := &VIPResult{Via: map[string]Floats{}, Straight: map[string]Floats{}, ConnSeconds: o.RRTime.Seconds()}
	m := e.l.Manager()
	serve := []string{"sh", "-c", toolMount + " rrserver -l :" + rrPort + " & exec iperf3 -s"}
	for _, s := range []struct {
		name  string
		extra []string
	}{
		{vipOne, []string{"--replicas", "1", "--constraint", "node.hostname==" + e.h(2).Name}},
		{vipThree, []string{"--replicas", "3", "--placement-pref", "spread=node.id"}},
	} {
		args := []string{"service", "create", "--detach", "--no-resolve-image", "--name", s.name, "--network", weftNet,
			"--mount", "type=bind,source=" + o.Self + ",target=" + toolMount + ",readonly"}
		args = append(append(args, s.extra...), lab.ImageTag)
		if _, err := m.Docker(ctx, append(args, serve...)...); err != nil {
			return res, err
		}
		defer func() { _, _ = m.Docker(context.WithoutCancel(ctx), "service", "rm", s.name) }()
	}
	tasks := map[string][]string{}
	for _, s := range []struct {
		name string
		n    int
	}{{vipOne, 1}, {vipThree, 3}} {
		ips, err := e.taskAddrs(ctx, s.name, s.n)
		if err != nil {
			return res, err
		}
		tasks[s.name] = ips
	}
	exec := func(ctx context.Context, args ...string) (string, error) {
		return h1.Docker(ctx, append([]string{"exec", cli}, args...)...)
	}
	// Wait until the client reaches each service by name (its VIP).
	for name := range tasks {
		err := lab.WaitFor(ctx, time.Minute, 250*time.Millisecond, func() error {
			_, err := exec(ctx, toolMount, "connrate", "-addr", name+":"+rrPort, "-d", "100ms", "-c", "1")
			return err
		})
		if err != nil {
			return res, fmt.Errorf("%s not reached through its VIP: %w", name, err)
		}
	}
	type way struct {
		into map[string]Floats
		one  string   // the one-task service's address this way
		many []string // the three-task service's addresses this way
	}
	ways := []way{
		{res.Via, vipOne, []string{vipThree}},
		{res.Straight, tasks[vipOne][0], tasks[vipThree]},
	}
	for rep := range o.Reps {
		for _, metric := range VIPMetrics {
			for k := range ways {
				w := ways[(k+rep)%len(ways)]
				o.Logf("VIP rep %d/%d: %s %s", rep+1, o.Reps, metric, map[bool]string{true: "through the VIP", false: "straight"}[w.one == vipOne])
				v, err := vipMeasure(ctx, o, exec, metric, w.one, w.many)
				if err != nil {
					o.note(PartVIP, "rep %d %s to %s: %v", rep+1, metric, w.one, err)
					v = math.NaN()
				}
				w.into[metric] = append(w.into[metric], v)
			}
		}
	}
	return res, nil
}

// taskAddrs waits until service has n running tasks and returns their
// addresses on the weft network.
func (e *env) taskAddrs(ctx context.Context, service string, n int) ([]string, error) {
	var ips []string
	err := lab.WaitFor(ctx, 3*time.Minute, time.Second, func() error {
		ips = nil
		for _, h := range e.l.Hosts {
			out, err := h.Docker(ctx, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service, "--filter", "status=running")
			if err != nil {
				return err
			}
			for _, id := range strings.Fields(out) {
				ip, err := h.ContainerIP(ctx, id, weftNet)
				if err != nil {
					return err
				}
				ips = append(ips, ip)
			}
		}
		if len(ips) != n {
			return fmt.Errorf("%d running tasks of %s, want %d", len(ips), service, n)
		}
		return nil
	})
	return ips, err
}

// vipMeasure takes one VIP figure: to one (an address or a service name)
// or, for VIPConn3, to many in turn.
func vipMeasure(ctx context.Context, o *Options, exec func(context.Context, ...string) (string, error), metric, one string, many []string) (float64, error) {
	switch metric {
	case VIPConn1, VIPConn3:
		targets := []string{one}
		if metric == VIPConn3 {
			targets = many
		}
		addrs := make([]string, len(targets))
		for i, t := range targets {
			addrs[i] = t + ":" + rrPort
		}
		ctx, cancel := context.WithTimeout(ctx, o.RRTime+30*time.Second)
		defer cancel()
		out, err := exec(ctx, toolMount, "connrate", "-addr", strings.Join(addrs, ","), "-d", o.RRTime.String(), "-c", "4")
		if err != nil {
			return 0, err
		}
		var r ConnResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return 0, fmt.Errorf("connrate output %q: %w", out, err)
		}
		if r.Failed > 0 {
			return 0, fmt.Errorf("%d of %d connections failed", r.Failed, r.Connections+r.Failed)
		}
		return r.Rate, nil
	case VIPTCP1:
		return iperf(ctx, o, path{addr: one, exec: func(ctx context.Context, name string, args ...string) (string, error) {
			return exec(ctx, append([]string{name}, args...)...)
		}}, 1)
	case VIPRR:
		r, err := reqResp(ctx, o, path{addr: one, tool: toolMount, exec: func(ctx context.Context, name string, args ...string) (string, error) {
			return exec(ctx, append([]string{name}, args...)...)
		}})
		return r.Rate, err
	}
	return 0, fmt.Errorf("unknown VIP metric %s", metric)
}

// vipTargets writes the VIP part's targets.
func vipTargets(b *strings.Builder, r *Results) {
	v := r.VIP
	if v == nil {
		return
	}
	for _, m := range VIPMetrics {
		s := Summarize(Ratios(v.Via[m], v.Straight[m]))
		fmt.Fprintf(b, "| %s through a VIP ≥ %.2f × straight to the task | %s × | %s |\n", vipMetricNames[m].name, vipTarget, fmtS(s, 2), verdict(s.Median >= vipTarget, !math.IsNaN(s.Median)))
	}
}

// vipTable writes the VIP part's figures.
func vipTable(b *strings.Builder, r *Results) {
	v := r.VIP
	if v == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Service VIPs, 1500-byte underlay\n\n")
	p("From a container on h1 on the weft network, to swarm services in the default endpoint mode on it: by the service's name (its VIP, balanced by weft in the client's own namespace) and straight to the tasks' addresses, back to back. "+
		"One task: on h2. Three tasks: one per host, the straight client taking their addresses in turn as the VIP's round robin does. "+
		"New connections: 4 workers, each opening a connection, sending a 64-byte request, reading the reply and closing with a reset, for %.0f s. Throughput: iperf3, 1 stream. Request/response: as in the data part.\n\n", v.ConnSeconds)
	p("| figure | through the VIP | straight | VIP ÷ straight |\n|---|---|---|---|\n")
	for _, m := range VIPMetrics {
		mn := vipMetricNames[m]
		p("| %s | %s | %s | %s |\n", mn.name, fmtS(Summarize(v.Via[m]), mn.prec), fmtS(Summarize(v.Straight[m]), mn.prec), fmtS(Summarize(Ratios(v.Via[m], v.Straight[m])), 2))
	}
	p("\n")
}
