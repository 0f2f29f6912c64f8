package labtest

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// DashboardQueries returns every query of a Grafana dashboard's panels
// (rows' nested panels included) and of its templating, by panel title.
func DashboardQueries(path string) (map[string][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string][]string{}
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out[p.Title] = append(out[p.Title], t.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			if s, ok := q["query"].(string); ok {
				out["variable "+v.Name] = append(out["variable "+v.Name], s)
			}
		}
	}
	return out, nil
}

type dashPanel struct {
	Title   string                  `json:"title"`
	Targets []struct{ Expr string } `json:"targets"`
	Panels  []dashPanel             `json:"panels"`
}

var (
	quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	// A metric name as weft's queries use them (weft's own, and the
	// process_ and go_ metrics of its registry), not followed by a label
	// matcher's operator.
	metricName = regexp.MustCompile(`\b((?:weft|process|go)_[a-zA-Z0-9_]*)\b\s*([=!~]?)`)
)

// QueryMetrics returns the metric names a PromQL expression uses.
func QueryMetrics(expr string) []string {
	expr = quoted.ReplaceAllString(expr, `""`)
	var out []string
	for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
		if m[2] != "" {
			continue // a label name
		}
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// MissingMetrics returns the names of names that m has no family for; a
// histogram's _bucket, _sum and _count series count as its family.
func (m Metrics) MissingMetrics(names []string) []string {
	var out []string
	for _, n := range names {
		if m[n] != nil {
			continue
		}
		found := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok {
				if f := m[base]; f != nil && (f.GetType() == dto.MetricType_HISTOGRAM || (suffix != "_bucket" && f.GetType() == dto.MetricType_SUMMARY)) {
					found = true
				}
			}
		}
		if !found {
			out = append(out, n)
		}
	}
	return out
}
