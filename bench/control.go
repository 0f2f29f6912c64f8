package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// Control plane, in the 1500-MTU lab after the data plane (whose
// containers serve as probes: srv-<net> on h2, cli-<net> on h1):
//
//   - run to reachable: a probe on h2 starts trying to connect, every
//     20 ms, to an address a new container will get; then "docker run" of
//     that container on h1; the time from invoking docker run to the
//     probe's first connection. The two networks alternate.
//   - cut-off host: h3, with a container on each network, is cut from the
//     underlay; the time until neither h1 nor h2 has a forwarding (FDB)
//     entry pointing at h3 (weft's in the host namespace, the overlay's in
//     its network namespace); then its link is restored and the time until
//     a probe on h1 connects to h3's container again.

// reacher is a running Reach probe.
type reacher struct {
	cmd  *exec.Cmd
	sc   *bufio.Scanner
	done chan struct{}
	at   time.Time
	err  error
}

// startReach starts a Reach probe in ctr on h towards addr and waits until
// it is trying.
func startReach(ctx context.Context, h *lab.Host, ctr, addr string, timeout time.Duration) (*reacher, error) {
	cmd := h.DockerCmd(ctx, "exec", ctr, toolMount, "reach", "-addr", addr, "-interval", "20ms", "-timeout", timeout.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &reacher{cmd: cmd, sc: bufio.NewScanner(out), done: make(chan struct{})}
	if !r.sc.Scan() || r.sc.Text() != "ready" {
		_ = cmd.Wait()
		return nil, fmt.Errorf("reach probe in %s on %s did not start: %s", ctr, h.Name, strings.TrimSpace(stderr.String()))
	}
	go func() {
		defer close(r.done)
		for r.sc.Scan() {
			if v, ok := strings.CutPrefix(r.sc.Text(), "reached "); ok {
				if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
					r.at = time.Unix(0, ns)
				}
			}
		}
		werr := cmd.Wait()
		if r.at.IsZero() {
			r.err = fmt.Errorf("probe in %s on %s towards %s: %v: %s", ctr, h.Name, addr, werr, strings.TrimSpace(stderr.String()))
		}
	}()
	return r, nil
}

// wait returns when the probe connected.
func (r *reacher) wait() (time.Time, error) {
	<-r.done
	return r.at, r.err
}

// nthAddr returns the n-th address of subnet.
func nthAddr(subnet string, n int) string {
	p := netip.MustParsePrefix(subnet)
	a := p.Masked().Addr().As4()
	a[3] += byte(n)
	return netip.AddrFrom4(a).String()
}

// controlPlane measures run-to-reachable and the cut-off host.
func (e *env) controlPlane(ctx context.Context) (*ControlResult, error) {
	o := e.o
	res := &ControlResult{Hosts: len(e.l.Hosts), PerRep: o.Containers}
	nets := []string{NetOverlay, NetWeft}
	for _, n := range nets {
		res.Nets = append(res.Nets, ControlNetData{Net: n})
	}
	h1, h2 := e.h(1), e.h(2)
	probePid := map[string]int{}
	for _, n := range nets {
		pid, err := ctrPid(ctx, h2, "srv-"+n)
		if err != nil {
			return res, err
		}
		probePid[n] = pid
	}
	if 10+o.Reps*o.Containers > 250 {
		return res, fmt.Errorf("%d repetitions of %d containers do not fit the /24 subnets", o.Reps, o.Containers)
	}

	for rep := range o.Reps {
		var started []string
		for i := range nets {
			res.Nets[i].RunToReach = append(res.Nets[i].RunToReach, nil)
			res.Nets[i].RunCLI = append(res.Nets[i].RunCLI, nil)
		}
		for c := range o.Containers {
			for k := range nets {
				i := (k + c) % len(nets)
				n := nets[i]
				dn := netOf(n)
				name := fmt.Sprintf("cp-%s-%d-%d", n, rep, c)
				ip := nthAddr(map[string]string{NetOverlay: overlaySubnet, NetWeft: weftSubnet}[n], 10+rep*o.Containers+c)
				total, cli, err := e.runToReach(ctx, h1, h2, probePid[n], "srv-"+n, name, dn, ip)
				started = append(started, name)
				if err != nil {
					o.note(PartControl, "run to reachable, %s, rep %d container %d: %v", n, rep+1, c+1, err)
					total, cli = math.NaN(), math.NaN()
				}
				nd := &res.Nets[i]
				nd.RunToReach[rep] = append(nd.RunToReach[rep], total)
				nd.RunCLI[rep] = append(nd.RunCLI[rep], cli)
			}
		}
		for i := range nets {
			rr := res.Nets[i].RunToReach[rep]
			o.Logf("run to reachable rep %d/%d %s: p50 %.0f ms p99 %.0f ms", rep+1, o.Reps, nets[i], Percentile(rr, 50), Percentile(rr, 99))
		}
		rmCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		if _, err := h1.Docker(rmCtx, append([]string{"rm", "-f"}, started...)...); err != nil {
			o.note(PartControl, "remove run-to-reachable containers: %v", err)
		}
		cancel()
	}

	if err := e.cutOff(ctx, res); err != nil {
		return res, err
	}
	return res, nil
}

