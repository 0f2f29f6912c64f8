package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Report renders r as Markdown: the run's identity, the issue's targets
// with what was measured, then one table per part. Every figure is the
// median over the repetitions with the smallest and largest repetition in
// brackets; ratios are taken repetition by repetition, within one run.
// analysis, if not empty, is Markdown placed after the targets.
func Report(r *Results, analysis string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# weft benchmark results\n\n")
	if r.Smoke {
		p("> **Smoke run** (`make bench-smoke`): one short repetition, to check the harness; not figures to quote.\n\n")
	}
	p("Made by `make bench` (harness in [`bench/`](.) and [`cmd/weftbench`](../cmd/weftbench)); the raw figures are in [`results.json`](results.json).\n\n")
	p("| | |\n|---|---|\n")
	latest := ""
	if len(r.Origins) > 0 {
		latest = " (the latest run; merged parts: see Notes)"
	}
	p("| date | %s%s |\n", r.Date.Format("2006-01-02 15:04 UTC"), latest)
	p("| machine | %s |\n", r.Machine)
	p("| commit | `%s`%s |\n", r.Commit, latest)
	reps := fmt.Sprintf("%d per figure", r.Reps)
	if len(r.Origins) > 0 {
		reps = fmt.Sprintf("at least %d per figure (parts merged from other runs)", r.Reps)
	}
	p("| repetitions | %s, %d for the data plane (median, and min–max over the repetitions in brackets) |\n", reps, max(r.Reps, r.DataReps))
	if len(r.Origins) > 0 {
		p("| run time | %.0f min, the merged runs together |\n\n", r.Seconds/60)
	} else {
		p("| run time | %.0f min |\n\n", r.Seconds/60)
	}
	p("%s", "**The figures are noisy.** Every \"host\" is a network namespace with its own dockerd on one 2-core machine, "+
		"which other engineers' labs, tests and builds share while this runs"+loadNote(r)+"; "+
		"the \"underlay\" is a veth pair and a Linux bridge in memory, and sender, receiver and all encapsulation share the same two cores, "+
		"so any other process takes throughput straight from the path being measured. Ratios are therefore taken within one repetition, "+
		"figure by figure, with the three paths measured back to back seconds apart in rotating order; "+
		"even so the spreads are wide, and absolute figures will differ on real hosts with real NICs.\n\n")
	p("![data-plane ratios and control-plane latencies](results.png)\n\n")

	targets(&b, r)
	if strings.TrimSpace(analysis) != "" {
		p("%s\n\n", strings.TrimSpace(analysis))
	}
	dataTables(&b, r)
	encryptedTable(&b, r)
	controlTable(&b, r)
	scaleTable(&b, r)
	dnsTable(&b, r)
	kernelTable(&b, r)
	idleTable(&b, r)
	vipTable(&b, r)
	ipv6Table(&b, r)
	method(&b)
	notes(&b, r)
	return b.String()
}

// notes lists where merged parts come from and what went wrong, part by
// part.
func notes(b *strings.Builder, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	parts := []string{PartData, PartControl, PartScale, PartDNS, PartKernel, PartIdle, PartVIP, PartIPv6}
	n := len(r.Notes)
	for _, part := range parts {
		n += len(r.PartNotes[part])
		if _, ok := r.Origins[part]; ok {
			n++
		}
	}
	if n == 0 {
		return
	}
	p("## Notes\n\n")
	for _, part := range parts {
		if o, ok := r.Origins[part]; ok {
			p("- The %s part comes from %s, merged into this report (`weftbench run -merge`).\n", part, o)
		}
	}
	for _, s := range r.Notes {
		p("- %s\n", s)
	}
	for _, part := range parts {
		for _, s := range r.PartNotes[part] {
			p("- %s: %s\n", part, s)
		}
	}
	p("\n")
}

// loadNote describes the load average seen during the run.
func loadNote(r *Results) string {
	s := Summarize(r.Load)
	if s.N == 0 {
		return ""
	}
	during := "this run"
	if len(r.Origins) > 0 {
		during = "these runs"
	}
	return fmt.Sprintf(" (1-minute load average during %s: median %.1f, %.1f–%.1f, on 2 cores)", during, s.Median, s.Min, s.Max)
}

