package e2elocal

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
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

// createNetwork makes the local-scope network name with subnet on every
// engine, addressed by weft's IPAM, and removes it when the test ends.
func createNetwork(t *testing.T, l *lab.Lab, name, subnet string, ipamOpts ...string) {
	t.Helper()
	args := []string{"network", "create", "-d", pluginName, "--ipam-driver", pluginName, "--subnet", subnet}
	for _, o := range ipamOpts {
		args = append(args, "--ipam-opt", o)
	}
	for _, h := range l.Hosts {
		docker(t, h, append(args, name)...)
	}
	t.Cleanup(func() {
		for _, h := range l.Hosts {
			if !h.EngineRunning() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			ids, _ := h.Docker(ctx, "ps", "-aq", "--filter", "network="+name)
			if f := strings.Fields(ids); len(f) > 0 {
				_, _ = h.Docker(ctx, append([]string{"rm", "-f"}, f...)...)
			}
			_ = lab.WaitFor(ctx, 50*time.Second, 500*time.Millisecond, func() error {
				_, err := h.Docker(ctx, "network", "rm", name)
				if err != nil && strings.Contains(err.Error(), "No such network") {
					return nil
				}
				return err
			})
			cancel()
		}
	})
}

// start runs a serving container on h attached to network, with weft's
// name server (the network's gateway) behind Docker's, and returns its
// address there.
func start(h *lab.Host, name, network, gateway string, extra ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"run", "-d", "--name", name, "--network", network, "--dns", gateway}, extra...)
	args = append(args, lab.ImageTag)
	if _, err := h.Docker(ctx, append(args, serverCmd...)...); err != nil {
		// A run that failed to start may leave the container created.
		_, _ = h.Docker(context.Background(), "rm", "-f", name)
		return "", err
	}
	out, err := h.Docker(ctx, "inspect", "-f", fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), name)
	ip := strings.TrimSpace(out)
	if err == nil && ip == "" {
		err = fmt.Errorf("%s on %s has no address on %s", name, h.Name, network)
	}
	return ip, err
}

func run(t *testing.T, h *lab.Host, name, network, gateway string, extra ...string) string {
	t.Helper()
	ip, err := start(h, name, network, gateway, extra...)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return ip
}

// ctr is a container of a test: its host, name and address.
type ctr struct {
	h    *lab.Host
	name string
	ip   string
}

// startMany starts the named containers at once, each on its host, and
// returns them with their addresses.
func startMany(t *testing.T, network, gateway string, want []ctr) []ctr {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	out := slices.Clone(want)
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip, err := start(out[i].h, out[i].name, network, gateway)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s on %s: %v", out[i].name, out[i].h.Name, err))
			}
			out[i].ip = ip
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d containers did not start:\n%s", len(errs), len(out), strings.Join(errs, "\n"))
	}
	return out
}

// addresses lists every container attached to network on every host whose
// engine runs, by address, and fails the test if two share one.
func addresses(t *testing.T, l *lab.Lab, network string) map[string]string {
	t.Helper()
	byIP := map[string]string{}
	for _, h := range l.Hosts {
		if !h.EngineRunning() {
			continue
		}
		ids := strings.Fields(docker(t, h, "ps", "-q", "--filter", "network="+network))
		for _, id := range ids {
			out := docker(t, h, "inspect", "-f", fmt.Sprintf(`{{.Name}} {{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), id)
			f := strings.Fields(out)
			if len(f) != 2 {
				t.Fatalf("%s: container %s on %s: %q", h.Name, id, network, out)
			}
			who := h.Name + "/" + strings.TrimPrefix(f[0], "/")
			if other, dup := byIP[f[1]]; dup {
				t.Errorf("address %s is used by %s and by %s", f[1], other, who)
			}
			byIP[f[1]] = who
		}
	}
	return byIP
}

// canPing reports whether c gets an ICMP echo reply from target.
func canPing(c ctr, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.h.Docker(ctx, "exec", c.name, "ping", "-c1", "-W1", target)
	return err
}

// canFetch reports whether c fetches "weft-ok" from target:8080 over TCP.
func canFetch(c ctr, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.h.Docker(ctx, "exec", c.name, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$0" 8080`, target)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "weft-ok") {
		return fmt.Errorf("fetched %q, want weft-ok", out)
	}
	return nil
}

// reach waits until c reaches target by ICMP and TCP.
func reach(t *testing.T, c ctr, target string, within time.Duration) {
	t.Helper()
	err := lab.WaitFor(context.Background(), within, 250*time.Millisecond, func() error {
		if err := canPing(c, target); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		return canFetch(c, target)
	})
	if err != nil {
		t.Fatalf("%s on %s cannot reach %s: %v", c.name, c.h.Name, target, err)
	}
}

// pingAll makes c ping every target once, in one exec, and returns the
// targets that did not answer.
func pingAll(c ctr, targets []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script := `for t in "$@"; do ping -c1 -W1 "$t" >/dev/null 2>&1 || echo "$t"; done`
	out, err := c.h.Docker(ctx, append([]string{"exec", c.name, "sh", "-c", script, "sh"}, targets...)...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// meshReach waits until every container of cs pings every other one by
// each of the targets key gives (its address, its name).
func meshReach(t *testing.T, cs []ctr, key func(ctr) string, within time.Duration) {
	t.Helper()
	sem := make(chan struct{}, 6)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fails []string
	for _, c := range cs {
		var targets []string
		for _, o := range cs {
			if o.name != c.name {
				targets = append(targets, key(o))
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			err := lab.WaitFor(context.Background(), within, time.Second, func() error {
				missed, err := pingAll(c, targets)
				if err != nil {
					return err
				}
				if len(missed) > 0 {
					targets = missed // only those are left to prove
					return fmt.Errorf("no answer from %v", missed)
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				fails = append(fails, fmt.Sprintf("%s on %s: %v", c.name, c.h.Name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(fails) > 0 {
		t.Fatalf("%d containers do not reach all the others:\n%s", len(fails), strings.Join(fails, "\n"))
	}
}

// nthInBlock is the address n past the start of ip's /bits block.
func nthInBlock(t *testing.T, ip string, bits, n int) string {
	t.Helper()
	var a [4]int
	if _, err := fmt.Sscanf(ip, "%d.%d.%d.%d", &a[0], &a[1], &a[2], &a[3]); err != nil {
		t.Fatalf("address %q: %v", ip, err)
	}
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	mask := ^uint32(0) << (32 - bits)
	v = v&mask + uint32(n)
	return fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&255, v>>8&255, v&255)
}
