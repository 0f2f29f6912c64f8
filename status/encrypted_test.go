package status

import (
	"bytes"
	"regexp"
	"testing"
)

// Each encrypted link shows its peer, tunnel address, path and
// handshake age; a link without a handshake says so.
func TestRenderLinks(t *testing.T) {
	r := Report{Node: "h1", Links: []Link{
		{Peer: "h2", VTEP: "198.18.0.2", Tunnel: "10.250.0.2", Path: "userspace", HandshakeAgeSeconds: 12.4, RxBytes: 100, TxBytes: 200},
		{Peer: "h3", VTEP: "198.18.0.3", Tunnel: "10.250.0.3", Path: "kernel", HandshakeAgeSeconds: -1},
	}}
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`ENCRYPTED LINK\s+VTEP\s+TUNNEL\s+PATH\s+HANDSHAKE`,
		`h2\s+198\.18\.0\.2\s+10\.250\.0\.2\s+userspace\s+12s ago\s+100/200`,
		`h3\s+198\.18\.0\.3\s+10\.250\.0\.3\s+kernel\s+none yet`,
	} {
		if !regexp.MustCompile(re).MatchString(b.String()) {
			t.Errorf("status lacks %s:\n%s", re, b.String())
		}
	}
	b.Reset()
	_ = Render(&b, Report{Node: "h1"})
	if regexp.MustCompile("ENCRYPTED").MatchString(b.String()) {
		t.Errorf("a host without encrypted links shows the section:\n%s", b.String())
	}
}
