package bench

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/mesh"
)

// Scale, simulated: N mesh members in this process over the mesh package's
// in-memory transport (no sockets, a lossy-network model), all joined
// through the first; a fresh mesh for every repetition. E endpoint records
// are written spread
// over every member (each member owns E/N of them, as hosts own their
// containers' endpoints), and the time until every member holds every
// record is taken. Memory: the live heap added by those records, per member
// and per 1,000 records, after a full GC.
//
// Dissemination runs with the production defaults; failure detection is
// relaxed (probe every 2 s), because hundreds of members share the
// machine's two cores and would otherwise suspect each other under load,
// which a real host with its own CPU would not.

// scaleSettle is the pause after each convergence before the heap is read.
const scaleSettle = 5 * time.Second

// scaleConfig is one member's configuration.
func scaleConfig(name string, t *mesh.MemTransport, peer string) mesh.Config {
	c := mesh.DefaultConfig()
	c.NodeName = name
	c.Transport = t
	if peer != "" {
		c.Peers = []string{peer}
	}
	c.ProbeInterval = 2 * time.Second
	c.ProbeTimeout = time.Second
	c.SuspicionMult = 4
	c.RejoinInterval = 5 * time.Second
	return c
}

// endpointValue is a record shaped like weft's endpoint records (its JSON
// size matters for the packets and the memory).
func endpointValue(i, members int) []byte {
	return fmt.Appendf(nil,
		`{"net":"9f3c2a81d0e4","ip":"10.%d.%d.%d/16","mac":"02:42:0a:%02x:%02x:%02x","vtep":"192.168.%d.%d","names":["web-%d","svc.%d.x7k2q"]}`,
		i>>16&255, i>>8&255, i&255, i>>16&255, i>>8&255, i&255, i%members/250, i%members%250+1, i, i%7)
}

