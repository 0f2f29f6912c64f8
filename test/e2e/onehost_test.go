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

// TestOneHost: a weft network used by a swarm service constrained to one
// host and by a plain container on that host; isolation from a second
// weft network; the way out through Docker's gateway bridge; a plugin
// restart under running containers; and nothing left behind.
func TestOneHost(t *testing.T) {
	l := need(t)
	h := l.Hosts[0]
	labtest.CreateSwarmNetwork(t, l, "one-a", "10.91.1.0/24")
	labtest.CreateSwarmNetwork(t, l, "one-b", "10.91.2.0/24")

	labtest.CreateService(t, l, "one-svc", "--network", "one-a", "--replicas", "2", "--endpoint-mode", "dnsrr",
		"--constraint", "node.hostname=="+h.Name)
	tasks := labtest.ServiceTasks(t, l, "one-svc", "one-a", 2, 3*time.Minute)
	var ids, ips []string
	for id, ip := range tasks[h] {
		ids = append(ids, id)
		ips = append(ips, ip)
		if !strings.HasPrefix(ip, "10.91.1.") {
			t.Fatalf("task %s has address %s, not one of swarm's in 10.91.1.0/24", id, ip)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("tasks on %s: %v", h.Name, tasks)
	}

	// The task's weft interface: the macvlan child, with the device's MTU.
	if mtu := labtest.WeftMTU(t, h, ids[0]); mtu != 1450 {
		t.Fatalf("the task's weft interface has MTU %d, want 1450", mtu)
	}

	labtest.Reach(t, h, ids[0], ips[1], 30*time.Second)
	labtest.Reach(t, h, ids[1], ips[0], 30*time.Second)

	ctrIP := labtest.Run(t, h, "one-ctr", "one-a")
	labtest.Reach(t, h, "one-ctr", ips[0], 30*time.Second)
	labtest.Reach(t, h, ids[1], ctrIP, 30*time.Second)

	// A container on the second network reaches neither way.
	otherIP := labtest.Run(t, h, "one-other", "one-b")
	labtest.Unreachable(t, h, "one-ctr", otherIP)
	labtest.Unreachable(t, h, "one-other", ctrIP)
	labtest.Unreachable(t, h, "one-other", ips[0])

	// Outside: the underlay bridge's address, through docker_gwbridge.
	gw := l.Config().Underlay.Addr().String()
	if err := labtest.CanPing(h, "one-ctr", gw); err != nil {
		t.Fatalf("container cannot reach the underlay %s through the gateway bridge: %v", gw, err)
	}

	// Disabling the plugin must not take the interfaces away.
	h.MustDocker(t, "plugin", "disable", "-f", pluginName)
	if err := labtest.CanPing(h, "one-ctr", ips[0]); err != nil {
		t.Fatalf("traffic stopped with the plugin disabled: %v", err)
	}
	h.MustDocker(t, "plugin", "enable", pluginName)
	labtest.Reach(t, h, "one-ctr", ips[1], 30*time.Second)
	labtest.Reach(t, h, ids[0], ctrIP, 30*time.Second)
	if out := h.MustDocker(t, "exec", "one-ctr", "ip", "-o", "addr", "show"); !strings.Contains(out, ctrIP+"/24") {
		t.Fatalf("container lost its weft address after the plugin restart:\n%s", out)
	}

	// Take it all down: no device or interface of weft's may remain.
	l.Manager().MustDocker(t, "service", "rm", "one-svc")
	h.MustDocker(t, "rm", "-f", "one-ctr", "one-other")
	for _, n := range []string{"one-a", "one-b"} {
		err := lab.WaitFor(context.Background(), time.Minute, 500*time.Millisecond, func() error {
			_, err := l.Manager().Docker(context.Background(), "network", "rm", n)
			return err
		})
		if err != nil {
			t.Fatalf("network rm %s: %v", n, err)
		}
	}
	labtest.WaitNoWeftLinks(t, h, 30*time.Second)
}

// TestBadNetworkOptions: swarm allocates networks asynchronously, so
// `docker network create --scope swarm` cannot show the driver's refusal;
// a refused option must leave a network that no container can join, with
// weft's sentence in the manager's log, and no device on any host.
func TestBadNetworkOptions(t *testing.T) {
	l := need(t)
	m := l.Manager()
	cases := []struct {
		opt, want string
	}{
		{"bogus=1", `weft: unknown option \"bogus\" for the weft driver`},
		{"weft.vni=0", `weft: option weft.vni=\"0\" is not a VNI`},
		{"com.docker.network.driver.mtu=10", `weft: option com.docker.network.driver.mtu=\"10\" is not an MTU`},
		{"weft.vni=4242", "weft: VNI 4242 is already used by network"},
	}
	// The VNI the last case asks for is taken by a network no host runs yet.
	labtest.CreateSwarmNetwork(t, l, "bad-first", "10.92.9.0/24", "weft.vni=4242")
	for i, c := range cases {
		name := fmt.Sprintf("bad-%d", i)
		m.MustDocker(t, "network", "create", "-d", pluginName, "--scope", "swarm", "--attachable", "--subnet", fmt.Sprintf("10.92.%d.0/24", i), "-o", c.opt, name)
		err := lab.WaitFor(context.Background(), 20*time.Second, 250*time.Millisecond, func() error {
			if !strings.Contains(m.LogTail(2000), c.want) {
				return fmt.Errorf("manager log lacks %q", c.want)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("-o %s: %v", c.opt, err)
		}
		if i == 0 { // Docker takes its time to give up; once is enough.
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			_, err = l.Hosts[1].Docker(ctx, "run", "--rm", "--network", name, lab.ImageTag, "true")
			cancel()
			if err == nil {
				t.Fatalf("-o %s: a container joined the refused network", c.opt)
			}
		}
		m.MustDocker(t, "network", "rm", name)
	}
	for _, h := range l.Hosts {
		if links := labtest.WeftLinks(t, h); len(links) > 0 {
			t.Fatalf("%s: refused networks left devices: %v", h.Name, links)
		}
	}
}
