package status

import (
	"fmt"
	"io"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/probe"
)

// Health is what a report says of the data path and the kernel's drift,
// beside the tables: the probe's view of every peer, the last hour's
// repairs, and the problems found in them, in plain sentences.

// Probe is the data-path probe's view (probe.Prober).
type Probe struct {
	// Running says whether this host's probe port is open; Error why not.
	Running bool   `json:"running"`
	Error   string `json:"error,omitempty"`
	// Target is the packet size the paths should carry: the networks'
	// MTU (the underlay path's less VXLAN's overhead), in bytes.
	Target int         `json:"target,omitempty"`
	Peers  []ProbePeer `json:"peers,omitempty"`
}

// ProbePeer is the probe's view of one other host.
type ProbePeer struct {
	Name string `json:"name"`
	VTEP string `json:"vtep"`
	// State is ok, unreachable or waiting (not answered yet).
	State string `json:"state"`
	// Unanswered is the seconds since the first probe that is still
	// unanswered, when unreachable.
	Unanswered float64 `json:"unanswered_s,omitempty"`
	// RTT is the smoothed round-trip time in milliseconds.
	RTT float64 `json:"rtt_ms,omitempty"`
	// Largest is the largest packet the path carries, up to the target,
	// in bytes; 0 before it is measured.
	Largest  int    `json:"largest,omitempty"`
	Sent     uint64 `json:"sent"`
	Answered uint64 `json:"answered"`
}

// Repairs counts the kernel entries the periodic repair found drifted
// and fixed in the last hour.
type Repairs struct {
	FDBAdded     int `json:"fdb_added"`
	FDBRemoved   int `json:"fdb_removed"`
	NeighAdded   int `json:"neighbour_added"`
	NeighRemoved int `json:"neighbour_removed"`
}

// ProbeSource is the prober as a report reads it; *probe.Prober.
type ProbeSource interface {
	Running() (bool, string)
	Peers() []probe.PeerStatus
}

// probeView converts the prober's view.
func probeView(p ProbeSource, now time.Time) *Probe {
	if p == nil {
		return nil
	}
	v := &Probe{}
	v.Running, v.Error = p.Running()
	for _, st := range p.Peers() {
		pp := ProbePeer{Name: st.Name, VTEP: st.VTEP.String(), State: st.State, Largest: st.Largest, Sent: st.Sent, Answered: st.Answered}
		if st.State == probe.StateUnreachable {
			pp.Unanswered = math.Round(now.Sub(st.Since).Seconds()*10) / 10
		}
		if st.RTT > 0 {
			pp.RTT = math.Round(float64(st.RTT.Microseconds())) / 1000
		}
		v.Target = max(v.Target, st.Target)
		v.Peers = append(v.Peers, pp)
	}
	return v
}

func repairsOf(r dataplane.Repair) Repairs {
	return Repairs{FDBAdded: r.FDBAdded, FDBRemoved: r.FDBRemoved, NeighAdded: r.NeighAdded, NeighRemoved: r.NeighRemoved}
}