// fmtS formats a summary with its spread.
func fmtS(s Summary, prec int) string {
	if math.IsNaN(s.Median) {
		return "n/a"
	}
	if s.N <= 1 || s.Min == s.Max {
		return fmt.Sprintf("%.*f", prec, s.Median)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, s.Median, prec, s.Min, prec, s.Max)
}

func verdict(ok, known bool) string {
	switch {
	case !known:
		return "not measured"
	case ok:
		return "met"
	}
	return "**missed**"
}

// targets writes the issue's targets against this run.
func targets(b *strings.Builder, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	nums := []string{"6"}
	if r.Kernel != nil {
		nums = append(nums, "12")
	}
	if r.VIP != nil {
		nums = append(nums, "14")
	}
	if r.Idle != nil {
		nums = append(nums, "17")
	}
	issues := "issue " + nums[0]
	if len(nums) > 1 {
		issues = "issues " + strings.Join(nums[:len(nums)-1], ", ") + " and " + nums[len(nums)-1]
	}
	p("## Targets (%s)\n\n| target | measured (median, min–max) | |\n|---|---|---|\n", issues)
	for _, d := range r.Data {
		u, ov, wf := d.Net(NetUnderlay), d.Net(NetOverlay), d.Net(NetWeft)
		if u == nil || wf == nil {
			continue
		}
		want := 0.85
		if d.UnderlayMTU >= 9000 {
			want = 0.93
		}
		for _, m := range []struct{ key, name string }{{MetricTCP1, "1 stream"}, {MetricTCP4, "4 streams"}} {
			s := Summarize(Ratios(wf.Metrics[m.key], u.Metrics[m.key]))
			p("| TCP throughput ≥ %.2f × underlay, %d MTU, %s | %s × | %s |\n", want, d.UnderlayMTU, m.name, fmtS(s, 2), verdict(s.Median >= want, !math.IsNaN(s.Median)))
			if ov != nil {
				s := Summarize(Ratios(wf.Metrics[m.key], ov.Metrics[m.key]))
				p("| TCP throughput ≥ 1.15 × Docker overlay, %d MTU, %s | %s × | %s |\n", d.UnderlayMTU, m.name, fmtS(s, 2), verdict(s.Median >= 1.15, !math.IsNaN(s.Median)))
			}
		}
		for _, m := range []struct{ key, name string }{{MetricRTT50, "p50"}, {MetricRTT99, "p99"}} {
			s := Summarize(Ratios(wf.Metrics[m.key], u.Metrics[m.key]))
			p("| ping RTT %s ≤ 1.5 × underlay, %d MTU | %s × | %s |\n", m.name, d.UnderlayMTU, fmtS(s, 2), verdict(s.Median <= 1.5, !math.IsNaN(s.Median)))
		}
	}
	if c := r.Control; c != nil {
		var ov, wf *ControlNetData
		for i := range c.Nets {
			if c.Nets[i].Net == NetOverlay {
				ov = &c.Nets[i]
			} else if c.Nets[i].Net == NetWeft {
				wf = &c.Nets[i]
			}
		}
		if ov != nil && wf != nil {
			so, sw := repPercentile(ov.RunToReach, 50), repPercentile(wf.RunToReach, 50)
			p("| docker run → reachable from another host, p50 below the overlay's | weft %s ms, overlay %s ms | %s |\n", fmtS(sw, 0), fmtS(so, 0), verdict(sw.Median < so.Median, !math.IsNaN(sw.Median) && !math.IsNaN(so.Median)))
			sp := Summarize(wf.Purge)
			p("| cut-off host purged everywhere within 5 s | weft %s s (overlay %s s) | %s |\n", fmtS(sp, 1), fmtS(Summarize(ov.Purge), 1), verdict(sp.Max <= 5, !math.IsNaN(sp.Median)))
			sr := Summarize(wf.Return)
			p("| returning host reachable within 5 s | weft %s s (overlay %s s) | %s |\n", fmtS(sr, 1), fmtS(Summarize(ov.Return), 1), verdict(sr.Max <= 5, !math.IsNaN(sr.Median)))
		}
	}
	for _, s := range r.Scale {
		if s.Members == 200 && s.Entries == 10000 {
			c := Summarize(s.Converge)
			ok := c.N > 0 && c.N == len(s.Converge) && c.Max <= 5
			p("| 10,000 endpoints converge on 200 members within 5 s | %s | %s |\n", convergence(s), verdict(ok, len(s.Converge) > 0))
		}
	}
	if k := r.Kernel; k != nil {
		add, del := Summarize(k.OneAdd), Summarize(k.OneRemove)
		p("| one endpoint changed at %s remote endpoints: a few ms (≤ 5 ms) | added %s ms, removed %s ms | %s |\n",
			thousands(k.Entries), fmtS(add, 2), fmtS(del, 2), verdict(add.Max <= 5 && del.Max <= 5, add.N > 0 && del.N > 0))
	}
	if ir := r.Idle; ir != nil && len(ir.Hosts) > 0 {
		var worst Summary
		for _, h := range ir.Hosts {
			if s := Summarize(h.IdleCPU); s.N > 0 && (worst.N == 0 || s.Median > worst.Median) {
				worst = s
			}
		}
		p("| plugin idle CPU ≤ 0.3 %% of a core per host, 3-host lab | %s %% (the busiest host) | %s |\n", fmtS(worst, 2), verdict(worst.Median <= 0.3, worst.N > 0))
	}
	weftDNS := false
	for _, d := range r.DNS {
		if d.Server == "weft DNS" {
			weftDNS = true
		}
	}
	if !weftDNS {
		p("| weft's DNS ≥ Docker embedded DNS in q/s; p99 ≤ 1 ms at 8 clients | no weft DNS figures in this run (see the DNS section) | not measured |\n")
	} else {
		for _, clients := range []int{8, 32} {
			var dock, weft *DNSRow
			for i := range r.DNS {
				d := &r.DNS[i]
				if d.Clients != clients {
					continue
				}
				if d.Server == "weft DNS" {
					weft = d
				} else if strings.Contains(d.Server, "overlay") {
					dock = d
				}
			}
			if dock == nil || weft == nil {
				continue
			}
			sw, sd := dnsSummary(weft, "qps"), dnsSummary(dock, "qps")
			p("| weft's DNS q/s ≥ Docker embedded DNS, %d clients | weft %s, Docker %s | %s |\n", clients, fmtS(sw, 0), fmtS(sd, 0), verdict(sw.Median >= sd.Median, sw.N > 0 && sd.N > 0))
			if clients == 8 {
				s99 := dnsSummary(weft, "p99")
				p("| weft's DNS p99 ≤ 1 ms at 8 clients | %s ms | %s |\n", fmtS(s99, 2), verdict(s99.Median <= 1, s99.N > 0))
			}
		}
	}
	vipTargets(b, r)
	p("\n")
}

