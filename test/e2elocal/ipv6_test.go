package e2elocal

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// TestDualStack: on a network created on each engine with --ipv6 and an
// IPv4 and an IPv6 subnet, addressed by weft's IPAM, a container on each
// host gets a distinct IPv6 address; every container reaches every other
// host's container over IPv6, by ICMP and TCP; weft's name server answers
// AAAA for another host's container's name and the ip6.arpa PTR of its
// address, on the IPv4 gateway and on the IPv6 one. An IPv4-only network
// beside it, with a container on each host, works as before: IPv4 across
// hosts, no IPv6 address given. Every host's kernel holds exactly the
// entries the checker expects (IPv6 neighbour entries on the dual-stack
// network only).
func TestDualStack(t *testing.T) {
	l := need(t)
	ctx := context.Background()
	const gw4, gw6 = "10.92.0.1", "fd00:92::1"
	labtest.CreateLocalDualStackNetwork(t, l, "ds", "10.92.0.0/24", "fd00:92::/64")
	labtest.CreateLocalNetwork(t, l, "ds4", "10.91.0.0/24")
	ds := labtest.RunOnEach(t, l, "ds", "ds", "--dns", gw4)
	v4 := labtest.RunOnEach(t, l, "ds4", "ds4")
	ip6 := map[string]string{}
	seen := map[string]bool{}
	for _, c := range ds {
		a := strings.TrimSpace(c.Host.MustDocker(t, "inspect", "-f", `{{with index .NetworkSettings.Networks "ds"}}{{.GlobalIPv6Address}}{{end}}`, c.Name))
		if !strings.HasPrefix(a, "fd00:92::") || seen[a] {
			t.Fatalf("%s on %s has IPv6 address %q on the dual-stack network (seen: %v)", c.Name, c.Host.Name, a, seen)
		}
		ip6[c.Name], seen[a] = a, true
	}
	for _, c := range v4 {
		if a := strings.TrimSpace(c.Host.MustDocker(t, "inspect", "-f", `{{with index .NetworkSettings.Networks "ds4"}}{{.GlobalIPv6Address}}{{end}}`, c.Name)); a != "" {
			t.Fatalf("%s on the IPv4-only network has IPv6 address %q", c.Name, a)
		}
	}
	labtest.WaitConverged(t, l.Hosts, 60*time.Second)

	start := time.Now()
	for _, from := range ds {
		for _, to := range ds {
			if from.Host != to.Host {
				labtest.Reach(t, from.Host, from.Name, ip6[to.Name], 30*time.Second)
			}
		}
	}
	t.Logf("FIGURE IPv6 ping and TCP between containers on all 6 ordered pairs of hosts within %s", time.Since(start).Round(time.Millisecond))
	for _, from := range v4 {
		for _, to := range v4 {
			if from.Host != to.Host {
				labtest.Reach(t, from.Host, from.Name, to.IP, 30*time.Second)
			}
		}
	}

	// Names: AAAA and PTR of another host's container, asked on both
	// gateways from h1's container.
	h1, target := ds[0], ds[1]
	ptr, err := mdns.ReverseAddr(ip6[target.Name])
	if err != nil {
		t.Fatal(err)
	}
	// A PTR names the container's hostname, as for IPv4.
	hostname := strings.TrimSpace(target.Host.MustDocker(t, "inspect", "-f", "{{.Config.Hostname}}", target.Name))
	for _, server := range []string{gw4, gw6} {
		err := lab.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error {
			out, err := h1.Host.Docker(ctx, "exec", h1.Name, "nslookup", "-type=AAAA", target.Name, server)
			if err != nil || !strings.Contains(out, ip6[target.Name]) {
				return fmt.Errorf("AAAA %s on %s: %v\n%s", target.Name, server, err, out)
			}
			out, err = h1.Host.Docker(ctx, "exec", h1.Name, "nslookup", "-type=PTR", ptr, server)
			if err != nil || !strings.Contains(out, "name = "+hostname+".weft.local") {
				return fmt.Errorf("PTR %s on %s: %v\n%s", ptr, server, err, out)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("FIGURE AAAA %s = %s and its ip6.arpa PTR (%s.weft.local) answered on %s and %s", target.Name, ip6[target.Name], hostname, gw4, gw6)

	// The cost: iperf3, one TCP stream from h1's container to h2's, over
	// IPv4 and over IPv6 in turn, 3 s each, twice.
	h2 := ds[1]
	h2.Host.MustDocker(t, "exec", h2.Name, "iperf3", "-s", "-D")
	rate := func(addr string) float64 {
		t.Helper()
		out := h1.Host.MustDocker(t, "exec", h1.Name, "iperf3", "-c", addr, "-t", "3", "-J")
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.End.SumReceived.BitsPerSecond <= 0 {
			t.Fatalf("iperf3 to %s: %v\n%s", addr, err, out)
		}
		return r.End.SumReceived.BitsPerSecond / 1e9
	}
	var sum4, sum6 float64
	for range 2 {
		sum4 += rate(h2.IP)
		sum6 += rate(ip6[h2.Name])
	}
	t.Logf("FIGURE TCP h1 -> h2 container, one stream: IPv4 %.2f Gbit/s, IPv6 %.2f Gbit/s, IPv6/IPv4 %.2f (mean of 2 runs of 3 s each)", sum4/2, sum6/2, sum6/sum4)
}