// Problems returns what is wrong in r, worst first, each a sentence a user
// can act on: hosts the mesh or the data path cannot reach, paths that
// carry less than the networks' MTU, kernel entries repaired.
func Problems(r Report) []string {
	var out []string
	peers := map[string]ProbePeer{}
	if r.Probe != nil {
		for _, p := range r.Probe.Peers {
			peers[p.Name] = p
		}
		if !r.Probe.Running && r.Probe.Error != "" {
			out = append(out, "data-path probe not running: "+r.Probe.Error)
		}
	}
	vxlan := "UDP " + portOr(r.VXLANPort, "of VXLAN")
	gossip := "TCP and UDP " + portOr(r.MeshPort, "of the mesh")
	members := append([]Member(nil), r.Members...)
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	var mtu []string
	for _, m := range members {
		if m.Name == r.Node {
			continue
		}
		p, probed := peers[m.Name]
		unanswered := probed && p.State == probe.StateUnreachable
		to := hostPort(p.VTEP, r.VXLANPort)
		switch m.State {
		case "alive":
			if unanswered {
				out = append(out, fmt.Sprintf("%s: mesh alive, but VXLAN to %s unanswered for %s: is %s open between the hosts?", m.Name, to, secs(p.Unanswered), vxlan))
			}
		case "suspect":
			if unanswered {
				out = append(out, fmt.Sprintf("%s: unreachable: mesh suspect, and VXLAN to %s unanswered for %s: is the host up?", m.Name, to, secs(p.Unanswered)))
			} else if probed && p.State == probe.StateOK {
				out = append(out, fmt.Sprintf("%s: mesh suspect (gossip to %s failing), but VXLAN answers: is %s open between the hosts?", m.Name, m.Addr, gossip))
			} else {
				out = append(out, fmt.Sprintf("%s: mesh suspect (gossip to %s failing)", m.Name, m.Addr))
			}
		case "dead":
			out = append(out, fmt.Sprintf("%s: dead in the mesh (no answer on %s): its endpoints are withdrawn from this host", m.Name, m.Addr))
		case "down":
			out = append(out, fmt.Sprintf("%s: weft's plugin is down there (the host answers): its endpoints are kept meanwhile", m.Name))
		}
		if m.State == "alive" && probed && p.State == probe.StateOK && p.Largest > 0 && r.Probe.Target > 0 && p.Largest < r.Probe.Target {
			mtu = append(mtu, fmt.Sprintf("path to %s carries %d bytes, network MTU %d: larger packets are lost on the way; fix the path's MTU, or create networks with -o com.docker.network.driver.mtu=%d",
				m.Name, p.Largest, r.Probe.Target, p.Largest))
		}
	}
	out = append(out, mtu...)
	if s := repairSentence(r.Repairs); s != "" {
		out = append(out, s)
	}
	return out
}

// repairSentence says what the last hour's repairs fixed, or "".
func repairSentence(r Repairs) string {
	var parts []string
	add := func(n int, what string) {
		switch {
		case n == 1:
			parts = append(parts, fmt.Sprintf("1 %s entry", what))
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s entries", n, what))
		}
	}
	add(r.FDBAdded+r.FDBRemoved, "FDB")
	add(r.NeighAdded+r.NeighRemoved, "neighbour")
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, " and ") + " repaired in the last hour: something other than weft changed its kernel entries (or a write failed)"
}

func portOr(port int, what string) string {
	if port == 0 {
		return "port " + what
	}
	return strconv.Itoa(port)
}

func hostPort(host string, port int) string {
	if port == 0 {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// secs renders seconds for people: "40 s", "3 min 5 s".
func secs(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%d s", int(d.Seconds()))
	}
	if d < time.Hour {
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
}

// renderHealth writes the problems, first in the report.
func renderHealth(w io.Writer, r Report) {
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "no problems found")
	} else {
		fmt.Fprintln(w, "PROBLEMS")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	fmt.Fprintln(w)
}

// renderProbe writes the data-path table.
func renderProbe(tw *tabwriter.Writer, r Report) {
	p := r.Probe
	if p == nil {
		return
	}
	fmt.Fprintf(tw, "\nDATA PATH (probed through VXLAN port %d", r.VXLANPort)
	if p.Target > 0 {
		fmt.Fprintf(tw, ", up to %d bytes", p.Target)
	}
	fmt.Fprintln(tw, ")")
	if !p.Running {
		fmt.Fprintf(tw, "probe not running: %s\n", p.Error)
		return
	}
	fmt.Fprintln(tw, "PEER\tVTEP\tSTATE\tRTT\tLARGEST\tANSWERED")
	for _, pp := range p.Peers {
		state := pp.State
		if pp.State == probe.StateUnreachable {
			state += " for " + secs(pp.Unanswered)
		}
		rtt, largest := "-", "-"
		if pp.RTT > 0 {
			rtt = strconv.FormatFloat(pp.RTT, 'f', 3, 64) + " ms"
		}
		if pp.Largest > 0 {
			largest = strconv.Itoa(pp.Largest)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\n", pp.Name, pp.VTEP, state, rtt, largest, pp.Answered, pp.Sent)
	}
	probed := map[string]bool{}
	for _, pp := range p.Peers {
		probed[pp.Name] = true
	}
	for _, m := range r.Members {
		if m.Name != r.Node && m.State == "alive" && !probed[m.Name] {
			host, _, _ := net.SplitHostPort(m.Addr)
			fmt.Fprintf(tw, "%s\t%s\tnot probed (it announces no probe: an older build?)\t-\t-\t-\n", m.Name, host)
		}
	}
}