// repPercentile summarizes, over repetitions, the p-th percentile of each.
func repPercentile(reps []Floats, p float64) Summary {
	var xs []float64
	for _, r := range reps {
		xs = append(xs, percentileOK(r, p))
	}
	return Summarize(xs)
}

func dnsSummary(d *DNSRow, what string) Summary {
	var xs []float64
	for _, r := range d.Reps {
		switch what {
		case "qps":
			xs = append(xs, r.QPS)
		case "p50":
			xs = append(xs, r.P50ms)
		case "p99":
			xs = append(xs, r.P99ms)
		case "failed":
			xs = append(xs, float64(r.Failed))
		}
	}
	return Summarize(xs)
}

var metricNames = map[string]struct {
	name string
	prec int
}{
	MetricTCP1:   {"TCP, 1 stream (Gbit/s)", 2},
	MetricTCP4:   {"TCP, 4 streams (Gbit/s)", 2},
	MetricRTT50:  {"ping RTT p50 (µs)", 0},
	MetricRTT99:  {"ping RTT p99 (µs)", 0},
	MetricRR:     {"TCP request/response (transactions/s)", 0},
	MetricRR99us: {"request/response latency p99 (µs)", 0},
}

func dataTables(b *strings.Builder, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	for _, d := range r.Data {
		u, ov, wf := d.Net(NetUnderlay), d.Net(NetOverlay), d.Net(NetWeft)
		if u == nil || ov == nil || wf == nil {
			continue
		}
		p("## Data plane, %d-byte underlay\n\n", d.UnderlayMTU)
		p("h1 → h2. Interface MTU: underlay %d, overlay %d, weft %d.\n\n", u.MTU, ov.MTU, wf.MTU)
		p("| figure | underlay | Docker overlay | weft | overlay ÷ underlay | weft ÷ underlay | weft ÷ overlay |\n|---|---|---|---|---|---|---|\n")
		for _, m := range DataMetrics {
			mn := metricNames[m]
			p("| %s | %s | %s | %s | %s | %s | %s |\n", mn.name,
				fmtS(Summarize(u.Metrics[m]), mn.prec), fmtS(Summarize(ov.Metrics[m]), mn.prec), fmtS(Summarize(wf.Metrics[m]), mn.prec),
				fmtS(Summarize(Ratios(ov.Metrics[m], u.Metrics[m])), 2),
				fmtS(Summarize(Ratios(wf.Metrics[m], u.Metrics[m])), 2),
				fmtS(Summarize(Ratios(wf.Metrics[m], ov.Metrics[m])), 2))
		}
		p("\n")
	}
}

