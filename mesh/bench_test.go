package mesh

import (
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkConverge measures, in one process over a MemNetwork, how long
// entries written across all members (each member owns entries/members of
// them, as hosts own their endpoints) take to be visible on every member,
// and the heap they cost per 1,000 entries on each member.
//
//	go test ./mesh -run '^$' -bench Converge -benchtime 1x -timeout 60m
//
// Dissemination uses the production defaults. Failure detection is
// relaxed: hundreds of members share two cores here, and a member starved
// for a second must not be declared dead.
func BenchmarkConverge(b *testing.B) {
	for _, members := range []int{10, 50, 200} {
		for _, entries := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("members=%d/entries=%d", members, entries), func(b *testing.B) {
				benchConverge(b, members, entries)
			})
		}
	}
}

func benchConverge(b *testing.B, members, entries int) {
	var total, cpu time.Duration
	var perK float64
	var moved Stats
	for range b.N {
		b.StopTimer()
		waitDrained(b)
		ms := benchCluster(b, members)
		values := make([][]byte, entries)
		keys := make([]string, entries)
		for i := range values {
			// Shaped like weft's endpoint records: 64-hex-digit keys, ~150
			// byte JSON values.
			keys[i] = fmt.Sprintf("%08x5c1d7e0f9a8b6c4d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b", i)
			values[i] = fmt.Appendf(nil,
				`{"net":"9f3c2a81d0e4","ip":"10.%d.%d.%d/16","mac":"02:42:0a:%02x:%02x:%02x","vtep":"192.168.%d.%d","names":["web-%d","svc.%d.x7k2q"]}`,
				i>>16&255, i>>8&255, i&255, i>>16&255, i>>8&255, i&255, i%members/250, i%members%250+1, i, i%7)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		statsBefore := SumStats(ms)
		cpuBefore := processCPU(b)

		b.StartTimer()
		start := time.Now()
		for i := range entries {
			ms[i%members].Put("endpoint", keys[i], values[i])
		}
		// Poll gently (the poll competes for the same two cores), and only
		// the members not yet complete: entries never go away here.
		pending := slices.Clone(ms)
		deadline := start.Add(20 * time.Minute)
		for len(pending) > 0 {
			if time.Now().After(deadline) {
				b.Fatalf("%d members still incomplete after 20 min", len(pending))
			}
			time.Sleep(100 * time.Millisecond)
			pending = slices.DeleteFunc(pending, func(m *Mesh) bool {
				m.mu.Lock()
				defer m.mu.Unlock()
				// Fewer records than entries means incomplete, without
				// counting them one by one.
				return len(m.st.tables["endpoint"]) == entries && m.st.countLive("endpoint") == entries
			})
		}
		total += time.Since(start)
		b.StopTimer()
		cpu += processCPU(b) - cpuBefore
		st := SumStats(ms)
		moved.Received += st.Received - statsBefore.Received
		moved.Applied += st.Applied - statsBefore.Applied
		moved.Skipped += st.Skipped - statsBefore.Skipped

		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		perK = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(members) / (float64(entries) / 1000)
		for _, m := range ms {
			m.Close()
		}
	}
	n := float64(b.N)
	b.ReportMetric(total.Seconds()/n, "s/converge")
	// CPU of the whole process (every member) while converging: with two
	// cores, wall time cannot be below half of it.
	b.ReportMetric(cpu.Seconds()/n, "cpu-s/converge")
	// Entries read (merged or found already held) and skipped unread, per
	// entry a member needed: 1 would be no redundancy at all.
	b.ReportMetric(float64(moved.Received)/float64(moved.Applied), "read/needed")
	b.ReportMetric(float64(moved.Skipped)/float64(moved.Applied), "skipped/needed")
	b.ReportMetric(perK, "heapB/1k-entries/member")
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchCluster starts n members joining n0 and waits until all see all.
func benchCluster(b *testing.B, n int) []*Mesh {
	l := newLab(b)
	mod := func(c *Config) {
		d := DefaultConfig()
		c.ProbeInterval = 2 * time.Second
		c.ProbeTimeout = time.Second
		c.SuspicionMult = 4
		c.PushPullInterval = d.PushPullInterval
		c.SyncInterval = d.SyncInterval
		c.RejoinInterval = d.RejoinInterval
	}
	ms := []*Mesh{l.start("n0", mod)}
	for i := 1; i < n; i++ {
		ms = append(ms, l.start(fmt.Sprintf("n%d", i), mod, "n0"))
	}
	waitFor(b, 5*time.Minute, "membership", func() error {
		for _, m := range ms {
			if got := int(m.numAlive.Load()); got != n {
				return fmt.Errorf("%s sees %d alive, want %d", m.LocalNode(), got, n)
			}
		}
		return nil
	})
	return ms
}

// waitDrained waits until the goroutines of clusters closed earlier are
// gone (memberlist's stream handlers end at their deadlines), so their
// memory does not blur the next measurement.
func waitDrained(b *testing.B) {
	waitFor(b, time.Minute, "earlier clusters drained", func() error {
		if n := runtime.NumGoroutine(); n > 20 {
			return fmt.Errorf("%d goroutines left", n)
		}
		return nil
	})
}

// BenchmarkMergeAnswer measures the receive path of anti-entropy on one
// member: an answer carrying 10,000 endpoint records of 200 owners, merged
// into a table that lacks them all (new), or already holds them (dup).
//
//	go test ./mesh -run '^$' -bench MergeAnswer -benchmem
func BenchmarkMergeAnswer(b *testing.B) {
	const owners, entries = 200, 10000
	bls := make([]block, owners)
	for i := range entries {
		o := i % owners
		bls[o].Digest.Owner = fmt.Sprintf("host-%03d", o)
		bls[o].Entries = append(bls[o].Entries, wireEntry{Entry: Entry{
			Table: "endpoint", Key: fmt.Sprintf("%08x5c1d7e0f9a8b6c4d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b", i),
			Owner: bls[o].Digest.Owner, Clock: uint64(i + 1), Value: endpointLike(i, owners),
		}})
	}
	msg := encodeAnswer(&digestMsg{Sender: "host-000", Answer: true}, bls)
	newMesh := func() *Mesh {
		m := &Mesh{changes: make(chan struct{}, 1), st: newState("me", time.Minute, time.Now(), 0)}
		m.bad = newRateLog(slog.New(slog.DiscardHandler), time.Minute)
		m.log = slog.New(slog.DiscardHandler)
		for o := range owners {
			m.st.memberUp(Member{Name: fmt.Sprintf("host-%03d", o)}, 0, time.Now())
		}
		return m
	}
	b.Run("new", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			m := newMesh()
			b.StartTimer()
			if !m.receive(msg, false) || m.st.countLive("endpoint") != entries {
				b.Fatal("answer not merged")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/entries, "ns/entry")
	})
	b.Run("dup", func(b *testing.B) {
		m := newMesh()
		m.receive(msg, false)
		// Every block's digest differs from what is held, so none is
		// skipped: every entry is read and found already held.
		bad := slices.Clone(msg)
		for b.Loop() {
			if !m.receive(bad, false) {
				b.Fatal("answer refused")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/entries, "ns/entry")
	})
}

func endpointLike(i, members int) []byte {
	return fmt.Appendf(nil,
		`{"net":"9f3c2a81d0e4","ip":"10.%d.%d.%d/16","mac":"02:42:0a:%02x:%02x:%02x","vtep":"192.168.%d.%d","names":["web-%d","svc.%d.x7k2q"]}`,
		i>>16&255, i>>8&255, i&255, i>>16&255, i>>8&255, i&255, i%members/250, i%members%250+1, i, i%7)
}
