package plugin

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigFromEnv(t *testing.T) {
	c, err := ConfigFromEnv(env(nil))
	if err != nil || c.MeshPort != 7950 || c.VXLANPort != 4790 || c.Scope != "global" {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	for _, p := range []int{c.MeshPort, c.VXLANPort} {
		if p == 2377 || p == 7946 || p == 4789 {
			t.Fatalf("default port %d collides with Docker's", p)
		}
	}
	if c.DownGrace != 10*time.Minute {
		t.Fatalf("default down grace %s, want 10m", c.DownGrace)
	}
	if !c.SourceFilter {
		t.Fatal("the source filter is off by default")
	}
	if c, err := ConfigFromEnv(env(map[string]string{"WEFT_SOURCE_FILTER": "false"})); err != nil || c.SourceFilter {
		t.Fatalf("WEFT_SOURCE_FILTER=false: %+v, %v", c.SourceFilter, err)
	}
	c, err = ConfigFromEnv(env(map[string]string{"WEFT_PEERS": "198.18.0.1, 198.18.0.2:7950", "LOG_LEVEL": "debug", "WEFT_SCOPE": "local", "WEFT_DOWN_GRACE": "1h30m", "WEFT_METRICS_ADDR": "0.0.0.0:9795"}))
	if err != nil || len(c.Peers) != 2 || c.Scope != "local" || c.DownGrace != 90*time.Minute || c.MetricsAddr != "0.0.0.0:9795" {
		t.Fatalf("settings: %+v, %v", c, err)
	}
	if c, err = ConfigFromEnv(env(map[string]string{"WEFT_DOWN_GRACE": "0"})); err != nil || c.DownGrace != 0 {
		t.Fatalf("no down grace: %+v, %v", c, err)
	}
	_, err = ConfigFromEnv(env(map[string]string{"WEFT_PEERS": "nohost", "WEFT_MESH_PORT": "99999", "WEFT_STATUS_ADDR": "0.0.0.0:1", "LOG_LEVEL": "loud", "WEFT_DOWN_GRACE": "a while", "WEFT_METRICS_ADDR": "nohost:x"}))
	if err == nil {
		t.Fatal("bad settings accepted")
	}
	for _, want := range []string{"WEFT_PEERS", "WEFT_MESH_PORT", "WEFT_STATUS_ADDR", "LOG_LEVEL", "WEFT_DOWN_GRACE", "WEFT_METRICS_ADDR"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