func controlTable(b *strings.Builder, r *Results) {
	c := r.Control
	if c == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Control plane, %d hosts, 1500-byte underlay\n\n", c.Hosts)
	p("`docker run -d` on h1 until a probe on h2 opens a TCP connection to the new container: %d containers per network and repetition, the networks alternating; p50 and p99 are taken per repetition. ", c.PerRep)
	p("Cut-off: h3 (a container on each network) is cut from the underlay (its bridge port set down) until neither h1 nor h2 has a forwarding entry pointing at it, then restored until a probe on h1 connects to h3's container again.\n\n")
	p("| figure | Docker overlay | weft |\n|---|---|---|\n")
	get := func(net string) *ControlNetData {
		for i := range c.Nets {
			if c.Nets[i].Net == net {
				return &c.Nets[i]
			}
		}
		return &ControlNetData{}
	}
	ov, wf := get(NetOverlay), get(NetWeft)
	p("| docker run → reachable, p50 (ms) | %s | %s |\n", fmtS(repPercentile(ov.RunToReach, 50), 0), fmtS(repPercentile(wf.RunToReach, 50), 0))
	p("| docker run → reachable, p99 (ms) | %s | %s |\n", fmtS(repPercentile(ov.RunToReach, 99), 0), fmtS(repPercentile(wf.RunToReach, 99), 0))
	p("| of which `docker run -d` itself, p50 (ms) | %s | %s |\n", fmtS(repPercentile(ov.RunCLI, 50), 0), fmtS(repPercentile(wf.RunCLI, 50), 0))
	p("| reachable after `docker run -d` returned, p50 (ms) | %s | %s |\n", fmtS(repPercentile(afterCLI(ov), 50), 0), fmtS(repPercentile(afterCLI(wf), 50), 0))
	p("| reachable after `docker run -d` returned, p99 (ms) | %s | %s |\n", fmtS(repPercentile(afterCLI(ov), 99), 0), fmtS(repPercentile(afterCLI(wf), 99), 0))
	p("| cut-off host purged on every other host (s) | %s | %s |\n", fmtS(Summarize(ov.Purge), 1), fmtS(Summarize(wf.Purge), 1))
	p("| returning host reachable again (s) | %s | %s |\n\n", fmtS(Summarize(ov.Return), 1), fmtS(Summarize(wf.Return), 1))
}

// convergence formats a scale result's convergence times in seconds,
// saying how many repetitions did not converge within the timeout.
func convergence(s ScaleResult) string {
	c := Summarize(s.Converge)
	missed := countNaN(s.Converge)
	switch {
	case missed == 0:
		return fmtS(c, 2) + " s"
	case c.N == 0:
		return fmt.Sprintf("not within the timeout in any of %d repetitions", missed)
	}
	return fmt.Sprintf("not within the timeout in %d of %d repetitions; %s s in the others", missed, len(s.Converge), fmtS(c, 2))
}

func countNaN(xs []float64) int {
	n := 0
	for _, x := range xs {
		if math.IsNaN(x) {
			n++
		}
	}
	return n
}

