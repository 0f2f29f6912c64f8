package driver

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/dataplane"
)

// repairMetrics counts the periodic repair passes and the drift the
// passes fixed, in the registry given in Config.Registry, and keeps the
// last hour's repairs for the status report. Drift is what a pass had to
// change, except in a network's first pass (which programs its entries):
// kernel entries that something other than weft added, removed or altered
// (a hand-deleted entry, a device flushed), or a write that failed.
type repairMetrics struct {
	passes  prometheus.Counter
	fixed   *prometheus.CounterVec
	errors  prometheus.Counter
	history repairHistory
}

// RepairWindow is how far back Repairs looks, for `weft status`.
const RepairWindow = time.Hour

func newRepairMetrics(reg prometheus.Registerer) *repairMetrics {
	m := &repairMetrics{
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_repair_passes_total",
			Help: "Periodic repair passes: every network's kernel entries compared with the catalog.",
		}),
		fixed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_repair_fixed_entries_total",
			Help: "Kernel entries the repair found drifted and fixed, by table (fdb, neighbour) and action (added: missing or wrong, removed: not wanted).",
		}, []string{"table", "action"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_repair_errors_total",
			Help: "Networks whose device or entries a repair pass could not bring in line.",
		}),
	}
	// Every series exists from the start, at 0, so that rate() sees the
	// first repair.
	for _, t := range []string{"fdb", "neighbour"} {
		for _, a := range []string{"added", "removed"} {
			m.fixed.WithLabelValues(t, a)
		}
	}
	if reg != nil {
		reg.MustRegister(m.passes, m.fixed, m.errors)
	}
	return m
}

// pass counts one periodic pass.
func (m *repairMetrics) pass() { m.passes.Inc() }

// failed counts a network a pass could not repair.
func (m *repairMetrics) failed() { m.errors.Inc() }

// repaired counts the drift one pass fixed on one device.
func (m *repairMetrics) repaired(rep dataplane.Repair, now time.Time) {
	if rep == (dataplane.Repair{}) {
		return
	}
	m.fixed.WithLabelValues("fdb", "added").Add(float64(rep.FDBAdded))
	m.fixed.WithLabelValues("fdb", "removed").Add(float64(rep.FDBRemoved))
	m.fixed.WithLabelValues("neighbour", "added").Add(float64(rep.NeighAdded))
	m.fixed.WithLabelValues("neighbour", "removed").Add(float64(rep.NeighRemoved))
	m.history.add(now, rep)
}

// repairHistory keeps the repairs of the last RepairWindow.
type repairHistory struct {
	// mu guards events.
	mu     sync.Mutex
	events []repairEvent
}

type repairEvent struct {
	at  time.Time
	rep dataplane.Repair
}

func (h *repairHistory) add(now time.Time, rep dataplane.Repair) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pruneLocked(now)
	h.events = append(h.events, repairEvent{at: now, rep: rep})
}

func (h *repairHistory) pruneLocked(now time.Time) {
	i := 0
	for i < len(h.events) && now.Sub(h.events[i].at) > RepairWindow {
		i++
	}
	h.events = h.events[i:]
}

// since sums the repairs of the last RepairWindow before now.
func (h *repairHistory) since(now time.Time) dataplane.Repair {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pruneLocked(now)
	var sum dataplane.Repair
	for _, e := range h.events {
		sum.FDBAdded += e.rep.FDBAdded
		sum.FDBRemoved += e.rep.FDBRemoved
		sum.NeighAdded += e.rep.NeighAdded
		sum.NeighRemoved += e.rep.NeighRemoved
	}
	return sum
}

// RecentRepairs returns the drift the repair fixed in the last
// RepairWindow, summed over the networks.
func (d *Driver) RecentRepairs() dataplane.Repair {
	return d.metrics.history.since(time.Now())
}
