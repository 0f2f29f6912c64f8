package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/mesh"
)

type fakeMesh struct{}

func (fakeMesh) LocalNode() string { return "h1" }
func (fakeMesh) Members() []mesh.Member {
	return []mesh.Member{{Name: "h1", State: mesh.StateAlive}, {Name: "h2", State: mesh.StateAlive}, {Name: "h3", State: mesh.StateSuspect}, {Name: "h4", State: "down"}}
}
func (fakeMesh) Stats() mesh.Stats { return mesh.Stats{Received: 10, Applied: 7, Digests: 3} }

type fakeNets struct{}

func (fakeNets) Networks() []driver.Network {
	return []driver.Network{
		{ID: "0123456789abcdef0123", VNI: 4242, MTU: 1450, Endpoints: map[string]*driver.Endpoint{"e1": {}, "e2": {}}},
		{ID: "fedcba9876543210fedc", VNI: 4343, MTU: 8950},
	}
}

type fakeCatalog struct{}

func (fakeCatalog) Remote() []catalog.Record {
	return []catalog.Record{{VNI: 4242}, {VNI: 4242}, {VNI: 4242}, {VNI: 99}}
}

type fakeKernel struct{}

func (fakeKernel) EntryCounts(vni uint32) (int, int, error) {
	if vni == 4343 {
		return 0, 0, errors.New("no device")
	}
	return 3, 3, nil
}

// The registry serves the build, Go and process metrics and the parts'
// state, in Prometheus' text format.
func TestScrape(t *testing.T) {
	reg := New("v1.2.3")
	reg.MustRegister(NewState(Sources{Mesh: fakeMesh{}, Networks: fakeNets{}, Catalog: fakeCatalog{}, Kernel: fakeKernel{}, UnderlayMTU: func() int { return 1500 }}))
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("no %s in the scrape", name)
		}
		for _, m := range f.Metric {
			if matches(m, labels) {
				switch {
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Counter != nil:
					return m.Counter.GetValue()
				}
			}
		}
		t.Fatalf("no %s%v in the scrape", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"weft_build_info", []string{"version", "v1.2.3"}, 1},
		{"weft_mesh_members", []string{"state", "alive"}, 2},
		{"weft_mesh_members", []string{"state", "suspect"}, 1},
		{"weft_mesh_members", []string{"state", "dead"}, 0},
		{"weft_mesh_members", []string{"state", "down"}, 1},
		{"weft_mesh_entries_received_total", nil, 10},
		{"weft_mesh_entries_applied_total", nil, 7},
		{"weft_mesh_antientropy_exchanges_total", nil, 3},
		{"weft_networks", nil, 2},
		{"weft_endpoints", []string{"network", "0123456789ab", "vni", "4242", "where", "local"}, 2},
		{"weft_endpoints", []string{"network", "0123456789ab", "where", "remote"}, 3},
		{"weft_endpoints", []string{"network", "fedcba987654", "where", "remote"}, 0},
		{"weft_kernel_entries", []string{"vni", "4242", "table", "fdb"}, 3},
		{"weft_kernel_entries", []string{"vni", "4242", "table", "neighbour"}, 3},
		{"weft_network_mtu_bytes", []string{"vni", "4343"}, 8950},
		{"weft_underlay_mtu_bytes", nil, 1500},
	} {
		if got := value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// A device that cannot be read has no entry count, rather than 0.
	for _, m := range fams["weft_kernel_entries"].Metric {
		if matches(m, []string{"vni", "4343"}) {
			t.Errorf("entries reported for a device that could not be read: %v", m)
		}
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	// A second registry shares nothing with the first.
	if n, err := New("other").Gather(); err != nil || len(n) == 0 {
		t.Fatal(err)
	}
}

func matches(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		ok := false
		for _, l := range m.Label {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
