package soak

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// settings are the soak's, from the environment (`make soak` sets them
// from SOAK_DURATION, SOAK_SEED, SOAK_OPS).
type settings struct {
	duration time.Duration
	seed     uint64
	kinds    []Kind
	ops      string // as given, for the replay line
	report   string // the directory the run's report directory goes in
}

func readSettings(getenv func(string) string) (settings, error) {
	s := settings{duration: 10 * time.Minute, ops: getenv("WEFT_SOAK_OPS"), report: getenv("WEFT_SOAK_REPORT")}
	if v := getenv("WEFT_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return s, fmt.Errorf("WEFT_SOAK_DURATION=%q: want a positive duration such as 15m", v)
		}
		s.duration = d
	}
	if v := getenv("WEFT_SOAK_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("WEFT_SOAK_SEED=%q: want an unsigned decimal number", v)
		}
		s.seed = seed
	} else {
		var b [8]byte
		_, _ = crand.Read(b[:])
		s.seed = binary.LittleEndian.Uint64(b[:]) >> 1
	}
	var err error
	if s.kinds, err = ParseKinds(s.ops); err != nil {
		return s, fmt.Errorf("WEFT_SOAK_OPS: %w", err)
	}
	if s.ops == "" {
		s.ops = "all"
	}
	if s.report == "" {
		s.report = filepath.Join(os.TempDir(), "weft-soak")
	}
	return s, nil
}

