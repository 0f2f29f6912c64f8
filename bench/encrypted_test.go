package bench

import (
	"strings"
	"testing"
)

// The encrypted path's table gives its ratios to plain weft and to the
// underlay of the same run, and is left out of a run without it.
func TestEncryptedTable(t *testing.T) {
	r := &Results{Data: []DataRun{{UnderlayMTU: 1500, Nets: []NetData{
		{Net: NetUnderlay, MTU: 1500, Metrics: map[string]Floats{MetricTCP1: {10}}},
		{Net: NetWeft, MTU: 1450, Metrics: map[string]Floats{MetricTCP1: {8}}},
		{Net: NetWeftEnc, MTU: 1390, Metrics: map[string]Floats{MetricTCP1: {2}}},
	}}}}
	var b strings.Builder
	encryptedTable(&b, r)
	out := b.String()
	for _, s := range []string{"## Encrypted weft network (`-o encrypted`), 1500-byte underlay", "weft 1450, encrypted 1390", "| TCP, 1 stream (Gbit/s) | 2.00 | 0.25 | 0.20 |"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
	r.Data[0].Nets = r.Data[0].Nets[:2]
	b.Reset()
	encryptedTable(&b, r)
	if b.Len() != 0 {
		t.Errorf("a run without the encrypted path got a table:\n%s", b.String())
	}
}
