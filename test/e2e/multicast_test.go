package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

const mcastImage = "weft-e2e/mcastprobe:latest"

// TestMulticastAndBroadcast: on a network created with -o
// weft.multicast=true, a sender on h1 sends to a multicast group and to
// the subnet's broadcast address, and the receivers on h2 and h3 (members
// of the group) all receive both; on a network without the option, beside
// it, the same sends reach neither (while unicast from the same sender
// does: the control). Every host's kernel holds exactly the flood entries
// the checker expects (one per other host with endpoints on the multicast
// network, none on the other). The figure: VXLAN packets h1 sends per
// multicast datagram (one copy per other host with endpoints).
func TestMulticastAndBroadcast(t *testing.T) {
	l := need(t)
	ctx := context.Background()
	h1 := l.Hosts[0]
	bin := labtest.GoImage(t, l, "github.com/weftnet/weft/test/mcastprobe", mcastImage)
	labtest.NoLeaksAfter(t, l, "mcast", "nomcast")
	const (
		mcSubnet, mcBcast = "10.93.0.0/24", "10.93.0.255"
		noSubnet, noBcast = "10.94.0.0/24", "10.94.0.255"
		group             = "239.9.9.9"
	)
	labtest.CreateSwarmNetwork(t, l, "mcast", mcSubnet, "weft.multicast=true")
	labtest.CreateSwarmNetwork(t, l, "nomcast", noSubnet)

	// A listener per network on h2 and h3: a member of the group, bound to
	// the port on every address (the broadcast too).
	type listener struct {
		h    *lab.Host
		name string
		ip   string
	}
	listen := func(h *lab.Host, network, subnet string) listener {
		name := network + "-rx-" + h.Name
		h.MustDocker(t, "run", "-d", "--name", name, "--network", network, mcastImage, "listen", subnet, group, "5000")
		t.Cleanup(func() { _, _ = h.Docker(context.Background(), "rm", "-f", name) })
		if err := lab.WaitFor(ctx, 60*time.Second, 200*time.Millisecond, func() error {
			if out, _ := h.Docker(ctx, "logs", name); !strings.Contains(out, "listening") {
				return fmt.Errorf("%s: not listening yet: %q", name, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return listener{h: h, name: name, ip: labtest.ContainerIP(t, h, name, network)}
	}
	got := func(r listener, msg string) bool {
		out, _ := r.h.Docker(ctx, "logs", r.name)
		return strings.Contains(out, "got "+msg+" ")
	}
	var mc, no []listener
	for _, h := range l.Hosts[1:] {
		mc = append(mc, listen(h, "mcast", mcSubnet))
		no = append(no, listen(h, "nomcast", noSubnet))
	}
	// The sender's container on h1 stays up, so h1 has endpoints on both
	// networks; each send is a run of the probe inside it.
	labtest.Run(t, h1, "mc-tx", "mcast")
	labtest.Run(t, h1, "no-tx", "nomcast")
	h1.MustDocker(t, "cp", bin, "mc-tx:/tmp/mcastprobe")
	h1.MustDocker(t, "cp", bin, "no-tx:/tmp/mcastprobe")
	send := func(ctr, subnet, to, msg string, count int) {
		t.Helper()
		h1.MustDocker(t, "exec", ctr, "/tmp/mcastprobe", "send", subnet, to, msg, strconv.Itoa(count))
	}
	labtest.WaitConverged(t, l.Hosts, 60*time.Second)

	// The multicast network: every receiver gets both, resent until they
	// do (the entries may still be on their way to h1 right after the
	// containers start).
	for _, tc := range []struct{ to, msg string }{{group + ":5000", "mc-group"}, {mcBcast + ":5000", "mc-bcast"}} {
		err := lab.WaitFor(ctx, 30*time.Second, 0, func() error {
			send("mc-tx", mcSubnet, tc.to, tc.msg, 1)
			for _, r := range mc {
				if !got(r, tc.msg) {
					return fmt.Errorf("%s on %s has not received %s", r.name, r.h.Name, tc.msg)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("multicast network: %v", err)
		}
	}
	t.Logf("FIGURE multicast network: a multicast datagram and a broadcast from h1 reached the receivers on h2 and h3")

	// The network without the option: 5 of each reach no one, while
	// unicast from the same container reaches every receiver.
	send("no-tx", noSubnet, group+":5000", "no-group", 5)
	send("no-tx", noSubnet, noBcast+":5000", "no-bcast", 5)
	for _, r := range no {
		if err := lab.WaitFor(ctx, 20*time.Second, 0, func() error {
			send("no-tx", noSubnet, r.ip+":5000", "no-unicast", 1)
			if !got(r, "no-unicast") {
				return fmt.Errorf("%s on %s has not received unicast", r.name, r.h.Name)
			}
			return nil
		}); err != nil {
			t.Fatalf("control: %v", err)
		}
		if got(r, "no-group") || got(r, "no-bcast") {
			out, _ := r.h.Docker(ctx, "logs", r.name)
			t.Fatalf("on a network without weft.multicast, %s on %s received broadcast or multicast:\n%s", r.name, r.h.Name, out)
		}
	}

	// The cost: VXLAN packets h1 sends per multicast datagram.
	vni := strings.TrimSpace(l.Manager().MustDocker(t, "network", "inspect", "-f", `{{index .Options "weft.vni"}}`, "mcast"))
	dev := "weft" + vni
	tx := func() int {
		out, err := h1.Exec(ctx, "cat", "/sys/class/net/"+dev+"/statistics/tx_packets")
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	const n = 50
	before := tx()
	send("mc-tx", mcSubnet, group+":5000", "mc-count", n)
	copies := float64(tx()-before) / n
	t.Logf("FIGURE VXLAN packets sent by h1 per multicast datagram, 2 other hosts with endpoints: %.2f", copies)
	if copies < 2 || copies > 2.5 {
		t.Errorf("%.2f VXLAN packets per multicast datagram, want 2 (one per other host)", copies)
	}
}
