package bench

import (
	"fmt"
	"strings"
)

// Encrypted networks: the data plane measures a fourth path, a container
// on h1 to one on h2 over a weft network created with -o encrypted
// (WireGuard between the hosts, in the plugin's process where the kernel
// has no WireGuard), back to back with the others, and the report gives
// its figures as ratios of plain weft's and of the underlay's from the
// same run.

const (
	// NetWeftEnc is an encrypted weft network.
	NetWeftEnc = "weft-encrypted"
	encNet     = "wb-enc"
	encSubnet  = "10.201.3.0/24"
)

// encryptedTable writes the encrypted path's figures and ratios.
func encryptedTable(b *strings.Builder, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	for _, d := range r.Data {
		u, wf, en := d.Net(NetUnderlay), d.Net(NetWeft), d.Net(NetWeftEnc)
		if u == nil || wf == nil || en == nil {
			continue
		}
		p("## Encrypted weft network (`-o encrypted`), %d-byte underlay\n\n", d.UnderlayMTU)
		p("h1 → h2, measured back to back with the paths above. Interface MTU: weft %d, encrypted %d.\n\n", wf.MTU, en.MTU)
		p("| figure | encrypted | encrypted ÷ weft | encrypted ÷ underlay |\n|---|---|---|---|\n")
		for _, m := range DataMetrics {
			mn := metricNames[m]
			p("| %s | %s | %s | %s |\n", mn.name, fmtS(Summarize(en.Metrics[m]), mn.prec),
				fmtS(Summarize(Ratios(en.Metrics[m], wf.Metrics[m])), 2),
				fmtS(Summarize(Ratios(en.Metrics[m], u.Metrics[m])), 2))
		}
		p("\n")
	}
}
