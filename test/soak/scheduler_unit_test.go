package soak

import (
	"slices"
	"testing"
)

// draw draws n operations from seed, applying each to a fresh model, and
// checks that every one fits the model it was drawn for.
func draw(t *testing.T, seed uint64, kinds []Kind, n int) []Op {
	t.Helper()
	s := NewScheduler(seed, kinds, DefaultLimits)
	m := NewModel()
	var ops []Op
	for i := 0; i < n; i++ {
		op := s.Next(m)
		if !slices.Contains(kinds, op.Kind) && !(op.Kind == CtrStart && len(ops) == 0) {
			t.Fatalf("%v: kind not asked for (%v)", op, kinds)
		}
		checkFits(t, m, op)
		m.Apply(op)
		if r := m.Running(); r > DefaultLimits.Running {
			t.Fatalf("after %v: %d running containers, limit %d", op, r, DefaultLimits.Running)
		}
		if len(m.Nets)-1 > DefaultLimits.Networks || len(m.Svcs) > DefaultLimits.Services {
			t.Fatalf("after %v: %d networks, %d services", op, len(m.Nets), len(m.Svcs))
		}
		ops = append(ops, op)
	}
	return ops
}

// checkFits fails the test if op names what m does not hold, or a fault
// that cuts flows hits another host than the fault host.
func checkFits(t *testing.T, m *Model, op Op) {
	t.Helper()
	ctr := func() *CtrM {
		for _, c := range m.Ctrs {
			if c.Name == op.Name {
				return c
			}
		}
		t.Fatalf("%v: no such container in the model", op)
		return nil
	}
	hasNet := func(name string) bool {
		return slices.ContainsFunc(m.Nets, func(n *NetM) bool { return n.Name == name })
	}
	switch op.Kind {
	case CtrStart:
		if !hasNet(op.Net) || op.Host < 0 || op.Host >= DefaultLimits.Hosts {
			t.Fatalf("%v: no such network or host", op)
		}
	case CtrStop, CtrKill:
		if c := ctr(); !c.Running || c.Host != op.Host {
			t.Fatalf("%v: container not running there", op)
		}
	case CtrRestart, CtrRemove:
		if c := ctr(); c.Running {
			t.Fatalf("%v: container running", op)
		}
	case SvcCreate:
		if !hasNet(op.Net) || op.Replicas < 1 || op.Replicas > DefaultLimits.Replicas {
			t.Fatalf("%v: bad service", op)
		}
	case SvcScale:
		for _, s := range m.Svcs {
			if s.Name == op.Name && s.Replicas == op.Replicas {
				t.Fatalf("%v: scaled to the count it has", op)
			}
		}
	case NetCreate:
		for _, n := range m.Nets {
			if n.Subnet == op.Subnet || n.Name == op.Name {
				t.Fatalf("%v: subnet or name taken by %s", op, n.Name)
			}
		}
	case NetRemove:
		if op.Name == BaseNet || !hasNet(op.Name) {
			t.Fatalf("%v: the base network, or none", op)
		}
	case WGRotate:
		if !slices.ContainsFunc(m.sealed(), func(c *CtrM) bool { return c.Host == op.Host }) {
			t.Fatalf("%v: no running container on an encrypted network on that host", op)
		}
	case EngineRestart, LinkCut, Partition:
		if op.Host != DefaultLimits.FaultHost {
			t.Fatalf("%v: a fault that cuts flows off the fault host", op)
		}
	case PluginDown:
		if op.Dur < 5e9 || op.Dur > 20e9 {
			t.Fatalf("%v: down beyond 5-20 s", op)
		}
	}
}

// TestSchedulerDeterministic: one seed, one sequence; another seed,
// another sequence.
func TestSchedulerDeterministic(t *testing.T) {
	kinds, _ := ParseKinds("all")
	a := draw(t, 42, kinds, 500)
	b := draw(t, 42, kinds, 500)
	if !slices.Equal(a, b) {
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("seed 42 drew %v then %v at step %d", a[i], b[i], i)
			}
		}
	}
	c := draw(t, 43, kinds, 500)
	if slices.Equal(a, c) {
		t.Fatal("seeds 42 and 43 drew the same 500 operations")
	}
}

// TestSchedulerCoversKinds: over a long run every kind asked for is drawn,
// and only those.
func TestSchedulerCoversKinds(t *testing.T) {
	for _, set := range []string{"all", "ci", "ctr-start,ctr-kill,plugin-down"} {
		kinds, err := ParseKinds(set)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[Kind]int{}
		for _, op := range draw(t, 7, kinds, 2000) {
			seen[op.Kind]++
		}
		for _, k := range kinds {
			if seen[k] == 0 {
				t.Errorf("%s: kind %s never drawn in 2000 operations: %v", set, k, seen)
			}
		}
		if len(seen) != len(kinds) {
			t.Errorf("%s: drew kinds %v, asked for %v", set, seen, kinds)
		}
	}
}

func TestParseKinds(t *testing.T) {
	if _, err := ParseKinds("ctr-start,bogus"); err == nil {
		t.Fatal("an unknown kind accepted")
	}
	k, err := ParseKinds(" ctr-start , ctr-start,link-cut")
	if err != nil || !slices.Equal(k, []Kind{CtrStart, LinkCut}) {
		t.Fatalf("got %v, %v", k, err)
	}
	all, _ := ParseKinds("")
	if len(all) != len(DefaultWeights) {
		t.Fatalf("all kinds: %v", all)
	}
	for _, f := range Faults {
		if slices.Contains(CIKinds, f) && f != PluginRestart && f != PluginKill {
			t.Errorf("CI soak has the slow fault %s", f)
		}
	}
}

func TestBlips(t *testing.T) {
	deleted := []string{
		"h2: deleted fdb 02:77:0a:61:00:03 dst 198.18.63.1 dev weft10",
		"h2: deleted neighbour 10.97.0.3 lladdr - dev weft10",
		"h3: deleted fdb 02:77:0a:61:00:05 dst 198.18.63.3 dev weft10",
		"h3: deleted neighbour 10.97.0.5 lladdr - dev weft10",
		"h1: watch failed: buffer overrun",
	}
	after := []string{
		"h2 weft10 fdb 02:77:0a:61:00:03 198.18.63.1",
		"h2 weft10 neigh 10.97.0.3 02:77:0a:61:00:03",
		"h3 weft10 fdb 02:77:0a:61:00:05 198.18.63.2",
	}
	got := blips(deleted, after)
	want := []string{deleted[0], deleted[1], deleted[4]}
	if !slices.Equal(got, want) {
		t.Fatalf("blips %q, want %q", got, want)
	}
}
