package e2elocal

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// TestEncryptedLocalNetwork: `-o encrypted` in local mode, the network
// created on every engine as local mode wants: a container on each host
// reaches the two others, and each host shows an encrypted link to each
// other host, on the userspace path, with a handshake.
func TestEncryptedLocalNetwork(t *testing.T) {
	l := need(t)
	const network, subnet = "encl", "10.43.0.0/24"
	plugin := l.Config().PluginName
	for _, h := range l.Hosts {
		h.MustDocker(t, "network", "create", "-d", plugin, "--ipam-driver", plugin, "--subnet", subnet, "-o", "encrypted", network)
	}
	var cs []labtest.Ctr
	for i, h := range l.Hosts {
		cs = append(cs, labtest.Ctr{Host: h, Name: fmt.Sprintf("encl%d", i+1)})
	}
	t.Cleanup(func() {
		for _, c := range cs {
			_, _ = c.Host.Docker(context.Background(), "rm", "-f", c.Name)
		}
		for _, h := range l.Hosts {
			if err := labtest.RemoveNetwork(context.Background(), h, network, 50*time.Second); err != nil {
				t.Logf("network %s left on %s: %v", network, h.Name, err)
			}
		}
	})
	cs = startMany(t, network, "10.43.0.1", cs)
	meshReach(t, cs, func(c labtest.Ctr) string { return c.IP }, time.Minute)
	for _, h := range l.Hosts {
		rep := labtest.Status(t, h)
		t.Logf("%s's encrypted links: %+v", h.Name, rep.Links)
		if len(rep.Links) != len(l.Hosts)-1 {
			t.Errorf("%s shows %d encrypted links, want %d: %+v", h.Name, len(rep.Links), len(l.Hosts)-1, rep.Links)
		}
		for _, lk := range rep.Links {
			if lk.Path != "userspace" || lk.HandshakeAgeSeconds < 0 {
				t.Errorf("%s: link %+v: want the userspace path with a handshake", h.Name, lk)
			}
		}
	}
	// Peers are the hosts with an endpoint on an encrypted network: h3's
	// last one goes (the network stays there), so h3 closes its tunnel
	// and the others drop it.
	h1, h3 := l.Hosts[0], l.Hosts[2]
	h3.MustDocker(t, "rm", "-f", cs[2].Name)
	start := time.Now()
	err := lab.WaitFor(context.Background(), 30*time.Second, 250*time.Millisecond, func() error {
		if n := len(labtest.Status(t, h1).Links); n != 1 {
			return fmt.Errorf("h1 shows %d encrypted links", n)
		}
		if n := len(labtest.Status(t, h3).Links); n != 0 {
			return fmt.Errorf("h3 shows %d encrypted links", n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("h3's last encrypted endpoint removed: %v", err)
	}
	t.Logf("h3's last encrypted endpoint removed: h3 closed its tunnel and h1 dropped h3 within %s", time.Since(start).Round(10*time.Millisecond))
	labtest.Reach(t, h1, cs[0].Name, cs[1].IP, 10*time.Second)
}
