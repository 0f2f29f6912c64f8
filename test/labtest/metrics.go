package labtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weftnet/weft/test/lab"
)

// Metrics are one scrape of a plugin's /metrics, by family name.
type Metrics map[string]*dto.MetricFamily

// ScrapeMetrics reads h's plugin's /metrics (the status endpoint, on the
// host's loopback), within 20 seconds.
func ScrapeMetrics(ctx context.Context, h *lab.Host) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := h.Exec(ctx, "wget", "-qO-", "http://127.0.0.1:7951/metrics")
	if err != nil {
		return nil, fmt.Errorf("%s: scrape metrics: %w", h.Name, err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(out + "\n"))
	if err != nil {
		return nil, fmt.Errorf("%s: parse metrics: %w", h.Name, err)
	}
	return fams, nil
}

// Scrape is ScrapeMetrics, failing the test on an error.
func Scrape(t testing.TB, h *lab.Host) Metrics {
	t.Helper()
	m, err := ScrapeMetrics(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Value returns the value of the series of family name whose labels
// include all of labels ("key", "value" pairs), and whether there is
// exactly one such series. Counters, gauges and untyped series only.
func (m Metrics) Value(name string, labels ...string) (float64, bool) {
	var v float64
	n := 0
	for _, s := range m.Series(name, labels...) {
		switch {
		case s.Gauge != nil:
			v = s.Gauge.GetValue()
		case s.Counter != nil:
			v = s.Counter.GetValue()
		case s.Untyped != nil:
			v = s.Untyped.GetValue()
		default:
			continue
		}
		n++
	}
	return v, n == 1
}

// Series returns the series of family name whose labels include labels.
func (m Metrics) Series(name string, labels ...string) []*dto.Metric {
	f := m[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, s := range f.Metric {
		if hasLabels(s, labels) {
			out = append(out, s)
		}
	}
	return out
}

func hasLabels(s *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, lp := range s.Label {
			if lp.GetName() == kv[i] && lp.GetValue() == kv[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
