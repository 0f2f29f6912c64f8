package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// TestSpoofedSourceDeliversNothing: a container given CAP_NET_ADMIN on h1
// takes the address of a container on h3 (and then its MAC too) and sends
// 20 ICMP echo requests with it to a container on h2: none arrive
// (counted in the target). The positive control: the same container, the
// same commands, with its own address: 20 of 20 arrive.
func TestSpoofedSourceDeliversNothing(t *testing.T) {
	l := need(t)
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	labtest.CreateSwarmNetwork(t, l, "spf", "10.95.0.0/24")
	own := labtest.Run(t, h1, "spf-a", "spf", "--cap-add", "NET_ADMIN")
	target := labtest.Run(t, h2, "spf-t", "spf")
	victim := labtest.Run(t, h3, "spf-v", "spf")
	victimMAC := strings.TrimSpace(h3.MustDocker(t, "inspect", "-f", `{{with index .NetworkSettings.Networks "spf"}}{{.MacAddress}}{{end}}`, "spf-v"))
	labtest.Reach(t, h1, "spf-a", target, 30*time.Second)
	labtest.Reach(t, h1, "spf-a", victim, 30*time.Second)

	// send pings the target 20 times with source src and returns how many
	// echo requests it received (a spoofed source gets no reply, so
	// ping's exit status says nothing).
	send := func(src string) int {
		t.Helper()
		before := icmpInEchos(t, h2, "spf-t")
		_, _ = h1.Docker(context.Background(), "exec", "spf-a", "ping", "-c", "20", "-i", "0.05", "-W", "1", "-I", src, target)
		return icmpInEchos(t, h2, "spf-t") - before
	}
	// dropped is the output chain's last counter: its final drop (the
	// ones before it count broadcast and unknown destinations).
	dropped := func() string {
		out, _ := h1.Exec(context.Background(), "nft", "list", "chain", "ip", "weft_sources", "output")
		last := "no counter"
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "counter") {
				last = strings.TrimSpace(l)
			}
		}
		return last
	}

	h1.MustDocker(t, "exec", "spf-a", "ip", "addr", "add", victim+"/32", "dev", "eth0")
	spoofIP := send(victim)
	t.Logf("FIGURE a container posing as %s (another host's container) by address: %d of 20 echo requests delivered; h1: %s", victim, spoofIP, dropped())
	h1.MustDocker(t, "exec", "spf-a", "ip", "link", "set", "eth0", "address", victimMAC)
	spoofBoth := send(victim)
	t.Logf("FIGURE the same with its MAC too: %d of 20 delivered; h1: %s", spoofBoth, dropped())

	// The positive control: its own address, its own MAC.
	mac := strings.TrimSpace(h1.MustDocker(t, "inspect", "-f", `{{with index .NetworkSettings.Networks "spf"}}{{.MacAddress}}{{end}}`, "spf-a"))
	h1.MustDocker(t, "exec", "spf-a", "ip", "link", "set", "eth0", "address", mac)
	h1.MustDocker(t, "exec", "spf-a", "ip", "addr", "del", victim+"/32", "dev", "eth0")
	var ownGot int
	err := lab.WaitFor(context.Background(), 20*time.Second, 500*time.Millisecond, func() error {
		if ownGot = send(own); ownGot == 0 {
			return errors.New("no echo request arrived")
		}
		return nil
	})
	t.Logf("FIGURE the same container with its own address: %d of 20 delivered", ownGot)
	if err != nil || ownGot < 18 {
		t.Fatalf("positive control failed: %d of 20 echo requests from the container's own address arrived (%v), so 0 spoofed proves nothing", ownGot, err)
	}
	if spoofIP != 0 || spoofBoth != 0 {
		t.Fatalf("spoofed echo requests arrived on another host: %d of 20 with the address, %d with address and MAC", spoofIP, spoofBoth)
	}
}
