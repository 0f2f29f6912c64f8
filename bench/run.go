package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Parts of a run, for Options.Parts.
const (
	PartScale   = "scale"
	PartData    = "data"
	PartControl = "control"
	PartDNS     = "dns"
	PartKernel  = "kernel"
	PartIdle    = "idle"
	PartVIP     = "vip"
	// PartIPv6 is in ipv6.go.
)

// Options configure a run. DefaultOptions and SmokeOptions give complete
// sets.
type Options struct {
	// Parts to run (PartScale, PartData, PartControl, PartDNS, PartKernel,
	// PartIdle, PartVIP, PartIPv6).
	Parts []string
	// Reps is the number of repetitions of every figure (at least 3 for a
	// report worth reading).
	Reps int
	// DataReps, if larger, is the number of repetitions of the data-plane
	// figures, the noisiest on a shared machine.
	DataReps int
	// Smoke marks a short run; its report says so.
	Smoke bool
	// MTUs are the underlay MTUs of the data-plane labs; the control plane
	// and DNS run in the first lab only.
	MTUs []int
	// IperfTime, RRTime and DNSTime are the lengths of one iperf3 test,
	// one request/response test and one DNS load test; PingCount is the
	// pings per RTT figure (one every 10 ms).
	IperfTime time.Duration
	RRTime    time.Duration
	DNSTime   time.Duration
	PingCount int
	// Containers is how many containers per network and repetition the
	// run-to-reachable figure starts.
	Containers int
	// DNSClients are the concurrent DNS clients to load with.
	DNSClients []int
	// WeftDNS, when set, adds weft's DNS to the DNS part: "gateway" for
	// the weft network's gateway address (where weft's DNS listens), or an
	// address. Empty leaves weft's DNS out.
	WeftDNS string
	// ScaleMembers and ScaleEntries are the simulated mesh sizes;
	// ScaleTimeout bounds one convergence.
	ScaleMembers []int
	ScaleEntries []int
	ScaleTimeout time.Duration
	// KernelEntries is the remote endpoints on the kernel part's device;
	// KernelReps how many times one of them changes each way.
	KernelEntries int
	KernelReps    int
	// IdleWindow is the length of one idle and one churn measurement;
	// IdleSettle how long the lab rests before the first.
	IdleWindow time.Duration
	IdleSettle time.Duration
	// PluginDir is the managed plugin directory (make plugin-dir).
	PluginDir string
	// Self is the static weftbench binary, mounted into containers.
	Self string
	// OutDir receives RESULTS.md, results.json and results.png.
	OutDir string
	// KeepLab leaves the last lab up at the end.
	KeepLab bool
	// Merge keeps, from the results.json already in OutDir, the parts this
	// run does not measure, so one part can be measured again alone.
	Merge bool
	// Logf receives progress.
	Logf func(format string, args ...any)

	mu    sync.Mutex
	notes map[string][]string // by part
}

// DefaultOptions is the full run of make bench.
func DefaultOptions() *Options {
	return &Options{
		Parts:        []string{PartScale, PartData, PartControl, PartDNS, PartKernel, PartIdle, PartVIP, PartIPv6},
		Reps:         3,
		DataReps:     5,
		MTUs:         []int{1500, 9000},
		IperfTime:    6 * time.Second,
		RRTime:       5 * time.Second,
		DNSTime:      5 * time.Second,
		PingCount:    500,
		Containers:   20,
		DNSClients:   []int{1, 8, 32},
		WeftDNS:      "gateway",
		ScaleMembers: []int{10, 50, 200},
		ScaleEntries: []int{1000, 10000},
		ScaleTimeout: 90 * time.Second,
		OutDir:       "bench",

		KernelEntries: 10_000,
		KernelReps:    30,

		IdleWindow: time.Minute,
		IdleSettle: 30 * time.Second,
	}
}

// SmokeOptions is a short run that exercises every part once.
func SmokeOptions() *Options {
	o := DefaultOptions()
	o.Smoke = true
	o.Reps = 1
	o.DataReps = 1
	o.MTUs = []int{1500}
	o.IperfTime = 2 * time.Second
	o.RRTime = time.Second
	o.DNSTime = time.Second
	o.PingCount = 50
	o.Containers = 3
	o.DNSClients = []int{1, 8}
	o.ScaleMembers = []int{10}
	o.ScaleEntries = []int{1000}
	o.ScaleTimeout = time.Minute
	o.KernelReps = 5
	o.IdleWindow = 10 * time.Second
	o.IdleSettle = 5 * time.Second
	return o
}

// note records a remark on a part for the report and logs it.
func (o *Options) note(part, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	o.Logf("NOTE: %s: %s", part, s)
	o.mu.Lock()
	if o.notes == nil {
		o.notes = map[string][]string{}
	}
	o.notes[part] = append(o.notes[part], s)
	o.mu.Unlock()
}