// runToReach starts name on h1 at ip and returns the milliseconds until the
// probe in probe on h2 connected to it, and how long docker run took.
func (e *env) runToReach(ctx context.Context, h1, h2 *lab.Host, probePid int, probe, name, network, ip string) (total, cli float64, err error) {
	if err := flushNeigh(ctx, probePid); err != nil {
		return 0, 0, err
	}
	r, err := startReach(ctx, h2, probe, ip+":"+rrPort, 60*time.Second)
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	runErr := e.run(ctx, h1, name, network, ip, toolMount, "rrserver", "-l", ":"+rrPort)
	cliDone := time.Since(t0)
	if runErr != nil {
		_ = r.cmd.Process.Kill()
		_, _ = r.wait()
		return 0, 0, runErr
	}
	at, err := r.wait()
	if err != nil {
		return 0, 0, err
	}
	return ms(at.Sub(t0)), ms(cliDone), nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// fdbCount counts, on h, the forwarding entries of net that point at vtep.
func (e *env) fdbCount(ctx context.Context, h *lab.Host, net, vtep string) (int, error) {
	var out string
	var err error
	if net == NetWeft {
		out, err = h.Exec(ctx, "bridge", "fdb", "show")
	} else {
		var ns string
		if ns, err = e.overlayNetns(h); err != nil {
			return 0, err
		}
		var b []byte
		b, err = exec.CommandContext(ctx, "nsenter", "--net="+ns, "bridge", "fdb", "show").Output()
		out = string(b)
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "dst "+vtep+" ") {
			continue
		}
		if net == NetWeft && !strings.Contains(line, " dev weft") {
			continue
		}
		n++
	}
	return n, nil
}

// cutOff cuts h3 from the underlay o.Reps times.
func (e *env) cutOff(ctx context.Context, res *ControlResult) error {
	o := e.o
	h1, h3 := e.h(1), e.h(3)
	vtep := h3.Addr().String()
	nets := []string{NetOverlay, NetWeft}
	target := map[string]string{}
	cliPid := map[string]int{}
	for _, n := range nets {
		name := "cut-" + n
		if err := e.run(ctx, h3, name, netOf(n), "", toolMount, "rrserver", "-l", ":"+rrPort); err != nil {
			return err
		}
		ip, err := h3.ContainerIP(ctx, name, netOf(n))
		if err != nil {
			return err
		}
		target[n] = ip + ":" + rrPort
		if cliPid[n], err = ctrPid(ctx, h1, "cli-"+n); err != nil {
			return err
		}
	}
	for rep := range o.Reps {
		// Start from a steady state: h3's containers reachable from h1,
		// and its entries present on h1 and h2.
		for _, n := range nets {
			r, err := startReach(ctx, h1, "cli-"+n, target[n], 120*time.Second)
			if err != nil {
				return err
			}
			if _, err := r.wait(); err != nil {
				return fmt.Errorf("before cut %d: %w", rep+1, err)
			}
			for _, h := range e.l.Hosts[:2] {
				err := lab.WaitFor(ctx, 60*time.Second, 200*time.Millisecond, func() error {
					c, err := e.fdbCount(ctx, h, n, vtep)
					if err == nil && c == 0 {
						err = fmt.Errorf("no %s FDB entry for %s on %s", n, vtep, h.Name)
					}
					return err
				})
				if err != nil {
					return fmt.Errorf("before cut %d: %w", rep+1, err)
				}
			}
		}

		o.Logf("cut-off rep %d/%d: cutting %s", rep+1, o.Reps, h3.Name)
		if err := h3.CutUnderlay(ctx); err != nil {
			return err
		}
		t0 := time.Now()
		purged := map[string]float64{}
		pollCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
		for len(purged) < len(nets) && pollCtx.Err() == nil {
			for _, n := range nets {
				if _, ok := purged[n]; ok {
					continue
				}
				left := 0
				for _, h := range e.l.Hosts[:2] {
					c, err := e.fdbCount(pollCtx, h, n, vtep)
					if err != nil {
						left++ // try again
						continue
					}
					left += c
				}
				if left == 0 {
					purged[n] = time.Since(t0).Seconds()
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		for i, n := range nets {
			v, ok := purged[n]
			if !ok {
				v = math.NaN()
				o.note(PartControl, "cut-off rep %d: %s entries for %s not purged within 90 s", rep+1, n, vtep)
			}
			res.Nets[i].Purge = append(res.Nets[i].Purge, v)
		}

		// Restore, and time until h1 reaches h3's containers again.
		probes := map[string]*reacher{}
		var perr error
		for _, n := range nets {
			if err := flushNeigh(ctx, cliPid[n]); err != nil {
				perr = errors.Join(perr, err)
			}
			r, err := startReach(ctx, h1, "cli-"+n, target[n], 150*time.Second)
			if err != nil {
				perr = errors.Join(perr, err)
				continue
			}
			probes[n] = r
		}
		if err := h3.RestoreUnderlay(ctx); err != nil {
			return errors.Join(err, perr)
		}
		t1 := time.Now()
		if perr != nil {
			return perr
		}
		var wg sync.WaitGroup
		back := make([]float64, len(nets))
		for i, n := range nets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				at, err := probes[n].wait()
				if err != nil {
					o.note(PartControl, "cut-off rep %d: %s: %v", rep+1, n, err)
					back[i] = math.NaN()
					return
				}
				back[i] = at.Sub(t1).Seconds()
			}()
		}
		wg.Wait()
		for i, n := range nets {
			res.Nets[i].Return = append(res.Nets[i].Return, back[i])
			o.Logf("cut-off rep %d/%d %s: purged after %.1f s, reachable %.1f s after restore", rep+1, o.Reps, n, res.Nets[i].Purge[rep], back[i])
		}
		// Let swarm see h3 again before the next cut.
		if err := e.l.WaitSwarmReady(ctx, 2*time.Minute); err != nil {
			o.note(PartControl, "swarm after cut %d: %v", rep+1, err)
		}
	}
	return nil
}
