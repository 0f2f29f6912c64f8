// Package meshtest runs real meshes for other packages' tests: members of
// one in-memory network (mesh.MemNetwork), tuned to converge and detect
// failures fast, started and joined, closed when the test ends. Packages
// built on the mesh (the catalog, the IPAM) test against these instead of
// a fake table.
package meshtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/weftnet/weft/mesh"
)

// Cluster is a set of started meshes on one in-memory network.
type Cluster struct {
	Net     *mesh.MemNetwork
	Members []*mesh.Mesh
	addrs   []string
}

// Addr returns the gossip address of member i ("10.99.0.<i+1>:port").
func (c *Cluster) Addr(i int) string { return c.addrs[i] }

// Config returns the settings a member of a test cluster runs with.
func Config(name string) mesh.Config {
	cfg := mesh.DefaultConfig()
	cfg.NodeName = name
	cfg.RepairGrace = -1
	cfg.ProbeInterval = 100 * time.Millisecond
	cfg.ProbeTimeout = 50 * time.Millisecond
	cfg.GossipInterval = 20 * time.Millisecond
	cfg.PushPullInterval = time.Second
	cfg.SyncInterval = 100 * time.Millisecond
	cfg.RejoinInterval = 200 * time.Millisecond
	cfg.HostProbeInterval = 100 * time.Millisecond
	return cfg
}

// StopWeft closes member i while its host keeps answering probes, as a
// plugin disabled on a live host: the others see it down, its entries
// still shown. Without it, a closed member's host is gone (see
// mesh.MemNetwork).
func (c *Cluster) StopWeft(i int) error {
	c.Net.KeepHost(c.addrs[i], true)
	return c.Members[i].Close()
}

// New starts one member per name, each joining the others, and waits until
// every member sees every other alive. configure, if set, adjusts each
// member's settings before it is made.
func New(t testing.TB, names []string, configure func(i int, cfg *mesh.Config)) *Cluster {
	t.Helper()
	c := &Cluster{Net: mesh.NewMemNetwork()}
	for i := range names {
		c.addrs = append(c.addrs, fmt.Sprintf("10.99.0.%d:%d", i+1, mesh.DefaultPort))
	}
	for i, name := range names {
		tr, err := c.Net.NewTransport(c.addrs[i])
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config(name)
		cfg.Transport = tr
		if configure != nil {
			configure(i, &cfg)
		}
		m, err := mesh.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		var peers []string
		for j := range names {
			if j != i {
				peers = append(peers, c.addrs[j])
			}
		}
		if err := m.Start(c.addrs[i], peers); err != nil {
			t.Fatal(err)
		}
		c.Members = append(c.Members, m)
	}
	WaitFor(t, 10*time.Second, "every member alive everywhere", func() error {
		for _, m := range c.Members {
			alive := 0
			for _, mb := range m.Members() {
				if mb.State == mesh.StateAlive {
					alive++
				}
			}
			if alive != len(names) {
				return fmt.Errorf("%s sees %d of %d alive", m.LocalNode(), alive, len(names))
			}
		}
		return nil
	})
	return c
}

// WaitFor polls cond until it returns nil, failing the test with cond's
// last error when timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
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
		time.Sleep(10 * time.Millisecond)
	}
}