// scale runs every size in o.
func scale(ctx context.Context, o *Options) ([]ScaleResult, error) {
	var out []ScaleResult
	for _, members := range o.ScaleMembers {
		rs, err := scaleMembers(ctx, o, members)
		out = append(out, rs...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func scaleMembers(ctx context.Context, o *Options, members int) ([]ScaleResult, error) {
	var results []ScaleResult
	for _, n := range o.ScaleEntries {
		r := ScaleResult{Members: members, Entries: n}
		var joins []float64
		for rep := range o.Reps {
			run, join, err := scaleRep(ctx, o, members, n)
			if err != nil {
				o.note(PartScale, "scale %d members, %d records, rep %d: %v", members, n, rep+1, err)
			}
			o.Logf("scale: %d members, %d records, rep %d/%d: joined in %.1f s, converged in %.2f s (CPU %.1f s, %.2f entries read per entry needed), %.0f B per member per 1k",
				members, n, rep+1, o.Reps, join, run.took, run.cpu, run.read, run.perK)
			r.Converge = append(r.Converge, run.took)
			r.HeapPerK = append(r.HeapPerK, run.perK)
			r.CPU = append(r.CPU, run.cpu)
			r.ReadPerNeeded = append(r.ReadPerNeeded, run.read)
			joins = append(joins, join)
			if ctx.Err() != nil {
				return append(results, r), ctx.Err()
			}
		}
		r.Join = Summarize(joins).Median
		results = append(results, r)
	}
	return results, nil
}

// scaleRep forms a fresh mesh of members, so that no repetition inherits
// the records (and the anti-entropy work) of the one before, and measures
// one convergence of n records in it.
func scaleRep(ctx context.Context, o *Options, members, n int) (run scaleRun, join float64, err error) {
	nan := scaleRun{took: math.NaN(), perK: math.NaN(), cpu: math.NaN(), read: math.NaN()}
	mn := mesh.NewMemNetwork()
	var ms []*mesh.Mesh
	defer func() {
		// In parallel: a member's Close waits for its goroutines.
		var wg sync.WaitGroup
		for _, m := range ms {
			wg.Add(1)
			go func() { defer wg.Done(); m.Close() }()
		}
		wg.Wait()
	}()
	first := ""
	start := time.Now()
	for i := range members {
		t, err := mn.NewTransport("")
		if err != nil {
			return nan, math.NaN(), err
		}
		if i == 0 {
			first = t.Addr()
		}
		m, err := mesh.New(scaleConfig(fmt.Sprintf("host-%03d", i), t, first))
		if err == nil {
			err = m.Start("", nil)
		}
		if err != nil {
			return nan, math.NaN(), err
		}
		ms = append(ms, m)
	}
	err = waitUntil(ctx, 5*time.Minute, 200*time.Millisecond, func() error {
		for _, m := range ms {
			alive := 0
			for _, mb := range m.Members() {
				if mb.State == mesh.StateAlive {
					alive++
				}
			}
			if alive != members {
				return fmt.Errorf("%s sees %d of %d members alive", m.LocalNode(), alive, members)
			}
		}
		return nil
	})
	if err != nil {
		return nan, math.NaN(), fmt.Errorf("%d members did not join: %w", members, err)
	}
	join = time.Since(start).Seconds()
	run, err = scaleOnce(ctx, o, ms, "endpoint", n)
	return run, join, err
}

// scaleRun is one convergence: seconds (NaN past the timeout), heap bytes
// per member per 1,000 records, the process's CPU seconds meanwhile, and
// entries the members read (merged or found already held) per entry they
// needed.
type scaleRun struct{ took, perK, cpu, read float64 }

// scaleOnce writes n records in a fresh table and waits until every
// member holds them all.
func scaleOnce(ctx context.Context, o *Options, ms []*mesh.Mesh, table string, n int) (scaleRun, error) {
	keys := make([]string, n)
	values := make([][]byte, n)
	for i := range n {
		keys[i] = fmt.Sprintf("%08x5c1d7e0f9a8b6c4d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b", i)
		values[i] = endpointValue(i, len(ms))
	}
	// What each member still lacks, in write order; checked from the front
	// and stopped at the first miss, so a check costs about one lookup per
	// new arrival.
	missing := make([][]string, len(ms))
	for i := range ms {
		missing[i] = keys
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	statsBefore := mesh.SumStats(ms)
	cpuBefore := processCPU()

	start := time.Now()
	for i := range n {
		ms[i%len(ms)].Put(table, keys[i], values[i])
	}
	err := waitUntil(ctx, o.ScaleTimeout, 20*time.Millisecond, func() error {
		left := 0
		for i, m := range ms {
			rest := missing[i]
			for len(rest) > 0 {
				if _, ok := m.Get(table, rest[0]); !ok {
					break
				}
				rest = rest[1:]
			}
			missing[i] = rest
			if len(rest) > 0 {
				// The first miss may hide later arrivals: count exactly
				// only when reporting.
				left++
			}
		}
		if left > 0 {
			return fmt.Errorf("%d of %d members lack records", left, len(ms))
		}
		return nil
	})
	took := time.Since(start).Seconds()
	cpu := (processCPU() - cpuBefore).Seconds()
	st := mesh.SumStats(ms)
	read := float64(st.Received-statsBefore.Received) / float64(st.Applied-statsBefore.Applied)
	if err != nil {
		took = math.NaN()
		err = fmt.Errorf("%w; %s", err, diagnose(ms, table, keys, len(ms)))
	}
	missing = nil
	// Let the broadcasts still queued for retransmission drain (a few
	// gossip rounds), so the heap holds the records, not the traffic, and
	// the next table starts from a quiet mesh.
	select {
	case <-ctx.Done():
	case <-time.After(scaleSettle):
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// The caller's keys and values were counted before; keep them alive so
	// the difference is what the members added.
	runtime.KeepAlive(keys)
	runtime.KeepAlive(values)
	perK := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(len(ms)) / (float64(n) / 1000)
	return scaleRun{took: took, perK: perK, cpu: cpu, read: read}, err
}

// processCPU is the CPU time (user and system) this process has used, or
// 0 if the kernel does not say.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitUntil calls fn every interval until it returns nil, timeout passes or
// ctx ends.
func waitUntil(ctx context.Context, timeout, interval time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// diagnose says, for a convergence that timed out, how many records the
// lacking members miss, whose records they are, and how many members each
// lacking member sees alive: records of an owner it holds dead are
// withdrawn by design, so a member starved of CPU long enough to be
// declared dead makes its records vanish elsewhere until it is back.
func diagnose(ms []*mesh.Mesh, table string, keys []string, members int) string {
	lacking, missed := 0, 0
	minAlive := members
	owners := map[int]bool{}
	for _, m := range ms {
		n := 0
		for i, k := range keys {
			if _, ok := m.Get(table, k); !ok {
				n++
				owners[i%members] = true
			}
		}
		if n == 0 {
			continue
		}
		lacking++
		missed += n
		alive := 0
		for _, mb := range m.Members() {
			if mb.State == mesh.StateAlive {
				alive++
			}
		}
		minAlive = min(minAlive, alive)
	}
	if lacking == 0 {
		return "all records arrived just after the deadline"
	}
	return fmt.Sprintf("%d members lack %d records in all (%.0f each on average) owned by %d of %d members; the lacking members see as few as %d of %d members alive",
		lacking, missed, float64(missed)/float64(lacking), len(owners), members, minAlive, members)
}
