package dns

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Every query is counted and timed, and counted once more by what became
// of it: an answer from weft's names, NXDOMAIN in weft's domain, or a
// forward (answered or failed).
func TestServerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Registry = reg
	cfg.Upstreams = []string{"127.0.0.1:1"} // nothing answers there
	cfg.ForwardTimeout = 100 * time.Millisecond
	s := NewServer(cfg, testTable())
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", pc.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	ls := s.Serve(7, netip.MustParsePrefix("127.0.0.0/8"), pc, l)
	t.Cleanup(ls.Close)
	addr := pc.LocalAddr().String()

	m := s.metrics
	wait := func(what string, c prometheus.Collector, want float64) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for testutil.ToFloat64(c) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v, want %v", what, testutil.ToFloat64(c), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	query(t, "udp", addr, "vp1.", mdns.TypeA)
	query(t, "tcp", addr, "2.0.7.10.in-addr.arpa.", mdns.TypePTR)
	wait("answers", m.answers, 2)
	query(t, "udp", addr, "nobody.weft.local.", mdns.TypeA)
	wait("nxdomain", m.nxdomain, 1)
	if r := query(t, "udp", addr, "example.org.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("forward to a dead upstream: %s", mdns.RcodeToString[r.Rcode])
	}
	wait("failed forwards", m.forwards.WithLabelValues("failed"), 1)
	wait("queries", m.queries, 4)
	wait("answered forwards", m.forwards.WithLabelValues("answered"), 0)
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Fatalf("%d duration histograms", n)
	}
	if got, err := testutil.GatherAndCount(reg, "weft_dns_queries_total", "weft_dns_answers_total", "weft_dns_nxdomain_total", "weft_dns_forwards_total", "weft_dns_query_duration_seconds"); err != nil || got != 7 {
		t.Fatalf("registry: %d series (%v), want 7", got, err)
	}
}
