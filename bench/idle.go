package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// Idle cost: what the plugin's process itself uses on each host of the
// lab, read from /proc (its CPU time, user and system, of every thread;
// its resident memory), over a window:
//
//   - idle: the lab as the data-plane part leaves it (a weft network and
//     an overlay network, two containers on each), nothing happening;
//   - churn: on every host at once, a container on the weft network
//     started and removed again and again (docker run -d, then docker rm
//     -f), for the same window.
//
// CPU is given in percent of one core: CPU seconds over wall seconds.

// IdleResult is the idle part's figures.
type IdleResult struct {
	// Window is the seconds of one measurement.
	Window float64 `json:"window_s"`
	// Hosts holds one row per lab host.
	Hosts []IdleHost `json:"hosts"`
	// ChurnPerMin is, per repetition, the containers started and removed
	// per minute on each host during the churn window (the mean over the
	// hosts).
	ChurnPerMin Floats `json:"churn_per_min"`
}

// IdleHost is one host's figures, one value per repetition.
type IdleHost struct {
	Host string `json:"host"`
	// IdleCPU and ChurnCPU are percent of one core.
	IdleCPU  Floats `json:"idle_cpu_pct"`
	ChurnCPU Floats `json:"churn_cpu_pct"`
	// IdleRSS and ChurnRSS are the process's resident memory at the end of
	// the window, in MiB.
	IdleRSS  Floats `json:"idle_rss_mib"`
	ChurnRSS Floats `json:"churn_rss_mib"`
}

// procSample is one reading of a process's CPU time and memory.
type procSample struct {
	at  time.Time
	cpu time.Duration // user + system, every thread
	rss float64       // MiB
}

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on
// Linux everywhere).
const clockTick = 10 * time.Millisecond

// readProc samples pid.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return s, err
	}
	// The command may hold spaces and parentheses: fields start after the
	// last ')'.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: bad times %q %q", pid, f[11], f[12])
	}
	s.cpu = time.Duration(ut+st) * clockTick
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%f kB", &kb); err == nil {
				s.rss = kb / 1024
			}
		}
	}
	return s, nil
}

// cpuPercent is the share of one core used between two samples.
func cpuPercent(a, b procSample) float64 {
	wall := b.at.Sub(a.at)
	if wall <= 0 {
		return 0
	}
	return 100 * float64(b.cpu-a.cpu) / float64(wall)
}

// PluginCost measures the plugin process of every host of l over window,
// while load runs (nil: idle). It returns, per host in l's order, the CPU
// in percent of one core and the resident memory at the end in MiB.
func PluginCost(ctx context.Context, l *lab.Lab, window time.Duration, load func(ctx context.Context)) (cpu, rss []float64, err error) {
	pids := make([]int, len(l.Hosts))
	before := make([]procSample, len(l.Hosts))
	for i, h := range l.Hosts {
		if pids[i], err = labtest.FindPluginPID(h); err != nil {
			return nil, nil, err
		}
		if before[i], err = readProc(pids[i]); err != nil {
			return nil, nil, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var wg sync.WaitGroup
	if load != nil {
		wg.Add(1)
		go func() { defer wg.Done(); load(wctx) }()
	}
	<-wctx.Done()
	// Sampled at the window's end, before waiting for the load to stop.
	for i, h := range l.Hosts {
		after, err := readProc(pids[i])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: plugin process %d: %w", h.Name, pids[i], err)
		}
		cpu = append(cpu, cpuPercent(before[i], after))
		rss = append(rss, after.rss)
	}
	wg.Wait()
	return cpu, rss, ctx.Err()
}

// Churn starts and removes containers on network on every host of l,
// one at a time per host, until ctx ends, and returns how many cycles each
// host completed.
func Churn(ctx context.Context, l *lab.Lab, network string) []int {
	counts := make([]int, len(l.Hosts))
	var wg sync.WaitGroup
	for i, h := range l.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				name := fmt.Sprintf("churn-%s-%d", h.Name, n)
				// The removal runs to its end even when the window closes.
				if _, err := h.Docker(ctx, "run", "-d", "--name", name, "--network", network, lab.ImageTag, "sleep", "600"); err == nil && ctx.Err() == nil {
					counts[i]++
				}
				_, _ = h.Docker(context.WithoutCancel(ctx), "rm", "-f", name)
			}
		}()
	}
	wg.Wait()
	return counts
}

// idlePart measures the plugin's idle and churn cost in e's lab.
func (e *env) idlePart(ctx context.Context) (*IdleResult, error) {
	o := e.o
	res := &IdleResult{Window: o.IdleWindow.Seconds()}
	for _, h := range e.l.Hosts {
		res.Hosts = append(res.Hosts, IdleHost{Host: h.Name})
	}
	// Let the lab settle after the data-plane part's containers started.
	if err := sleepCtx(ctx, o.IdleSettle); err != nil {
		return res, err
	}
	for rep := range o.Reps {
		o.Logf("idle: repetition %d/%d, %s idle", rep+1, o.Reps, o.IdleWindow)
		cpu, rss, err := PluginCost(ctx, e.l, o.IdleWindow, nil)
		if err != nil {
			return res, err
		}
		for i := range res.Hosts {
			res.Hosts[i].IdleCPU = append(res.Hosts[i].IdleCPU, cpu[i])
			res.Hosts[i].IdleRSS = append(res.Hosts[i].IdleRSS, rss[i])
		}
		o.Logf("idle: repetition %d/%d, %s of churn", rep+1, o.Reps, o.IdleWindow)
		var counts []int
		cpu, rss, err = PluginCost(ctx, e.l, o.IdleWindow, func(ctx context.Context) { counts = Churn(ctx, e.l, weftNet) })
		if err != nil {
			return res, err
		}
		sum := 0
		for i := range res.Hosts {
			res.Hosts[i].ChurnCPU = append(res.Hosts[i].ChurnCPU, cpu[i])
			res.Hosts[i].ChurnRSS = append(res.Hosts[i].ChurnRSS, rss[i])
			sum += counts[i]
		}
		res.ChurnPerMin = append(res.ChurnPerMin, float64(sum)/float64(len(counts))/o.IdleWindow.Minutes())
	}
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
