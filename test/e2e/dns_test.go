package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// resolve asks, from ctr on h, the name server (empty: the container's own
// resolver, Docker's 127.0.0.11, which forwards to --dns) for name, and
// returns the addresses in the answer.
func resolve(h *lab.Host, ctr, name, server string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := []string{"exec", ctr, "nslookup", name}
	if server != "" {
		args = append(args, server)
	}
	out, err := h.Docker(ctx, args...)
	if err != nil {
		return nil, err
	}
	// busybox prints the server first, then "Name:" and the answers.
	_, answer, ok := strings.Cut(out, "Name:")
	if !ok {
		return nil, fmt.Errorf("no answer in %q", out)
	}
	var addrs []string
	for _, f := range strings.Fields(answer) {
		if strings.Count(f, ".") == 3 && f[0] >= '0' && f[0] <= '9' {
			addrs = append(addrs, f)
		}
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// expectName waits until name resolves to exactly want from ctr on h.
func expectName(t *testing.T, h *lab.Host, ctr, name, server string, want ...string) {
	t.Helper()
	slices.Sort(want)
	err := lab.WaitFor(context.Background(), 20*time.Second, 250*time.Millisecond, func() error {
		got, err := resolve(h, ctr, name, server)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s resolves to %v, want %v", name, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s on %s: %v", ctr, h.Name, err)
	}
}

// TestNames: peers named by swarm templates, services, tasks, container
// names and aliases resolve from every host, through weft's server on the
// gateway and through Docker's resolver; unknown weft names do not; names
// go when their container goes.
func TestNames(t *testing.T) {
	l := need(t)
	const gw = "10.96.0.1"
	labtest.CreateSwarmNetwork(t, l, "names", "10.96.0.0/24")
	labtest.CreateService(t, l, "peer", "--network", "names", "--replicas", "3", "--endpoint-mode", "dnsrr",
		"--hostname", "vp{{.Task.Slot}}", "--dns", gw)
	tasks := labtest.ServiceTasks(t, l, "peer", "names", 3, 3*time.Minute)
	bySlot := map[string]string{}
	var all []string
	for h, ts := range tasks {
		for id, ip := range ts {
			bySlot[h.MustDocker(t, "inspect", "-f", "{{.Config.Hostname}}", id)] = ip
			all = append(all, ip)
		}
	}
	if len(bySlot) != 3 {
		t.Fatalf("task hostnames: %v", bySlot)
	}
	cc := map[string]string{}
	for _, h := range l.Hosts {
		name := "cc-" + h.Name
		cc[name] = labtest.Run(t, h, name, "names", "--dns", gw, "--network-alias", "chaincode-"+h.Name)
	}

	for _, h := range l.Hosts {
		ctr := "cc-" + h.Name
		for slot, ip := range bySlot {
			expectName(t, h, ctr, slot, gw, ip)
		}
		expectName(t, h, ctr, "vp2.weft.local", gw, bySlot["vp2"])
		expectName(t, h, ctr, "peer.3", gw, bySlot["vp3"])
		expectName(t, h, ctr, "peer", gw, all...)
		expectName(t, h, ctr, "tasks.peer", gw, all...)
		for other, ip := range cc {
			expectName(t, h, ctr, other, gw, ip)
		}
		expectName(t, h, ctr, "chaincode-h1", gw, cc["cc-h1"])
		// Through Docker's own resolver, which forwards what it does not
		// know to the --dns server.
		expectName(t, h, ctr, "vp1", "", bySlot["vp1"])
		if _, err := resolve(h, ctr, "nosuch.weft.local", gw); err == nil {
			t.Fatalf("%s: nosuch.weft.local resolved", h.Name)
		}
	}
	// Reverse lookups name the peer.
	out := l.Hosts[0].MustDocker(t, "exec", "cc-h1", "nslookup", bySlot["vp1"], gw)
	if !strings.Contains(out, "vp1.weft.local") {
		t.Fatalf("PTR of %s: %s", bySlot["vp1"], out)
	}
	// A peer dials another by name over TCP.
	labtest.Reach(t, l.Hosts[0], "cc-h1", "vp3", 20*time.Second)

	// A removed container's name disappears everywhere.
	l.Hosts[2].MustDocker(t, "rm", "-f", "cc-h3")
	err := lab.WaitFor(context.Background(), 20*time.Second, 250*time.Millisecond, func() error {
		if got, err := resolve(l.Hosts[0], "cc-h1", "cc-h3", gw); err == nil {
			return fmt.Errorf("cc-h3 still resolves to %v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
