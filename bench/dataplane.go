package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// Data plane: h1 sends to h2 over three paths, measured back to back for
// each figure (the order rotates, so a drift of the machine's load does
// not favour one path):
//
//   - underlay: h1's host namespace to h2's, over the veths and the bridge;
//   - overlay: a container on h1 to one on h2 over Docker's overlay;
//   - weft: a container on h1 to one on h2 over weft;
//   - weft-encrypted: the same over an encrypted weft network (encrypted.go).
//
// On each path: iperf3 TCP with 1 and 4 streams, busybox ping every 10 ms
// (RTT p50/p99), and weftbench's TCP request/response client (one 64-byte
// request and reply at a time over one connection).

// endpoints of one path.
type path struct {
	net  string
	addr string // the receiver's address
	// exec runs a command on the sender's side.
	exec func(ctx context.Context, name string, args ...string) (string, error)
	// tool is the weftbench binary as the sender sees it.
	tool string
	mtu  int
}

// dataPlane sets up the paths in e's lab (their containers are the other
// parts' probes too) and, if measure is set, measures every path.
func (e *env) dataPlane(ctx context.Context, measure bool) (DataRun, error) {
	o := e.o
	run := DataRun{UnderlayMTU: e.mtu}
	h1, h2 := e.h(1), e.h(2)

	// Underlay servers in h2's host namespace.
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	for _, argv := range [][]string{{"iperf3", "-s"}, {o.Self, "rrserver", "-l", ":" + rrPort}} {
		cmd := h2.ExecCmd(srvCtx, argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			return run, fmt.Errorf("start %s on %s: %w", argv[0], h2.Name, err)
		}
		defer func() { stopSrv(); _ = cmd.Wait() }()
	}

	paths := []path{{
		net:  NetUnderlay,
		addr: h2.Addr().String(),
		exec: func(ctx context.Context, name string, args ...string) (string, error) {
			return h1.Exec(ctx, name, args...)
		},
		tool: o.Self,
		mtu:  e.mtu,
	}}
	for _, net := range []string{NetOverlay, NetWeft, NetWeftEnc} {
		dn := netOf(net)
		srv, cli := "srv-"+net, "cli-"+net
		if err := e.run(ctx, h2, srv, dn, "", "sh", "-c", toolMount+" rrserver -l :"+rrPort+" & exec iperf3 -s"); err != nil {
			return run, err
		}
		if err := e.run(ctx, h1, cli, dn, "", "sleep", "1000000"); err != nil {
			return run, err
		}
		ip, err := h2.ContainerIP(ctx, srv, dn)
		if err != nil {
			return run, err
		}
		mtuOut, err := h1.Docker(ctx, "exec", cli, "cat", "/sys/class/net/eth0/mtu")
		if err != nil {
			return run, err
		}
		mtu, _ := strconv.Atoi(strings.TrimSpace(mtuOut))
		paths = append(paths, path{
			net:  net,
			addr: ip,
			exec: func(ctx context.Context, name string, args ...string) (string, error) {
				return h1.Docker(ctx, append([]string{"exec", cli, name}, args...)...)
			},
			tool: toolMount,
			mtu:  mtu,
		})
		// Probes of the control-plane part run in these containers.
		for _, c := range []struct {
			h    *lab.Host
			name string
		}{{h1, cli}, {h2, srv}} {
			pid, err := ctrPid(ctx, c.h, c.name)
			if err != nil {
				return run, err
			}
			if err := fastARP(ctx, pid); err != nil {
				return run, err
			}
		}
	}
	nets, err := waitPaths(ctx, paths)
	run.Nets = nets
	if err != nil || !measure {
		return run, err
	}
	measureRotating(ctx, o, paths, run.Nets, PartData, fmt.Sprintf("data plane MTU %d", e.mtu))
	return run, nil
}

// waitPaths waits until every path carries traffic at all, and returns
// an empty NetData for each.
func waitPaths(ctx context.Context, paths []path) ([]NetData, error) {
	var nets []NetData
	for _, p := range paths {
		err := lab.WaitFor(ctx, 60*time.Second, 250*time.Millisecond, func() error {
			_, err := p.exec(ctx, "ping", "-c1", "-W1", p.addr)
			return err
		})
		if err != nil {
			return nets, fmt.Errorf("%s path to %s: %w", p.net, p.addr, err)
		}
		nets = append(nets, NetData{Net: p.net, MTU: p.mtu, Metrics: map[string]Floats{}})
	}
	return nets, nil
}

