package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// serverCmd is the command of every test container.
var serverCmd = lab.ServerCmd

func docker(t *testing.T, h *lab.Host, args ...string) string {
	t.Helper()
	return h.MustDocker(t, args...)
}

func hostExec(t *testing.T, h *lab.Host, name string, args ...string) string {
	t.Helper()
	out, err := h.Exec(context.Background(), name, args...)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return strings.TrimSpace(out)
}

// createNetwork makes a swarm-scoped, attachable weft network and removes
// it when the test ends.
func createNetwork(t *testing.T, l *lab.Lab, name, subnet string, opts ...string) {
	t.Helper()
	args := []string{"network", "create", "-d", pluginName, "--scope", "swarm", "--attachable", "--subnet", subnet}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	docker(t, l.Manager(), append(args, name)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = lab.WaitFor(ctx, 50*time.Second, 500*time.Millisecond, func() error {
			_, err := l.Manager().Docker(ctx, "network", "rm", name)
			if err != nil && strings.Contains(err.Error(), "No such network") {
				return nil
			}
			return err
		})
	})
}

// run starts a serving container on h attached to network and returns its
// address there; it is removed when the test ends.
func run(t *testing.T, h *lab.Host, name, network string, extra ...string) string {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--network", network}, extra...)
	args = append(args, lab.ImageTag)
	docker(t, h, append(args, serverCmd...)...)
	t.Cleanup(func() { _, _ = h.Docker(context.Background(), "rm", "-f", name) })
	return containerIP(t, h, name, network)
}

func containerIP(t *testing.T, h *lab.Host, ctr, network string) string {
	t.Helper()
	ip := docker(t, h, "inspect", "-f", fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), ctr)
	if ip == "" {
		t.Fatalf("%s on %s has no address on %s", ctr, h.Name, network)
	}
	return ip
}

// canPing reports whether ctr on h gets an ICMP echo reply from ip.
func canPing(h *lab.Host, ctr, ip string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := h.Docker(ctx, "exec", ctr, "ping", "-c1", "-W1", ip)
	return err
}

// canFetch reports whether ctr on h fetches "weft-ok" from ip:8080 over
// TCP. (busybox's nc, not its wget: wget -T crashes in busybox-static.)
func canFetch(h *lab.Host, ctr, ip string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.Docker(ctx, "exec", ctr, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$0" 8080`, ip)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "weft-ok") {
		return fmt.Errorf("fetched %q, want weft-ok", out)
	}
	return nil
}

// reach waits until ctr on h reaches ip by ICMP and TCP.
func reach(t *testing.T, h *lab.Host, ctr, ip string, within time.Duration) {
	t.Helper()
	err := lab.WaitFor(context.Background(), within, 200*time.Millisecond, func() error {
		if err := canPing(h, ctr, ip); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		return canFetch(h, ctr, ip)
	})
	if err != nil {
		t.Fatalf("%s on %s cannot reach %s: %v", ctr, h.Name, ip, err)
	}
}

// unreachable checks that ctr on h reaches ip by neither ICMP nor TCP.
func unreachable(t *testing.T, h *lab.Host, ctr, ip string) {
	t.Helper()
	if err := canPing(h, ctr, ip); err == nil {
		t.Fatalf("%s on %s pings %s, which it must not reach", ctr, h.Name, ip)
	}
	if err := canFetch(h, ctr, ip); err == nil {
		t.Fatalf("%s on %s fetches from %s, which it must not reach", ctr, h.Name, ip)
	}
}

// weftLinks lists weft's kernel objects in a host's namespace: its VXLAN
// devices and any macvlan child left in the host namespace.
func weftLinks(t *testing.T, h *lab.Host) []string {
	t.Helper()
	out := hostExec(t, h, "ip", "-o", "link", "show")
	var links []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		name, _, _ = strings.Cut(name, "@")
		if strings.HasPrefix(name, "weft") || strings.HasPrefix(name, "wv") {
			links = append(links, name)
		}
	}
	return links
}

// waitNoWeftLinks waits until h holds no device of weft's.
func waitNoWeftLinks(t *testing.T, h *lab.Host, within time.Duration) {
	t.Helper()
	err := lab.WaitFor(context.Background(), within, 250*time.Millisecond, func() error {
		if l := weftLinks(t, h); len(l) > 0 {
			return fmt.Errorf("left behind: %v", l)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
}

// serviceTasks waits until service has n running tasks and returns, per
// host, the containers and their addresses on network.
func serviceTasks(t *testing.T, l *lab.Lab, service, network string, n int, within time.Duration) map[*lab.Host]map[string]string {
	t.Helper()
	var got map[*lab.Host]map[string]string
	err := lab.WaitFor(context.Background(), within, time.Second, func() error {
		got = map[*lab.Host]map[string]string{}
		total := 0
		for _, h := range l.Hosts {
			ids, err := h.Docker(context.Background(), "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service, "--filter", "status=running")
			if err != nil {
				return err
			}
			for _, id := range strings.Fields(ids) {
				ip, err := h.Docker(context.Background(), "inspect", "-f", fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), id)
				if err != nil || strings.TrimSpace(ip) == "" {
					return fmt.Errorf("task %s on %s has no address yet", id, h.Name)
				}
				if got[h] == nil {
					got[h] = map[string]string{}
				}
				got[h][id] = strings.TrimSpace(ip)
				total++
			}
		}
		if total != n {
			return fmt.Errorf("%d running tasks of %s, want %d", total, service, n)
		}
		return nil
	})
	if err != nil {
		ps, _ := l.Manager().Docker(context.Background(), "service", "ps", "--no-trunc", service)
		t.Fatalf("service %s: %v\n%s", service, err, ps)
	}
	return got
}

func createService(t *testing.T, l *lab.Lab, name string, args ...string) {
	t.Helper()
	full := append([]string{"service", "create", "--detach", "--no-resolve-image", "--name", name}, args...)
	full = append(full, lab.ImageTag)
	docker(t, l.Manager(), append(full, serverCmd...)...)
	t.Cleanup(func() { _, _ = l.Manager().Docker(context.Background(), "service", "rm", name) })
}
