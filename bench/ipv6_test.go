package bench

import (
	"strings"
	"testing"
	"time"
)

// The IPv6 part's table gives IPv6's figures as ratios of IPv4's from the
// same run, is left out of a run without the part, and a run of another
// part keeps it from the results merged in.
func TestIPv6Table(t *testing.T) {
	r := &Results{IPv6: &IPv6Result{UnderlayMTU: 1500, Nets: []NetData{
		{Net: NetWeft4, MTU: 1450, Metrics: map[string]Floats{MetricTCP1: {8, 10}}},
		{Net: NetWeft6, MTU: 1450, Metrics: map[string]Floats{MetricTCP1: {6, 9}}},
	}}}
	var b strings.Builder
	ipv6Table(&b, r)
	out := b.String()
	for _, s := range []string{"## IPv6 on a dual-stack weft network, 1500-byte underlay", "Interface MTU 1450", "| TCP, 1 stream (Gbit/s) | 9.00 (8.00–10.00) | 7.50 (6.00–9.00) | 0.82 (0.75–0.90) |"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
	b.Reset()
	ipv6Table(&b, &Results{})
	if b.Len() != 0 {
		t.Errorf("a run without the IPv6 part got a table:\n%s", b.String())
	}

	o := &Options{Parts: []string{PartKernel}}
	r.Date, r.Commit = time.Date(2026, 11, 30, 21, 0, 0, 0, time.UTC), "aaaa"
	m := merged(&Results{Date: r.Date.Add(time.Hour), Commit: "bbbb", Kernel: &KernelResult{}}, r, o)
	if m.IPv6 != r.IPv6 || !strings.Contains(m.Origins[PartIPv6], "commit aaaa") {
		t.Errorf("a kernel run merged over an IPv6 one: ipv6 %v, origin %q", m.IPv6, m.Origins[PartIPv6])
	}
	if got := hostPort("fd00:201:4::2", rrPort); got != "[fd00:201:4::2]:7000" {
		t.Errorf("hostPort = %q", got)
	}
}