// afterCLI is, per container, how long after "docker run -d" returned the
// container was reachable (negative: before the CLI had returned).
func afterCLI(nd *ControlNetData) []Floats {
	out := make([]Floats, len(nd.RunToReach))
	for r := range nd.RunToReach {
		out[r] = make(Floats, len(nd.RunToReach[r]))
		for i, total := range nd.RunToReach[r] {
			out[r][i] = math.NaN()
			if r < len(nd.RunCLI) && i < len(nd.RunCLI[r]) {
				out[r][i] = total - nd.RunCLI[r][i]
			}
		}
	}
	return out
}

func scaleTable(b *strings.Builder, r *Results) {
	if len(r.Scale) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Scale, simulated mesh\n\n")
	p("Members of weft's mesh in one process over its in-memory transport; endpoint records (~190-byte values) written spread over all members; time until every member holds every record. " +
		"Memory: live heap added per member per 1,000 records after a full GC (records, indexes and queued broadcasts); repetitions in which the heap shrank meanwhile (garbage of the join freed) are left out, n/a when all were. " +
		"Dissemination with the production defaults; failure detection relaxed (probe every 2 s) because all members share two cores. " +
		"Every member and its gossip runs on the same 2 cores, so large sizes measure this machine's CPU as much as the protocol.\n\n")
	p("CPU: what the whole process (all members) used while converging; with two cores the convergence cannot take less than half of it. " +
		"Read per needed: entries the members read (merged, or found already held) per entry they lacked; 1 would be no redundancy.\n\n")
	p("| members | records | converge | CPU (s) | read per needed | heap per member per 1,000 records (KiB) | join (s) |\n|---|---|---|---|---|---|---|\n")
	for _, s := range r.Scale {
		conv := convergence(s)
		// A negative difference means the heap shrank while the records
		// arrived (garbage of the join freed in between): no figure.
		var kib []float64
		for _, h := range s.HeapPerK {
			if h > 0 {
				kib = append(kib, h/1024)
			}
		}
		p("| %d | %d | %s | %s | %s | %s | %.1f |\n", s.Members, s.Entries, conv, fmtS(Summarize(s.CPU), 1), fmtS(Summarize(s.ReadPerNeeded), 2), fmtS(Summarize(kib), 0), s.Join)
	}
	p("\n")
}

func dnsTable(b *strings.Builder, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## DNS\n\n")
	p("From a container on h1: weftbench's load tool, each client with its own UDP socket and one A query in flight, for a container name; answered queries per second and latency.\n\n")
	p("Docker's embedded DNS (127.0.0.11) is asked, on the overlay, for the name of a container on another host (its own names, carried by its gossip). " +
		"weft's DNS is asked directly on the weft network's gateway address (where it listens; a container started with `--dns <gateway>` has Docker's resolver forward weft's names there) for the name of a container on another host. " +
		"Docker's embedded DNS on the weft network is shown when it answers a name at all.\n\n")
	if len(r.DNS) == 0 {
		p("No DNS figures in this run.\n\n")
		return
	}
	p("| server | name | clients | answered q/s | p50 (ms) | p99 (ms) | failed queries per rep |\n|---|---|---|---|---|---|---|\n")
	for i := range r.DNS {
		d := &r.DNS[i]
		p("| %s | %s | %d | %s | %s | %s | %s |\n", d.Server, d.Name, d.Clients,
			fmtS(dnsSummary(d, "qps"), 0), fmtS(dnsSummary(d, "p50"), 2), fmtS(dnsSummary(d, "p99"), 2), fmtS(dnsSummary(d, "failed"), 0))
	}
	p("\n")
}

