package mesh

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkIdle measures what an idle mesh costs each member: n members
// in one process over a MemNetwork, every timer at its production default
// (failure probes, gossip, push/pull, sync rounds, rejoin, maintenance),
// each member holding a few endpoint-like entries of its own, nothing
// changing; the process's CPU over 20 s, per member, in percent of one
// core. Encryption is off and packets do not go through the kernel, so a
// real host spends more per packet; the figure shows how the timers' work
// grows with the mesh.
//
//	go test ./mesh -run '^$' -bench Idle -benchtime 1x -timeout 30m
func BenchmarkIdle(b *testing.B) {
	for _, members := range []int{3, 50, 200} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			var pct float64
			for range b.N {
				waitDrained(b)
				l := newLab(b)
				mod := func(c *Config) {
					d := DefaultConfig()
					c.Logger = nil
					c.RepairGrace = d.RepairGrace
					c.PushPullInterval = d.PushPullInterval
					c.SyncInterval = d.SyncInterval
					c.RejoinInterval = d.RejoinInterval
				}
				ms := l.cluster(members, mod)
				for i, m := range ms {
					for j := range 2 {
						m.Put("endpoint", fmt.Sprintf("%s/ep%d", m.LocalNode(), j), endpointLike(i*2+j, members))
					}
				}
				// Settled: the writes spread, the sync rounds done.
				time.Sleep(15 * time.Second)
				const window = 20 * time.Second
				before := processCPU(b)
				time.Sleep(window)
				used := processCPU(b) - before
				pct = 100 * used.Seconds() / window.Seconds() / float64(members)
				for _, m := range ms {
					alive := int(m.numAlive.Load())
					if alive != members {
						b.Fatalf("%s sees %d alive of %d: the machine is too loaded for this figure", m.LocalNode(), alive, members)
					}
				}
			}
			b.ReportMetric(pct, "cpu-%/member")
		})
	}
}
