package bench

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"time"
)

// Results is everything one run measured, saved as results.json beside
// RESULTS.md so the report and the chart can be made again without
// measuring (weftbench report).
type Results struct {
	Date    time.Time `json:"date"`
	Machine string    `json:"machine"`
	Commit  string    `json:"commit"`
	Smoke   bool      `json:"smoke"`
	Reps    int       `json:"reps"`
	// DataReps is the repetitions of the data-plane figures.
	DataReps int `json:"data_reps,omitempty"`
	// Notes are remarks gathered during the run (what failed, what was
	// skipped) that belong to no part, printed in the report.
	Notes []string `json:"notes,omitempty"`
	// PartNotes are the remarks of each part (PartData...), kept with the
	// part when a later run merges it in.
	PartNotes map[string][]string `json:"part_notes,omitempty"`
	// Origins says, for each part taken from an earlier run by -merge,
	// which run measured it; parts measured by this run are absent.
	Origins map[string]string `json:"origins,omitempty"`
	// Load is the machine's 1-minute load average, sampled every 30 s
	// during the run (what else the machine was doing).
	Load Floats `json:"load,omitempty"`
	// Seconds is how long the run took, with the runs merged into it.
	Seconds float64 `json:"seconds"`
	// OwnSeconds is how long this run alone took.
	OwnSeconds float64 `json:"own_seconds,omitempty"`

	Data    []DataRun      `json:"data,omitempty"`
	Control *ControlResult `json:"control,omitempty"`
	Scale   []ScaleResult  `json:"scale,omitempty"`
	DNS     []DNSRow       `json:"dns,omitempty"`
	Kernel  *KernelResult  `json:"kernel,omitempty"`
	Idle    *IdleResult    `json:"idle,omitempty"`
	VIP     *VIPResult     `json:"vip,omitempty"`
	IPv6    *IPv6Result    `json:"ipv6,omitempty"`
}

// Data-plane metric names, the keys of NetData.Metrics.
const (
	MetricTCP1   = "tcp1_gbps"  // iperf3, 1 stream, Gbit/s
	MetricTCP4   = "tcp4_gbps"  // iperf3, 4 streams, Gbit/s
	MetricRTT50  = "rtt_p50_us" // ping RTT, microseconds
	MetricRTT99  = "rtt_p99_us" // ping RTT, microseconds
	MetricRR     = "rr_per_s"   // TCP request/response transactions per second
	MetricRR99us = "rr_p99_us"  // request/response latency p99, microseconds
	NetUnderlay  = "underlay"   // host namespace to host namespace
	NetOverlay   = "overlay"    // Docker's overlay driver
	NetWeft      = "weft"       // weft
)

// DataMetrics lists the data-plane metrics in report order.
var DataMetrics = []string{MetricTCP1, MetricTCP4, MetricRTT50, MetricRTT99, MetricRR, MetricRR99us}

// DataNets lists the compared paths in report order.
var DataNets = []string{NetUnderlay, NetOverlay, NetWeft}

// DataRun is the data plane measured in one lab, at one underlay MTU.
type DataRun struct {
	UnderlayMTU int       `json:"underlay_mtu"`
	Nets        []NetData `json:"nets"`
}

// NetData is one path's figures: per metric, one value per repetition.
type NetData struct {
	Net     string            `json:"net"`
	MTU     int               `json:"mtu"` // the interface MTU the traffic used
	Metrics map[string]Floats `json:"metrics"`
}

// Net returns the figures of net, or nil.
func (d *DataRun) Net(net string) *NetData {
	for i := range d.Nets {
		if d.Nets[i].Net == net {
			return &d.Nets[i]
		}
	}
	return nil
}

// ControlResult is the control plane measured in the 1500-MTU lab.
type ControlResult struct {
	Hosts int `json:"hosts"`
	// PerRep is how many containers were started per network and
	// repetition.
	PerRep int              `json:"per_rep"`
	Nets   []ControlNetData `json:"nets"`
}

// ControlNetData is one network's control-plane figures.
type ControlNetData struct {
	Net string `json:"net"`
	// RunToReach holds, per repetition, the milliseconds from invoking
	// "docker run" on host A until a container on host B opened a TCP
	// connection to the new container, one per container.
	RunToReach []Floats `json:"run_to_reach_ms"`
	// RunCLI holds, per repetition, how long "docker run -d" itself took.
	RunCLI []Floats `json:"run_cli_ms"`
	// Purge is, per repetition, the seconds from cutting a host off the
	// underlay until no other host had a forwarding entry pointing at it.
	Purge Floats `json:"purge_s"`
	// Return is, per repetition, the seconds from restoring its link until
	// a container on another host reached a container on it again.
	Return Floats `json:"return_s"`
}

// ScaleResult is the simulated mesh at one size.
type ScaleResult struct {
	Members int `json:"members"`
	Entries int `json:"entries"`
	// Converge is, per repetition, the seconds from the first Put until
	// every member held every entry (NaN: not within the timeout).
	Converge Floats `json:"converge_s"`
	// HeapPerK is, per repetition, the live heap added per member per
	// 1,000 entries, in bytes.
	HeapPerK Floats `json:"heap_per_1k_bytes"`
	// CPU is, per repetition, the CPU seconds the whole process (every
	// member) used while converging.
	CPU Floats `json:"cpu_s,omitempty"`
	// ReadPerNeeded is, per repetition, how many entries the members read
	// (merged, or found already held) per entry they lacked: 1 is no
	// redundancy.
	ReadPerNeeded Floats `json:"read_per_needed,omitempty"`
	// Join is the seconds the members took to see each other alive.
	Join float64 `json:"join_s"`
}

// KernelResult is the per-change kernel cost on one device holding Entries
// remote endpoints (see kernel.go). Each series holds one value per
// repetition, in milliseconds.
type KernelResult struct {
	Entries int `json:"entries"`
	// TableAdd and TableRemove: one endpoint added, then removed, by
	// SetRemotes of the whole table (before).
	TableAdd    Floats `json:"table_add_ms"`
	TableRemove Floats `json:"table_remove_ms"`
	// OneAdd and OneRemove: the same by SetRemote and DeleteRemote (after).
	OneAdd    Floats `json:"one_add_ms"`
	OneRemove Floats `json:"one_remove_ms"`
	// Fill is the seconds SetRemotes took to write the whole table into
	// the empty device.
	Fill float64 `json:"fill_s"`
}

// DNSRow is one DNS server under one load.
type DNSRow struct {
	Server  string      `json:"server"` // what answered, e.g. "docker-embedded (overlay)"
	Name    string      `json:"name"`   // the name queried
	Clients int         `json:"clients"`
	Reps    []DNSResult `json:"reps"`
}

// Floats is a series of values, one per repetition or sample; NaN marks
// a missing value and is stored as null in JSON.
type Floats []float64

// MarshalJSON writes NaN and infinities as null.
func (f Floats) MarshalJSON() ([]byte, error) {
	b := []byte{'['}
	for i, x := range f {
		if i > 0 {
			b = append(b, ',')
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			b = append(b, "null"...)
			continue
		}
		b = strconv.AppendFloat(b, x, 'g', -1, 64)
	}
	return append(b, ']'), nil
}

// UnmarshalJSON reads null as NaN.
func (f *Floats) UnmarshalJSON(b []byte) error {
	var raw []*float64
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make(Floats, len(raw))
	for i, p := range raw {
		if p == nil {
			out[i] = math.NaN()
		} else {
			out[i] = *p
		}
	}
	*f = out
	return nil
}

// Save writes r as indented JSON.
func (r *Results) Save(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// LoadResults reads what Save wrote.
func LoadResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
