package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testLogger discards logs unless MESH_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lab is a set of meshes on one MemNetwork. Each node name keeps its
// address across restarts.
type lab struct {
	t     testing.TB
	net   *MemNetwork
	addrs map[string]string
	mu    sync.Mutex
	nodes map[string]*Mesh
}

func newLab(t testing.TB) *lab {
	l := &lab{t: t, net: NewMemNetwork(), addrs: map[string]string{}, nodes: map[string]*Mesh{}}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, m := range l.nodes {
			m.Close()
		}
	})
	return l
}

// labConfig is tuned for tests: fast failure detection and anti-entropy,
// no repair grace unless a test sets it.
func (l *lab) config(name string) Config {
	c := DefaultConfig()
	c.NodeName = name
	c.Logger = testLogger()
	c.RepairGrace = -1
	c.PushPullInterval = 2 * time.Second
	c.SyncInterval = 200 * time.Millisecond
	c.RejoinInterval = 200 * time.Millisecond
	return c
}

// addr returns the fixed address of a node name.
func (l *lab) addr(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.addrs[name]
	if !ok {
		a = fmt.Sprintf("10.99.0.%d:%d", len(l.addrs)+1, DefaultPort)
		l.addrs[name] = a
	}
	return a
}

// make makes a node that is not yet started, on its fixed address.
func (l *lab) make(name string, mod func(*Config)) *Mesh {
	l.t.Helper()
	tr, err := l.net.NewTransport(l.addr(name))
	if err != nil {
		l.t.Fatal(err)
	}
	c := l.config(name)
	c.Transport = tr
	if mod != nil {
		mod(&c)
	}
	m, err := New(c)
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.nodes[name] = m
	l.mu.Unlock()
	return m
}

// start makes and starts a node; peers are node names.
func (l *lab) start(name string, mod func(*Config), peers ...string) *Mesh {
	l.t.Helper()
	m := l.make(name, mod)
	var addrs []string
	for _, p := range peers {
		addrs = append(addrs, l.addr(p))
	}
	if err := m.Start("", addrs); err != nil {
		l.t.Fatal(err)
	}
	return m
}

// cluster starts n nodes named n0..n(n-1), all joining n0, and waits until
// each sees all alive.
func (l *lab) cluster(n int, mod func(*Config)) []*Mesh {
	l.t.Helper()
	var ms []*Mesh
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		if i == 0 {
			ms = append(ms, l.start(name, mod))
		} else {
			ms = append(ms, l.start(name, mod, "n0"))
		}
	}
	waitAlive(l.t, 15*time.Second, ms, n)
	return ms
}

// waitAlive waits until every mesh in ms sees n alive members.
func waitAlive(t testing.TB, timeout time.Duration, ms []*Mesh, n int) {
	t.Helper()
	waitFor(t, timeout, "membership", func() error {
		for _, m := range ms {
			if got := aliveCount(m); got != n {
				return fmt.Errorf("%s sees %d alive, want %d", m.LocalNode(), got, n)
			}
		}
		return nil
	})
}

func aliveCount(m *Mesh) int {
	n := 0
	for _, mb := range m.Members() {
		if mb.State == StateAlive || mb.State == StateSuspect {
			n++
		}
	}
	return n
}

func memberState(m *Mesh, name string) string {
	for _, mb := range m.Members() {
		if mb.Name == name {
			return mb.State
		}
	}
	return ""
}

// view renders what a mesh shows of a table as "key=value@owner" lines.
func view(m *Mesh, table string) string {
	var out []string
	for _, e := range m.Entries(table) {
		out = append(out, fmt.Sprintf("%s=%s@%s", e.Key, e.Value, e.Owner))
	}
	return strings.Join(out, " ")
}

// waitView waits until every mesh shows want for table.
func waitView(t testing.TB, timeout time.Duration, ms []*Mesh, table string, want []string) {
	t.Helper()
	slices.Sort(want)
	w := strings.Join(want, " ")
	waitFor(t, timeout, "table "+table+" converges", func() error {
		for _, m := range ms {
			if got := view(m, table); got != w {
				return fmt.Errorf("%s shows\n  %q\nwant\n  %q", m.LocalNode(), got, w)
			}
		}
		return nil
	})
}

// held reports whether m holds any version (tombstones included) of a key.
func held(m *Mesh, table, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.lookup(table, key) != nil
}

// recordLog is a slog handler that keeps records for assertions.
type recordLog struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (r *recordLog) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *recordLog) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recordLog) WithGroup(string) slog.Handler      { return r }

// count returns how many records at level or above mention substr in
// their message or attributes.
func (r *recordLog) count(level slog.Level, substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.recs {
		if rec.Level < level {
			continue
		}
		text := rec.Message
		rec.Attrs(func(a slog.Attr) bool {
			text += " " + a.String()
			return true
		})
		if strings.Contains(text, substr) {
			n++
		}
	}
	return n
}