func TestSettings(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	s, err := readSettings(env("WEFT_SOAK_DURATION", "3m", "WEFT_SOAK_SEED", "12345", "WEFT_SOAK_OPS", "ci"))
	if err != nil || s.duration != 3*time.Minute || s.seed != 12345 || !slices.Equal(s.kinds, CIKinds) {
		t.Fatalf("%+v, %v", s, err)
	}
	for _, bad := range [][]string{{"WEFT_SOAK_DURATION", "soon"}, {"WEFT_SOAK_SEED", "-1"}, {"WEFT_SOAK_OPS", "ctr-fly"}} {
		if _, err := readSettings(env(bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := labConfig(env("WEFT_SOAK_LAB", "other")); err == nil {
		t.Error("a lab of another name without a subnet accepted")
	}
	cfg, err := labConfig(env("WEFT_SOAK_LAB", "other", "WEFT_SOAK_SUBNET", "198.18.63.254/24"))
	if err != nil || cfg.Bridge != "other0" || cfg.Underlay.String() != "198.18.63.254/24" {
		t.Fatalf("%+v, %v", cfg, err)
	}
}

// settleWithin bounds how long the lab may take to settle after an
// operation: Docker's own part (swarm placing tasks, which can sit in
// Preparing for 30 s on two cores) and weft's.
const settleWithin = 3 * time.Minute

// TestSoak runs random operations on the lab for the set duration,
// checking after each, once it settled, every invariant (see README,
// Soak). On a violation it stops, writes a report directory and prints
// the seed.
func TestSoak(t *testing.T) {
	l := theLab
	if l == nil {
		t.Skip("needs the soak's lab (root, WEFT_E2E=1 and WEFT_SOAK=1: `make soak`)")
	}
	s, err := readSettings(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl) < s.duration+10*time.Minute {
		t.Fatalf("go test's -timeout leaves %s, too little for a %s soak and its setup: raise it", time.Until(dl).Round(time.Second), s.duration)
	}
	r, err := newRun(l, s)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	replay := fmt.Sprintf("make soak SOAK_SEED=%d SOAK_DURATION=%s SOAK_OPS=%s", s.seed, s.duration, s.ops)
	r.logf("soak: seed %d, %s, operations %s; replay: %s; report in %s", s.seed, s.duration, s.ops, replay, r.dir)
	phase := "during setup"
	fail := func(op *Op, err error) {
		t.Helper()
		where := phase
		if op != nil {
			where = "at " + op.String()
		}
		msg := fmt.Sprintf("VIOLATION %s, %s into the soak: %v", where, time.Since(r.start).Round(time.Second), err)
		r.logf("%s", msg)
		r.writeReport(msg)
		t.Fatalf("%s\nseed %d (replay: %s); report in %s", msg, s.seed, replay, r.dir)
	}

	ctx := context.Background()
	// The base network and the pinger pair: h1 pings a container on h2
	// every 10 ms all soak long. No fault that cuts flows touches h1 or h2.
	mgr := l.Manager()
	if _, err := mgr.Docker(ctx, "network", "create", "-d", pluginName, "--scope", "swarm", "--attachable", "--subnet", r.model.Nets[0].Subnet, BaseNet); err != nil {
		fail(nil, err)
	}
	target, err := labtest.Start(ctx, l.Hosts[1], "sk-target", BaseNet)
	if err != nil {
		fail(nil, err)
	}
	r.pinger = labtest.StartPinger(t, l.Hosts[0], pingerName, BaseNet, target)
	if _, _, _, err := r.settle(ctx); err != nil {
		fail(nil, err)
	}
	if r.plugins, err = newPluginWatch(l); err != nil {
		fail(nil, err)
	}
	r.start = time.Now()

	sched := NewScheduler(s.seed, s.kinds, DefaultLimits)
	for time.Since(r.start) < s.duration {
		op := sched.Next(r.model)
		r.logf("op %s", op)
		// A plugin restarted, down or with a damaged state directory
		// takes nothing from any kernel: from the operation's start until
		// settled no host deletes an FDB or neighbour entry that is there
		// again once settled (one whose endpoint went meanwhile, a
		// task swarm moved, is no blip).
		var deletes func() []string
		if slices.Contains(keepEntries, op.Kind) {
			deletes = labtest.WatchDeletes(t, l.Hosts)
		}
		began := time.Now()
		restarted, purged, err := do(ctx, l, r.model, op)
		took := time.Since(began)
		r.model.Apply(op)
		if err != nil {
			fail(&op, err)
		}
		if restarted != nil {
			if err := r.plugins.expect(restarted); err != nil {
				fail(&op, err)
			}
		}
		settled, weft, waited, err := r.settle(ctx)
		if err != nil {
			fail(&op, fmt.Errorf("not settled within %s: %w", settleWithin, err))
		}
		r.done = append(r.done, result{op, took, settled, weft, purged})
		if deletes != nil {
			if d := blips(deletes(), labtest.Entries(t, l.Hosts)); len(d) > 0 {
				err := fmt.Errorf("kernel entries deleted and written again across the %s: %s", op.Kind, strings.Join(d, "; "))
				if op.Kind != StateDamage {
					fail(&op, err)
				}
				// weft promises no more than Check and connectivity across
				// a lost state directory (the pinger and the samples
				// hold it to that): a blip there is a finding, not a
				// violation.
				r.findings = append(r.findings, op.String()+": "+err.Error())
				r.logf("  FINDING: %v", err)
			}
		}
		if err := r.check(ctx); err != nil {
			fail(&op, err)
		}
		if purged > 0 {
			r.logf("  partition: each side forgot the other %s after it began", purged.Round(100*time.Millisecond))
		}
		r.logf("  done in %s, settled %s after (weft %s of it)", took.Round(100*time.Millisecond), settled.Round(100*time.Millisecond), weft.Round(100*time.Millisecond))
		if weft > slowWeft && waited != nil {
			r.logf("  weft's part waited last on: %s", firstLine(waited))
		}
	}
	elapsed := time.Since(r.start)
	phase = "at the end"

	// The end: everything the soak made goes, and nothing of weft's stays.
	r.logf("soak: %d operations in %s; removing what it made", len(r.done), elapsed.Round(time.Second))
	res := r.pinger.Stop(t)
	r.logf("FIGURE soak: pinger %s: %s", r.pinger, res)
	if len(res.Lost) > 0 || res.Dups > 0 {
		fail(nil, fmt.Errorf("pinger %s: %s; lost seq %v", r.pinger, res, res.Lost[:min(len(res.Lost), 20)]))
	}
	if err := r.teardown(ctx); err != nil {
		fail(nil, fmt.Errorf("after removing everything: %w", err))
	}
	r.summary(elapsed)
}

// keepEntries are the kinds across which no host may delete a kernel
// entry: the plugin's process goes and comes back, nothing else changes.
var keepEntries = []Kind{PluginRestart, PluginKill, PluginDown, StateDamage}

// deletedLine reads a line of labtest.WatchDeletes.
var deletedLine = regexp.MustCompile(`^(\S+): deleted (fdb (\S+) dst (\S+)|neighbour (\S+) lladdr \S+) dev (\S+)$`)

// blips returns the deletions (labtest.WatchDeletes) of entries that are
// there again in after (labtest.Entries), and any line that is no
// deletion (a watch that failed).
func blips(deleted, after []string) []string {
	have := map[string]bool{}
	for _, e := range after {
		// "h1 weft300 fdb MAC VTEP" or "h1 weft300 neigh IP MAC".
		f := strings.Fields(e)
		if len(f) == 5 && f[2] == "fdb" {
			have[f[0]+" "+f[1]+" fdb "+f[3]+" "+f[4]] = true
		} else if len(f) == 5 {
			have[f[0]+" "+f[1]+" neigh "+f[3]] = true
		}
	}
	var out []string
	for _, d := range deleted {
		m := deletedLine.FindStringSubmatch(d)
		switch {
		case m == nil:
			out = append(out, d)
		case m[3] != "" && have[m[1]+" "+m[6]+" fdb "+m[3]+" "+m[4]],
			m[5] != "" && have[m[1]+" "+m[6]+" neigh "+m[5]]:
			out = append(out, d)
		}
	}
	return out
}

// pingerName is the pinger's container, on h1.
const pingerName = "sk-pinger"

// run is one soak's state.
type run struct {
	l       *lab.Lab
	s       settings
	dir     string
	log     *os.File
	model   *Model
	rng     *rand.Rand // samples for the checks, apart from the scheduler's
	pinger  *labtest.Pinger
	plugins *pluginWatch
	start   time.Time
	done    []result
	// findings are what broke no promise of weft's but should not happen.
	findings []string
}

// result is one operation's figures.
type result struct {
	op Op
	// took: the operation itself; settled: from its end until the lab
	// was settled; weft: of that, from when the engines were as the
	// model says.
	took, settled, weft time.Duration
	// purged: a partition's sides forgot each other this long after it
	// began.
	purged time.Duration
}

func newRun(l *lab.Lab, s settings) (*run, error) {
	dir := filepath.Join(s.report, fmt.Sprintf("%s-seed%d", time.Now().UTC().Format("20060102-150405"), s.seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, "ops.log"))
	if err != nil {
		return nil, err
	}
	return &run{l: l, s: s, dir: dir, log: f, model: NewModel(), rng: rand.New(rand.NewPCG(s.seed, 1)), start: time.Now()}, nil
}

func (r *run) close() { _ = r.log.Close() }

// logf writes a line to the operation log and to the test's output.
func (r *run) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	fmt.Fprintf(r.log, "%s %s\n", time.Now().UTC().Format("15:04:05.000"), line)
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), line)
}

