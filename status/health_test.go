package status

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/probe"
)

func TestProblems(t *testing.T) {
	base := func() Report {
		return Report{
			Node: "h1", VXLANPort: 4790, MeshPort: 7950,
			Members: []Member{
				{Name: "h1", Addr: "198.18.0.1:7950", State: "alive"},
				{Name: "h2", Addr: "198.18.0.2:7950", State: "alive"},
				{Name: "h3", Addr: "198.18.0.3:7950", State: "alive"},
			},
			Probe: &Probe{Running: true, Target: 1450, Peers: []ProbePeer{
				{Name: "h2", VTEP: "198.18.0.2", State: "ok", Largest: 1450},
				{Name: "h3", VTEP: "198.18.0.3", State: "ok", Largest: 1450},
			}},
		}
	}
	for _, tc := range []struct {
		name   string
		change func(r *Report)
		want   []string
	}{
		{"all well", func(r *Report) {}, nil},
		{"blocked VXLAN port", func(r *Report) {
			r.Probe.Peers[1] = ProbePeer{Name: "h3", VTEP: "198.18.0.3", State: "unreachable", Unanswered: 40.2, Largest: 1450}
		}, []string{"h3: mesh alive, but VXLAN to 198.18.0.3:4790 unanswered for 40 s: is UDP 4790 open between the hosts?"}},
		{"MTU black hole", func(r *Report) {
			r.Probe.Peers[0].Largest = 1400
		}, []string{"path to h2 carries 1400 bytes, network MTU 1450: larger packets are lost on the way; fix the path's MTU, or create networks with -o com.docker.network.driver.mtu=1400"}},
		{"repairs", func(r *Report) {
			r.Repairs = Repairs{FDBAdded: 1, FDBRemoved: 1, NeighAdded: 1}
		}, []string{"2 FDB entries and 1 neighbour entry repaired in the last hour: something other than weft changed its kernel entries (or a write failed)"}},
		{"host down", func(r *Report) {
			r.Members[2].State = "suspect"
			r.Probe.Peers[1] = ProbePeer{Name: "h3", VTEP: "198.18.0.3", State: "unreachable", Unanswered: 200}
		}, []string{"h3: unreachable: mesh suspect, and VXLAN to 198.18.0.3:4790 unanswered for 3 min 20 s: is the host up?"}},
		{"gossip blocked", func(r *Report) {
			r.Members[1].State = "suspect"
		}, []string{"h2: mesh suspect (gossip to 198.18.0.2:7950 failing), but VXLAN answers: is TCP and UDP 7950 open between the hosts?"}},
		{"dead", func(r *Report) {
			r.Members[2].State = "dead"
			r.Probe.Peers = r.Probe.Peers[:1]
		}, []string{"h3: dead in the mesh (no answer on 198.18.0.3:7950): its endpoints are withdrawn from this host"}},
		{"left and waiting are no problem", func(r *Report) {
			r.Members[2].State = "left"
			r.Probe.Peers[0].State, r.Probe.Peers[0].Largest = "waiting", 0
		}, nil},
		{"probe not running", func(r *Report) {
			r.Probe = &Probe{Error: "create the probe device: file exists"}
		}, []string{"data-path probe not running: create the probe device: file exists"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.change(&r)
			if got := Problems(r); !slices.Equal(got, tc.want) {
				t.Fatalf("Problems:\n  %q\nwant\n  %q", got, tc.want)
			}
		})
	}
}

// The rendered status leads with the problems, then the tables, the data
// path among them.
func TestRenderLeadsWithProblems(t *testing.T) {
	r := Report{Node: "h1", VXLANPort: 4790, Members: []Member{{Name: "h1", State: "alive"}, {Name: "h2", Addr: "198.18.0.2:7950", State: "alive"}, {Name: "old", Addr: "198.18.0.9:7950", State: "alive"}},
		Probe: &Probe{Running: true, Target: 1450, Peers: []ProbePeer{{Name: "h2", VTEP: "198.18.0.2", State: "unreachable", Unanswered: 12, Sent: 20, Answered: 8}}}}
	r.Problems = Problems(r)
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "PROBLEMS\n  h2: mesh alive, but VXLAN to 198.18.0.2:4790 unanswered for 12 s") {
		t.Fatalf("status does not lead with the problem:\n%s", out)
	}
	for _, s := range []string{"DATA PATH (probed through VXLAN port 4790, up to 1450 bytes)", "h2    198.18.0.2  unreachable for 12 s", "8/20", "old   198.18.0.9  not probed"} {
		if !strings.Contains(out, s) {
			t.Errorf("status lacks %q:\n%s", s, out)
		}
	}
	r.Problems = nil
	b.Reset()
	_ = Render(&b, r)
	if !strings.HasPrefix(b.String(), "no problems found\n") {
		t.Fatalf("a status without problems:\n%s", b.String())
	}
}

// The prober's view converts as the report shows it.
func TestProbeView(t *testing.T) {
	now := time.Now()
	v := probeView(fakeProbe{}, now.Add(0))
	if !v.Running || v.Target != 1450 || len(v.Peers) != 2 {
		t.Fatalf("view %+v", v)
	}
	if p := v.Peers[1]; p.State != "unreachable" || p.Unanswered < 9.9 || p.Unanswered > 10.1 || p.RTT != 0 {
		t.Fatalf("unreachable peer %+v", p)
	}
	if p := v.Peers[0]; p.RTT != 0.25 || p.Largest != 1450 {
		t.Fatalf("peer %+v", p)
	}
}

type fakeProbe struct{}

func (fakeProbe) Running() (bool, string) { return true, "" }
func (fakeProbe) Peers() []probe.PeerStatus {
	return []probe.PeerStatus{
		{Name: "h2", State: probe.StateOK, RTT: 250 * time.Microsecond, Largest: 1450, Target: 1450},
		{Name: "h3", State: probe.StateUnreachable, Since: time.Now().Add(-10 * time.Second), Target: 1450},
	}
}
