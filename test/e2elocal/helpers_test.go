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
	"github.com/weftnet/weft/test/labtest"
)

// startMany starts the named containers at once, each on its host, and
// returns them with their addresses.
func startMany(t *testing.T, network, gateway string, want []labtest.Ctr) []labtest.Ctr {
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
			ip, err := labtest.Start(context.Background(), out[i].Host, out[i].Name, network, "--dns", gateway)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s on %s: %v", out[i].Name, out[i].Host.Name, err))
			}
			out[i].IP = ip
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
		ids := strings.Fields(h.MustDocker(t, "ps", "-q", "--filter", "network="+network))
		for _, id := range ids {
			out := h.MustDocker(t, "inspect", "-f", fmt.Sprintf(`{{.Name}} {{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), id)
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

// pingAll makes c ping every target once, in one exec, and returns the
// targets that did not answer.
func pingAll(c labtest.Ctr, targets []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script := `for t in "$@"; do ping -c1 -W1 "$t" >/dev/null 2>&1 || echo "$t"; done`
	out, err := c.Host.Docker(ctx, append([]string{"exec", c.Name, "sh", "-c", script, "sh"}, targets...)...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// meshReach waits until every container of cs pings every other one by
// each of the targets key gives (its address, its name).
func meshReach(t *testing.T, cs []labtest.Ctr, key func(labtest.Ctr) string, within time.Duration) {
	t.Helper()
	sem := make(chan struct{}, 6)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fails []string
	for _, c := range cs {
		var targets []string
		for _, o := range cs {
			if o.Name != c.Name {
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
				fails = append(fails, fmt.Sprintf("%s on %s: %v", c.Name, c.Host.Name, err))
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