// slowWeft is the part of a settle past which the log says what weft was
// still found wrong on.
const slowWeft = 3 * time.Second

// settle waits until the lab is as the model says and weft agrees with
// the engines (labtest.Check on every host). It returns how long that
// took, how long weft took of it (from when the engines first were as the
// model says), and what Check found wrong last while weft took it.
func (r *run) settle(ctx context.Context) (all, weft time.Duration, waited, err error) {
	start := time.Now()
	var dockerDone time.Time
	err = lab.WaitFor(ctx, settleWithin, 250*time.Millisecond, func() error {
		if err := r.dockerAsModel(ctx); err != nil {
			return err
		}
		if dockerDone.IsZero() {
			dockerDone = time.Now()
		}
		if err := labtest.Check(ctx, r.l.Hosts); err != nil {
			waited = err
			return err
		}
		return nil
	})
	if !dockerDone.IsZero() {
		weft = time.Since(dockerDone)
	}
	return time.Since(start), weft, waited, err
}

// firstLine returns err's first line, cut at 300 bytes.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// dockerAsModel says how the engines differ from the model: containers
// running or not, services' running tasks.
func (r *run) dockerAsModel(ctx context.Context) error {
	for i, h := range r.l.Hosts {
		out, err := h.Docker(ctx, "ps", "-a", "--filter", "name=^sk-c", "--format", "{{.Names}} {{.State}}")
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if name, state, ok := strings.Cut(line, " "); ok {
				have[name] = state == "running"
			}
		}
		for _, c := range r.model.Ctrs {
			if c.Host != i {
				continue
			}
			running, ok := have[c.Name]
			if !ok {
				return fmt.Errorf("%s has no container %s", h.Name, c.Name)
			}
			if running != c.Running {
				return fmt.Errorf("%s on %s: running %v, want %v", c.Name, h.Name, running, c.Running)
			}
		}
	}
	out, err := r.l.Manager().Docker(ctx, "service", "ls", "--format", "{{.Name}} {{.Replicas}}")
	if err != nil {
		return err
	}
	replicas := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if name, rep, ok := strings.Cut(line, " "); ok {
			replicas[name] = rep
		}
	}
	for _, s := range r.model.Svcs {
		if want := fmt.Sprintf("%d/%d", s.Replicas, s.Replicas); replicas[s.Name] != want {
			return fmt.Errorf("service %s: %s replicas, want %s", s.Name, replicas[s.Name], want)
		}
	}
	// Every task the manager counts runs on a host, and no other.
	nets, err := engineView(ctx, r.l)
	if err != nil {
		return err
	}
	// A removed service's tasks may take their stop timeout to go.
	for _, nv := range nets {
		for _, e := range nv.eps {
			svc, _, task := strings.Cut(e.name, ".")
			if task && !slices.ContainsFunc(r.model.Svcs, func(s *SvcM) bool { return s.Name == svc }) {
				return fmt.Errorf("task %s of a removed service still on %s on %s", e.name, nv.name, e.host.Name)
			}
		}
	}
	for _, s := range r.model.Svcs {
		n := 0
		if nv := nets[s.Net]; nv != nil {
			for _, e := range nv.eps {
				if strings.HasPrefix(e.name, s.Name+".") {
					n++
				}
			}
		}
		if n != s.Replicas {
			return fmt.Errorf("service %s: %d tasks on %s across the engines, want %d", s.Name, n, s.Net, s.Replicas)
		}
	}
	return nil
}

