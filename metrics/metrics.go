// Package metrics holds weft's Prometheus registry and the metrics read
// from the parts' state at each scrape: mesh members by state, endpoints
// local and remote per network, kernel entries programmed, network and
// underlay MTUs, the mesh's gossip counters and the build.
//
// Counters of events are counted where the events happen, by the part
// that owns them, into the same registry (driver's repair passes, dns's
// queries, probe's probes); this package only reads state. There is one
// registry per plugin process, made by New: nothing registers into the
// client library's global one, so tests never share metrics.
//
// Names follow Prometheus' conventions: weft_ first, units in the name
// (_bytes, _seconds), counters ending in _total.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/engine"
	"github.com/weftnet/weft/mesh"
)

// New returns a registry holding the build's info and the Go runtime's and
// process's standard metrics (go_*, process_*: CPU seconds, resident
// memory).
func New(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "weft_build_info",
			Help:        "1, labelled with the running build's version and Go version.",
			ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	return reg
}

// Handler serves reg in Prometheus' text format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Mesh is what the state collector reads of the mesh; *mesh.Mesh.
type Mesh interface {
	LocalNode() string
	Members() []mesh.Member
	Stats() mesh.Stats
}

// Networks is what it reads of the driver; *driver.Driver.
type Networks interface {
	Networks() []driver.Network
}

// Catalog is what it reads of the catalog; *catalog.Catalog.
type Catalog interface {
	Remote() []catalog.Record
}

// Kernel counts the entries programmed on a network's device;
// *dataplane.Kernel.
type Kernel interface {
	EntryCounts(vni uint32) (fdb, neigh int, err error)
}

// Sources are the parts the state collector reads. Any may be nil.
type Sources struct {
	Mesh     Mesh
	Networks Networks
	Catalog  Catalog
	Kernel   Kernel
	// UnderlayMTU returns the underlay path's MTU.
	UnderlayMTU func() int
}

// state reads the parts at each scrape.
type state struct{ src Sources }

// NewState returns a collector of the parts' state.
func NewState(src Sources) prometheus.Collector { return state{src} }

var (
	descMembers = prometheus.NewDesc("weft_mesh_members",
		"Mesh members this host knows, itself included, by state.", []string{"state"}, nil)
	descReceived = prometheus.NewDesc("weft_mesh_entries_received_total",
		"Replicated entries read from gossip, anti-entropy and joins.", nil, nil)
	descApplied = prometheus.NewDesc("weft_mesh_entries_applied_total",
		"Received entries that changed this host's table.", nil, nil)
	descDigests = prometheus.NewDesc("weft_mesh_antientropy_exchanges_total",
		"Anti-entropy digests sent (each starts or answers an exchange).", nil, nil)
	netLabels     = []string{"network", "vni"}
	descEndpoints = prometheus.NewDesc("weft_endpoints",
		"Endpoints of each weft network on this host: local (its containers) and remote (other hosts', from the catalog).",
		append(netLabels, "where"), nil)
	descEntries = prometheus.NewDesc("weft_kernel_entries",
		"Static entries programmed on each network's VXLAN device: fdb (MAC -> VTEP) and neighbour (IP -> MAC).",
		append(netLabels, "table"), nil)
	descNetMTU = prometheus.NewDesc("weft_network_mtu_bytes",
		"MTU of each weft network on this host.", netLabels, nil)
	descUnderlayMTU = prometheus.NewDesc("weft_underlay_mtu_bytes",
		"MTU of the path VXLAN takes between the hosts.", nil, nil)
	descNetworks = prometheus.NewDesc("weft_networks",
		"Weft networks on this host.", nil, nil)
)

// knownStates are always exported, at 0 when no member is in them, so
// that a dashboard has a series for each.
var knownStates = []string{mesh.StateAlive, mesh.StateSuspect, mesh.StateDown, mesh.StateDead, mesh.StateLeft}

func (s state) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembers, descReceived, descApplied, descDigests, descEndpoints, descEntries, descNetMTU, descUnderlayMTU, descNetworks} {
		ch <- d
	}
}

func (s state) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	if m := s.src.Mesh; m != nil {
		byState := map[string]int{}
		for _, st := range knownStates {
			byState[st] = 0
		}
		for _, mb := range m.Members() {
			byState[mb.State]++
		}
		for st, n := range byState {
			gauge(descMembers, float64(n), st)
		}
		st := m.Stats()
		counter(descReceived, st.Received)
		counter(descApplied, st.Applied)
		counter(descDigests, st.Digests)
	}
	if s.src.UnderlayMTU != nil {
		gauge(descUnderlayMTU, float64(s.src.UnderlayMTU()))
	}
	if s.src.Networks == nil {
		return
	}
	remote := map[uint32]int{}
	if s.src.Catalog != nil {
		for _, r := range s.src.Catalog.Remote() {
			remote[r.VNI]++
		}
	}
	nets := s.src.Networks.Networks()
	gauge(descNetworks, float64(len(nets)))
	for _, n := range nets {
		lv := []string{engine.ShortID(n.ID), strconv.FormatUint(uint64(n.VNI), 10)}
		gauge(descEndpoints, float64(len(n.Endpoints)), append(lv, "local")...)
		gauge(descEndpoints, float64(remote[n.VNI]), append(lv, "remote")...)
		gauge(descNetMTU, float64(n.MTU), lv...)
		if s.src.Kernel == nil {
			continue
		}
		// A device being made or removed right now has no count: left out
		// rather than reported as empty.
		if fdb, neigh, err := s.src.Kernel.EntryCounts(n.VNI); err == nil {
			gauge(descEntries, float64(fdb), append(lv, "fdb")...)
			gauge(descEntries, float64(neigh), append(lv, "neighbour")...)
		}
	}
}
