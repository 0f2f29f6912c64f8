package labtest

import (
	"slices"
	"strings"
	"testing"
)

func TestQueryMetrics(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`weft_probe_reachable{instance=~"$instance"}`, []string{"weft_probe_reachable"}},
		{`sum by (le) (rate(weft_dns_query_duration_seconds_bucket{instance=~"weft_x"}[5m]))`, []string{"weft_dns_query_duration_seconds_bucket"}},
		{`weft_build_info{go_version="go1.25"} * on (instance) group_left process_resident_memory_bytes`, []string{"weft_build_info", "process_resident_memory_bytes"}},
		{`count(weft_a < on (instance) group_left weft_b)`, []string{"weft_a", "weft_b"}},
		{`label_values(weft_build_info, instance)`, []string{"weft_build_info"}},
	} {
		if got := QueryMetrics(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("QueryMetrics(%s) = %v, want %v", c.expr, got, c.want)
		}
	}
}

// The dashboard in docs/ parses, and every query uses at least one of
// weft's metrics (the e2e test checks that each exists in a real scrape).
func TestDashboardParses(t *testing.T) {
	qs, err := DashboardQueries("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) < 10 {
		t.Fatalf("%d panels with queries", len(qs))
	}
	for title, exprs := range qs {
		for _, e := range exprs {
			names := QueryMetrics(e)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q uses none of weft's metrics", title, e)
			}
			for _, n := range names {
				if strings.HasPrefix(n, "weft_") && strings.HasSuffix(n, "_total") && !strings.Contains(e, "rate(") && !strings.Contains(e, "increase(") {
					t.Errorf("panel %q: counter %s used without rate or increase", title, n)
				}
			}
		}
	}
}
