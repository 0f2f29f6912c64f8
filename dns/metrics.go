package dns

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// serverMetrics counts the name server's queries and what became of them,
// in the registry given in Config.Registry. Every query is counted once
// in queries and timed; answers, NXDOMAIN and forwards say how it was
// answered (the rest, malformed or refused queries, are the difference).
type serverMetrics struct {
	queries  prometheus.Counter
	answers  prometheus.Counter
	nxdomain prometheus.Counter
	forwards *prometheus.CounterVec
	duration prometheus.Histogram
}

func newServerMetrics(reg prometheus.Registerer) *serverMetrics {
	m := &serverMetrics{
		queries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_dns_queries_total",
			Help: "Queries weft's name server received, on every network's gateway.",
		}),
		answers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_dns_answers_total",
			Help: "Queries answered from weft's names (a container's name, alias, service, task or address).",
		}),
		nxdomain: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_dns_nxdomain_total",
			Help: "Queries for names in weft's domain that no container holds (NXDOMAIN).",
		}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_dns_forwards_total",
			Help: "Queries for names outside weft, by result: answered by an upstream resolver; failed (none answered, none is set, or too many in flight); refused (the client is not on the network).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_dns_query_duration_seconds",
			Help:    "Time from a query's arrival to its answer, forwarded queries included.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}),
	}
	for _, r := range []string{forwardAnswered, forwardFailed, forwardRefused} {
		m.forwards.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.queries, m.answers, m.nxdomain, m.forwards, m.duration)
	}
	return m
}

// answered counts one query, begun at start, once it is answered (or
// dropped). What the answer was is counted where it is decided: answers
// and NXDOMAIN in Server.answer, forwards in Server.forward.
func (m *serverMetrics) answered(start time.Time) {
	m.queries.Inc()
	m.duration.Observe(time.Since(start).Seconds())
}

// Results of a query for a name outside weft.
const (
	forwardAnswered = "answered"
	forwardFailed   = "failed"
	forwardRefused  = "refused"
)

// forwarded counts one query for a name outside weft, by result.
func (m *serverMetrics) forwarded(result string) {
	m.forwards.WithLabelValues(result).Inc()
}