// check runs the invariants beyond Check on the settled lab.
func (r *run) check(ctx context.Context) error {
	out, err := r.l.Hosts[0].Docker(ctx, "logs", pingerName)
	if err != nil {
		return err
	}
	if lost, replies, gaps := pingLosses(out); lost > 0 {
		return fmt.Errorf("pinger %s lost %d of %d pings: seq %v", r.pinger, lost, lost+replies, gaps[:min(len(gaps), 10)])
	}
	if err := r.plugins.check(r.l); err != nil {
		return err
	}
	nets, err := engineView(ctx, r.l)
	if err != nil {
		return err
	}
	if err := addressesOnce(nets); err != nil {
		return err
	}
	err = errors.Join(reachSample(ctx, r.rng, nets, 3), dnsSample(ctx, r.rng, nets, r.model, 1))
	if err != nil {
		// Only if what was sampled is still there: Docker may still be
		// ending a container the lab is done with (a task's stop timeout).
		if now, verr := engineView(ctx, r.l); verr == nil && !sameEndpoints(nets, now) {
			r.logf("  samples not held to: the engines' endpoints changed meanwhile (%v)", err)
			return nil
		}
	}
	return err
}

// teardown removes what the soak made and checks that nothing of weft's
// stays on any host.
func (r *run) teardown(ctx context.Context) error {
	mgr := r.l.Manager()
	for _, s := range r.model.Svcs {
		if _, err := mgr.Docker(ctx, "service", "rm", s.Name); err != nil {
			return err
		}
	}
	for _, h := range r.l.Hosts {
		ids, err := h.Docker(ctx, "ps", "-aq", "--filter", "name=^sk-")
		if err != nil {
			return err
		}
		if f := strings.Fields(ids); len(f) > 0 {
			if _, err := h.Docker(ctx, append([]string{"rm", "-f"}, f...)...); err != nil {
				return err
			}
		}
	}
	for _, n := range r.model.Nets {
		if err := labtest.RemoveNetwork(ctx, mgr, n.Name, 2*time.Minute); err != nil {
			return err
		}
	}
	start := time.Now()
	err := lab.WaitFor(ctx, 2*time.Minute, 500*time.Millisecond, func() error {
		for _, h := range r.l.Hosts {
			out, err := h.Docker(ctx, "network", "ls", "-q", "--filter", "driver="+pluginName)
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != "" {
				return fmt.Errorf("%s still has weft networks %s", h.Name, strings.Fields(out))
			}
		}
		return labtest.Check(ctx, r.l.Hosts)
	})
	r.logf("soak: nothing of weft's left on any host %s after the removals", time.Since(start).Round(100*time.Millisecond))
	return err
}
