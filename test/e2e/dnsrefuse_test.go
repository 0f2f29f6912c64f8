package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// TestDNSForwardsForTheNetworkOnly: weft's name server forwards a query
// for a name outside weft only for a client inside the network's subnet.
// A container given CAP_NET_ADMIN on h1 asks its gateway for such a name,
// first from its own address (the positive control: the query is taken
// for forwarding, and with the lab's upstream set to none it ends in
// SERVFAIL), then from an address outside the subnet, its only one then:
// refused, nothing forwarded. Counted by h1's weft_dns_forwards_total.
func TestDNSForwardsForTheNetworkOnly(t *testing.T) {
	l := need(t)
	h1 := l.Hosts[0]
	const gw, outside, name = "10.92.1.1", "192.0.2.9", "weft-e2e.example."
	labtest.CreateSwarmNetwork(t, l, "dnsf", "10.92.1.0/24")
	own := labtest.Run(t, h1, "dnsf-a", "dnsf", "--cap-add", "NET_ADMIN")

	forwards := func() (answered, failed, refused float64) {
		m := labtest.Scrape(t, h1)
		answered, _ = m.Value("weft_dns_forwards_total", "result", "answered")
		failed, _ = m.Value("weft_dns_forwards_total", "result", "failed")
		refused, _ = m.Value("weft_dns_forwards_total", "result", "refused")
		return answered, failed, refused
	}
	ask := func() string {
		out, _ := h1.Docker(context.Background(), "exec", "dnsf-a", "timeout", "4", "nslookup", name, gw)
		return strings.Join(strings.Fields(out), " ")
	}

	// The positive control: weft's server on the gateway takes the query
	// for forwarding (its listener may still be opening: wait for it).
	a0, f0, r0 := forwards()
	var out string
	err := lab.WaitFor(context.Background(), 30*time.Second, 500*time.Millisecond, func() error {
		if out = ask(); !strings.Contains(out, "SERVFAIL") {
			return fmt.Errorf("no SERVFAIL from %s: %s", gw, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("positive control: %v", err)
	}
	a1, f1, r1 := forwards()
	t.Logf("FIGURE from the container's own address %s: %q; forwards answered %+.0f, failed %+.0f, refused %+.0f", own, out, a1-a0, f1-f0, r1-r0)
	if f1 <= f0 || r1 != r0 {
		t.Fatalf("positive control: the query from inside the subnet was not taken for forwarding (failed %v -> %v, refused %v -> %v)", f0, f1, r0, r1)
	}

	// From outside the subnet: the container's only address is 192.0.2.9,
	// with a route to the gateway alone. No answer can come back (the
	// gateway has no route to it); the server's count says what it did.
	for _, args := range [][]string{
		{"ip", "addr", "add", outside + "/32", "dev", "eth0"},
		{"ip", "addr", "del", own + "/24", "dev", "eth0"},
		{"ip", "route", "add", gw, "dev", "eth0", "src", outside},
	} {
		h1.MustDocker(t, append([]string{"exec", "dnsf-a"}, args...)...)
	}
	var a2, f2, r2 float64
	err = lab.WaitFor(context.Background(), 30*time.Second, 500*time.Millisecond, func() error {
		out = ask()
		if a2, f2, r2 = forwards(); r2 <= r1 {
			return fmt.Errorf("no query refused yet (nslookup: %s)", out)
		}
		return nil
	})
	t.Logf("FIGURE from %s, outside the subnet: %q; forwards answered %+.0f, failed %+.0f, refused %+.0f", outside, out, a2-a1, f2-f1, r2-r1)
	if err != nil {
		t.Fatal(err)
	}
	if a2 != a1 || f2 != f1 {
		t.Fatalf("a query from outside the network was taken for forwarding: answered %v -> %v, failed %v -> %v", a1, a2, f1, f2)
	}
	if strings.Contains(out, "SERVFAIL") {
		t.Fatalf("the client outside the subnet got the forwarder's answer: %s", out)
	}
}