func (o *Options) has(part string) bool {
	for _, p := range o.Parts {
		if p == part {
			return true
		}
	}
	return false
}

// Run measures what o asks, and writes the report, results.json and the
// chart to o.OutDir. Figures that fail are left out of the report with a
// note; Run fails only when a whole part cannot run.
func Run(ctx context.Context, o *Options) (*Results, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	start := time.Now()
	res := &Results{Date: start.UTC(), Machine: machine(), Commit: commit(), Smoke: o.Smoke, Reps: o.Reps, DataReps: max(o.Reps, o.DataReps)}
	var errs []error
	stopLoad := sampleLoad(res, &o.mu)
	defer stopLoad()
	var prev *Results
	if o.Merge {
		p, err := LoadResults(filepath.Join(o.OutDir, "results.json"))
		if err != nil {
			return res, fmt.Errorf("merge: %w", err)
		}
		prev = p
	}
	save := func() error {
		res.Seconds = time.Since(start).Seconds()
		res.OwnSeconds = res.Seconds
		// Under o.mu: the load sampler appends to res.Load.
		o.mu.Lock()
		defer o.mu.Unlock()
		res.PartNotes = map[string][]string{}
		for part, ns := range o.notes {
			res.PartNotes[part] = slices.Clone(ns)
		}
		out := res
		if prev != nil {
			out = merged(res, prev, o)
		}
		return WriteOutputs(out, o.OutDir)
	}

	labParts := o.has(PartData) || o.has(PartControl) || o.has(PartDNS) || o.has(PartIdle) || o.has(PartVIP)
	if labParts {
		if o.PluginDir == "" || o.Self == "" {
			return res, errors.New("the lab parts need the plugin directory and the static weftbench binary")
		}
		for i, mtu := range o.MTUs {
			first := i == 0
			if !first && !o.has(PartData) {
				break
			}
			err := func() error {
				e, err := up(ctx, o, mtu)
				keep := o.KeepLab && (i == len(o.MTUs)-1 || !o.has(PartData))
				defer e.down(context.WithoutCancel(ctx), keep)
				if err != nil {
					return err
				}
				// The data plane's containers are the other parts' probes.
				dr, err := e.dataPlane(ctx, o.has(PartData))
				if err != nil {
					return fmt.Errorf("data plane (MTU %d): %w", mtu, err)
				}
				if o.has(PartData) {
					res.Data = append(res.Data, dr)
				}
				if first && o.has(PartControl) {
					cr, err := e.controlPlane(ctx)
					res.Control = cr
					if err != nil {
						errs = append(errs, fmt.Errorf("control plane: %w", err))
					}
				}
				if first && o.has(PartDNS) {
					rows, err := e.dns(ctx)
					res.DNS = rows
					if err != nil {
						errs = append(errs, fmt.Errorf("dns: %w", err))
					}
				}
				if first && o.has(PartIdle) {
					ir, err := e.idlePart(ctx)
					res.Idle = ir
					if err != nil {
						errs = append(errs, fmt.Errorf("idle: %w", err))
					}
				}
				if first && o.has(PartVIP) {
					vr, err := e.vip(ctx)
					res.VIP = vr
					if err != nil {
						errs = append(errs, fmt.Errorf("vip: %w", err))
					}
				}
				return nil
			}()
			if err != nil {
				errs = append(errs, err)
			}
			if err := save(); err != nil {
				errs = append(errs, err)
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	if o.has(PartIPv6) && ctx.Err() == nil {
		if o.PluginDir == "" || o.Self == "" {
			return res, errors.New("the IPv6 part needs the plugin directory and the static weftbench binary")
		}
		r6, err := ipv6Part(ctx, o)
		res.IPv6 = r6
		if err != nil {
			errs = append(errs, fmt.Errorf("ipv6: %w", err))
		}
		if err := save(); err != nil {
			errs = append(errs, err)
		}
	}
	if o.has(PartKernel) && ctx.Err() == nil {
		kr, err := kernelPart(ctx, o)
		res.Kernel = kr
		if err != nil {
			errs = append(errs, fmt.Errorf("kernel: %w", err))
		}
	}
	// Scale last: it loads the machine's CPU and memory in this process.
	if o.has(PartScale) && ctx.Err() == nil {
		sr, err := scale(ctx, o)
		res.Scale = sr
		if err != nil {
			errs = append(errs, fmt.Errorf("scale: %w", err))
		}
	}
	if err := save(); err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// sampleLoad records the load average in r.Load (under mu) every 30 s
// until the returned function is called.
func sampleLoad(r *Results, mu *sync.Mutex) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			if b, err := os.ReadFile("/proc/loadavg"); err == nil {
				var l float64
				if _, err := fmt.Sscanf(string(b), "%f", &l); err == nil {
					mu.Lock()
					r.Load = append(r.Load, l)
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); <-done }
}

// merged returns r with the parts it did not measure taken from prev,
// each with its notes and the run that measured it (prev's own origin for
// it, if prev was itself merged).
func merged(r, prev *Results, o *Options) *Results {
	m := *r
	took := prev.OwnSeconds
	if took == 0 { // results from before OwnSeconds
		took = prev.Seconds
	}
	from := fmt.Sprintf("the run of %s (commit %s, %.0f min)", prev.Date.Format("2006-01-02 15:04 UTC"), prev.Commit, took/60)
	m.Origins = map[string]string{}
	m.PartNotes = maps.Clone(r.PartNotes)
	if m.PartNotes == nil {
		m.PartNotes = map[string][]string{}
	}
	take := func(part string) {
		m.Origins[part] = from
		if o, ok := prev.Origins[part]; ok {
			m.Origins[part] = o
		}
		if ns := prev.PartNotes[part]; len(ns) > 0 {
			m.PartNotes[part] = ns
		}
	}
	if !o.has(PartData) && len(prev.Data) > 0 {
		m.Data, m.DataReps = prev.Data, prev.DataReps
		take(PartData)
	}
	if !o.has(PartControl) && prev.Control != nil {
		m.Control = prev.Control
		take(PartControl)
	}
	if !o.has(PartScale) && len(prev.Scale) > 0 {
		m.Scale = prev.Scale
		take(PartScale)
	}
	if !o.has(PartDNS) && len(prev.DNS) > 0 {
		m.DNS = prev.DNS
		take(PartDNS)
	}
	if !o.has(PartKernel) && prev.Kernel != nil {
		m.Kernel = prev.Kernel
		take(PartKernel)
	}
	if !o.has(PartIdle) && prev.Idle != nil {
		m.Idle = prev.Idle
		take(PartIdle)
	}
	if !o.has(PartVIP) && prev.VIP != nil {
		m.VIP = prev.VIP
		take(PartVIP)
	}
	if !o.has(PartIPv6) && prev.IPv6 != nil {
		m.IPv6 = prev.IPv6
		take(PartIPv6)
	}
	if len(m.Origins) > 0 {
		// Where the merged parts were measured: prev's machine, and the
		// machines prev's own merged parts came from.
		m.Notes = slices.Clone(r.Notes)
		machines := []string{}
		if prev.Machine != "" && prev.Machine != r.Machine {
			machines = append(machines, prev.Machine)
		}
		for _, n := range prev.Notes {
			if rest, ok := strings.CutPrefix(n, machineNote); ok {
				for _, mc := range strings.Split(strings.TrimSuffix(rest, "."), "; ") {
					if mc != r.Machine && !slices.Contains(machines, mc) {
						machines = append(machines, mc)
					}
				}
			}
		}
		if len(machines) > 0 {
			m.Notes = append(m.Notes, machineNote+strings.Join(machines, "; ")+".")
		}
	}
	if len(m.Origins) > 0 {
		m.Reps = min(m.Reps, prev.Reps)
		m.Seconds += prev.Seconds
		m.Load = append(append(Floats(nil), prev.Load...), r.Load...)
	}
	return &m
}

// machineNote heads the note that names the machines merged parts were
// measured on.
const machineNote = "The machine named above is this run's; the parts merged in were measured on "

// machine describes the machine the run is on.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	docker := ""
	if out, err := exec.Command("dockerd", "--version").Output(); err == nil {
		docker = ", " + strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%d cores (%s)%s%s%s, %s", runtime.NumCPU(), cpu, mem, kernel, docker, runtime.Version())
}

// commit is the source tree's commit, "-dirty" if it has changes.
func commit() string {
	if v := os.Getenv("WEFT_BENCH_COMMIT"); v != "" {
		return v
	}
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	// Changes to the outputs of an earlier run (bench/results.*,
	// RESULTS.md) do not make the code measured differ from the commit.
	st, err := exec.Command("git", "status", "--porcelain", "--", ".",
		":(exclude)bench/results.json", ":(exclude)bench/results.png", ":(exclude)bench/RESULTS.md").Output()
	if err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "-dirty"
	}
	return c
}

// WriteOutputs writes results.json, RESULTS.md and results.png to dir;
// RESULTS.md includes dir/ANALYSIS.md when it exists.
func WriteOutputs(r *Results, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := r.Save(filepath.Join(dir, "results.json")); err != nil {
		return err
	}
	// ANALYSIS.md, if present, is the engineers' reading of the figures,
	// kept across regenerations.
	analysis, _ := os.ReadFile(filepath.Join(dir, "ANALYSIS.md"))
	if err := os.WriteFile(filepath.Join(dir, "RESULTS.md"), []byte(Report(r, string(analysis))), 0o644); err != nil {
		return err
	}
	return WriteChart(r, filepath.Join(dir, "results.png"))
}