// measureRotating takes every group of figures on every path, max(Reps,
// DataReps) times: metric by metric, the paths back to back in an order
// that rotates with the repetition and the group, so the figures a ratio
// compares are taken seconds apart. nets[i] receives path i's figures, NaN
// where one failed (noted on part; label heads the log and the notes).
func measureRotating(ctx context.Context, o *Options, paths []path, nets []NetData, part, label string) {
	reps := max(o.Reps, o.DataReps)
	for rep := range reps {
		for gi, g := range metricGroups {
			for k := range paths {
				i := (k + rep + gi) % len(paths)
				p, nd := paths[i], &nets[i]
				o.Logf("%s rep %d/%d: %s %s", label, rep+1, reps, g, p.net)
				m, err := measureGroup(ctx, o, p, g)
				if err != nil {
					o.note(part, "%s rep %d %s %s: %v", label, rep+1, p.net, g, err)
				}
				for _, k := range metricsOf[g] {
					v, ok := m[k]
					if !ok {
						v = math.NaN()
					}
					nd.Metrics[k] = append(nd.Metrics[k], v)
				}
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// Groups of data-plane metrics measured together.
var metricGroups = []string{"tcp1", "tcp4", "ping", "rr"}

var metricsOf = map[string][]string{
	"tcp1": {MetricTCP1},
	"tcp4": {MetricTCP4},
	"ping": {MetricRTT50, MetricRTT99},
	"rr":   {MetricRR, MetricRR99us},
}

// measureGroup takes one group of figures on one path.
func measureGroup(ctx context.Context, o *Options, p path, group string) (map[string]float64, error) {
	m := map[string]float64{}
	switch group {
	case "tcp1", "tcp4":
		streams := 1
		if group == "tcp4" {
			streams = 4
		}
		gbps, err := iperf(ctx, o, p, streams)
		if err != nil {
			return m, err
		}
		m[metricsOf[group][0]] = gbps
	case "ping":
		p50, p99, err := pingRTT(ctx, o, p)
		if err != nil {
			return m, err
		}
		m[MetricRTT50], m[MetricRTT99] = p50, p99
	case "rr":
		rr, err := reqResp(ctx, o, p)
		if err != nil {
			return m, err
		}
		m[MetricRR], m[MetricRR99us] = rr.Rate, rr.P99us
	}
	return m, nil
}

// iperf runs an iperf3 TCP test and returns the received rate in Gbit/s.
func iperf(ctx context.Context, o *Options, p path, streams int) (float64, error) {
	secs := int(o.IperfTime / time.Second)
	ctx, cancel := context.WithTimeout(ctx, o.IperfTime+60*time.Second)
	defer cancel()
	var out string
	var err error
	// The server takes one test at a time and may still be closing the
	// last one: try again briefly.
	for try := 0; try < 3; try++ {
		out, err = p.exec(ctx, "iperf3", "-c", p.addr, "-t", strconv.Itoa(secs), "-O", "1", "-P", strconv.Itoa(streams), "-J")
		if err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3 -P %d to %s: %w", streams, p.addr, err)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if r.Error != "" || r.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 -P %d to %s: %q", streams, p.addr, r.Error)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingRTT pings every 10 ms and returns the RTT's p50 and p99 in µs.
func pingRTT(ctx context.Context, o *Options, p path) (p50, p99 float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(o.PingCount)*20*time.Millisecond+30*time.Second)
	defer cancel()
	ping := "ping"
	args := []string{"-c", strconv.Itoa(o.PingCount), "-i", "0.01", "-W", "2", p.addr}
	if p.net == NetUnderlay {
		// busybox's ping on the underlay too, so every path is measured
		// by the same tool.
		ping = "busybox"
		args = append([]string{"ping"}, args...)
	}
	out, err := p.exec(ctx, ping, args...)
	if err != nil {
		return 0, 0, fmt.Errorf("ping %s: %w", p.addr, err)
	}
	var us []float64
	for _, m := range pingTime.FindAllStringSubmatch(out, -1) {
		if v, err := strconv.ParseFloat(m[1], 64); err == nil {
			us = append(us, v*1000)
		}
	}
	if len(us) < o.PingCount*9/10 {
		return 0, 0, fmt.Errorf("ping %s: %d of %d replies", p.addr, len(us), o.PingCount)
	}
	return Percentile(us, 50), Percentile(us, 99), nil
}

// reqResp runs weftbench's request/response client.
func reqResp(ctx context.Context, o *Options, p path) (RRResult, error) {
	ctx, cancel := context.WithTimeout(ctx, o.RRTime+30*time.Second)
	defer cancel()
	out, err := p.exec(ctx, p.tool, "rrclient", "-addr", hostPort(p.addr, rrPort), "-d", o.RRTime.String())
	if err != nil {
		return RRResult{}, fmt.Errorf("rrclient to %s: %w", p.addr, err)
	}
	var r RRResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("rrclient output %q: %w", out, err)
	}
	return r, nil
}