func method(b *strings.Builder) {
	b.WriteString(`## How it is measured

- **Lab**: ` + "`test/lab`" + ` named ` + "`weftbench`" + ` (bridge ` + "`weftbench0`" + `, underlay 198.18.3.0/24), 3 hosts, each a network namespace with its own containerd and dockerd 20.10, in a swarm, FORWARD policy DROP, weft installed as a managed plugin from ` + "`build/plugin`" + `. One lab per underlay MTU. The IPv6 part has a lab of its own, ` + "`weftbench6`" + ` (198.18.4.0/24): 2 hosts, no swarm, the plugin in local mode, one dual-stack network (` + "`--ipv6`" + `, weft's IPAM).
- **Paths**: underlay = h1's host namespace to h2's; overlay = ` + "`docker network create -d overlay --attachable`" + `; weft = ` + "`docker network create -d weft:latest --scope swarm --attachable`" + `, both with default options (so the overlay keeps MTU 1450 on a 9000 underlay, as it does for users).
- **Throughput**: iperf3 3.12, TCP, 6 s (first second omitted), 1 and 4 streams, received rate. **RTT**: busybox ping every 10 ms, 500 pings. **Request/response**: weftbench's client, one 64-byte request and 64-byte reply at a time over one TCP connection (TCP_NODELAY) for 5 s.
- **Reachability probes** connect over TCP every 20 ms (each try bounded to 20 ms); the probing container's ARP retry timer is set to 10 ms (from the host, by nsenter) and its neighbour cache flushed before each probe, so the figures measure the network's control plane rather than the kernel's 1 s ARP retry, which is the same for both networks.
- Load goes only to the lab's own addresses (198.18.3.0/24 and container addresses inside the lab) and loopback; every loop is bounded in count and time.
- Regenerate the report and chart from ` + "`results.json`" + ` with ` + "`build/weftbench report`" + `.

`)
}

func kernelTable(b *strings.Builder, r *Results) {
	k := r.Kernel
	if k == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Kernel entries, per change, %s remote endpoints\n\n", thousands(k.Entries))
	p("In a network namespace of its own, one VXLAN device holding %s remote endpoints (a static FDB entry and a permanent neighbour entry each, written in %.1f s); "+
		"one endpoint more is added, then removed, %d times each way, the two ways alternating. "+
		"Before: the driver applied every change with `SetRemotes` of the whole table, which reads the device's FDB and neighbour tables back and writes the difference (it stays as the periodic repair). "+
		"After: `SetRemote` and `DeleteRemote` write that endpoint's two entries, read nothing back, and `SetRemote` announces the endpoint to the local containers (one gratuitous ARP). "+
		"Milliseconds per change, median (min–max).\n\n", thousands(k.Entries), k.Fill, len(k.OneAdd))
	p("| change | whole table (before) | one endpoint (after) | before ÷ after |\n|---|---|---|---|\n")
	p("| endpoint added | %s | %s | %s |\n", fmtS(Summarize(k.TableAdd), 2), fmtS(Summarize(k.OneAdd), 2), fmtS(Summarize(Ratios(k.TableAdd, k.OneAdd)), 0))
	p("| endpoint removed | %s | %s | %s |\n\n", fmtS(Summarize(k.TableRemove), 2), fmtS(Summarize(k.OneRemove), 2), fmtS(Summarize(Ratios(k.TableRemove, k.OneRemove)), 0))
}

// thousands formats n with a comma between thousands.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func idleTable(b *strings.Builder, r *Results) {
	ir := r.Idle
	if ir == nil || len(ir.Hosts) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## The plugin's own cost, idle and under churn\n\n")
	p("The plugin's process on each host of the 1500-MTU lab, read from `/proc` (CPU time of every thread, user and system, over %.0f s; resident memory at the end): "+
		"idle, with the data-plane part's networks and containers in place (a weft network and an overlay network, two containers on each) and nothing happening; "+
		"then under churn, a container on the weft network started and removed again and again on every host at once (%s per minute per host). "+
		"CPU in percent of one core, memory in MiB, median (min–max) over the repetitions.\n\n", ir.Window, fmtS(Summarize(ir.ChurnPerMin), 0))
	p("| host | idle CPU %% | idle memory MiB | churn CPU %% | churn memory MiB |\n|---|---|---|---|---|\n")
	for _, h := range ir.Hosts {
		p("| %s | %s | %s | %s | %s |\n", h.Host, fmtS(Summarize(h.IdleCPU), 2), fmtS(Summarize(h.IdleRSS), 1), fmtS(Summarize(h.ChurnCPU), 2), fmtS(Summarize(h.ChurnRSS), 1))
	}
	p("\n")
}
