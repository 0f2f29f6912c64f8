package labtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// Ctr is a container of a test: the host it runs on, its name (or ID)
// there, and its address on the network under test.
type Ctr struct {
	Host *lab.Host
	Name string
	IP   string
}

// Start runs a serving container (lab.ServerCmd) named name on h, attached
// to network with the extra "docker run" arguments, and returns its address
// there. A container that did not start is removed.
func Start(ctx context.Context, h *lab.Host, name, network string, extra ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	args := append([]string{"run", "-d", "--name", name, "--network", network}, extra...)
	args = append(args, lab.ImageTag)
	if _, err := h.Docker(ctx, append(args, lab.ServerCmd...)...); err != nil {
		// A run that failed to start may leave the container created.
		_, _ = h.Docker(context.WithoutCancel(ctx), "rm", "-f", name)
		return "", err
	}
	return h.ContainerIP(ctx, name, network)
}

// Run starts a serving container like Start, failing the test if it does
// not, and removes it when the test ends.
func Run(t testing.TB, h *lab.Host, name, network string, extra ...string) string {
	t.Helper()
	ip, err := Start(context.Background(), h, name, network, extra...)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	t.Cleanup(func() { removeContainers(h, name) })
	return ip
}

// RunOnEach runs a serving container on every host of the lab, named
// prefix-<host>, attached to network, and returns them in the hosts' order.
func RunOnEach(t testing.TB, l *lab.Lab, prefix, network string, extra ...string) []Ctr {
	t.Helper()
	var out []Ctr
	for _, h := range l.Hosts {
		name := prefix + "-" + h.Name
		out = append(out, Ctr{Host: h, Name: name, IP: Run(t, h, name, network, extra...)})
	}
	return out
}

// ContainerIP returns ctr's address on network, failing the test if it
// has none.
func ContainerIP(t testing.TB, h *lab.Host, ctr, network string) string {
	t.Helper()
	ip, err := h.ContainerIP(context.Background(), ctr, network)
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// removeContainers force-removes containers, within a minute, ignoring
// errors: for cleanups, when the engine may be gone.
func removeContainers(h *lab.Host, names ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = h.Docker(ctx, append([]string{"rm", "-f"}, names...)...)
}

// CreateSwarmNetwork makes a swarm-scoped, attachable network of the lab's
// plugin on the manager, with "-o" options, and removes it when the test
// ends.
func CreateSwarmNetwork(t testing.TB, l *lab.Lab, name, subnet string, opts ...string) {
	t.Helper()
	args := []string{"network", "create", "-d", l.Config().PluginName, "--scope", "swarm", "--attachable", "--subnet", subnet}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	l.Manager().MustDocker(t, append(args, name)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := RemoveNetwork(ctx, l.Manager(), name, 50*time.Second); err != nil {
			t.Logf("network %s left on the swarm: %v", name, err)
			return
		}
		// Each engine drops its own copy once its last task on it has
		// stopped (a task that ignores SIGTERM takes its 10 s stop
		// timeout): until then a network of the next test with the same
		// subnet cannot attach there ("Pool overlaps").
		for _, h := range l.Hosts {
			err := lab.WaitFor(ctx, 40*time.Second, 250*time.Millisecond, func() error {
				_, err := h.Docker(ctx, "network", "inspect", name)
				if err == nil {
					return fmt.Errorf("network %s still on %s", name, h.Name)
				}
				return nil // gone; or an engine that does not answer, which has no say
			})
			if err != nil {
				t.Logf("%v", err)
			}
		}
	})
}

// CreateLocalNetwork makes the local-scope network name with subnet on
// every engine, driven and addressed by the lab's plugin (its IPAM takes
// "--ipam-opt" options), and when the test ends removes it, with the
// containers still on it, from every engine that runs.
func CreateLocalNetwork(t testing.TB, l *lab.Lab, name, subnet string, ipamOpts ...string) {
	t.Helper()
	createLocalNetwork(t, l, name, []string{"--subnet", subnet}, ipamOpts)
}

// CreateLocalDualStackNetwork makes a dual-stack local-scope network
// (--ipv6, an IPv4 and an IPv6 subnet) like CreateLocalNetwork.
func CreateLocalDualStackNetwork(t testing.TB, l *lab.Lab, name, subnet4, subnet6 string) {
	t.Helper()
	createLocalNetwork(t, l, name, []string{"--ipv6", "--subnet", subnet4, "--subnet", subnet6}, nil)
}

func createLocalNetwork(t testing.TB, l *lab.Lab, name string, pools, ipamOpts []string) {
	t.Helper()
	plugin := l.Config().PluginName
	args := append([]string{"network", "create", "-d", plugin, "--ipam-driver", plugin}, pools...)
	for _, o := range ipamOpts {
		args = append(args, "--ipam-opt", o)
	}
	for _, h := range l.Hosts {
		h.MustDocker(t, append(args, name)...)
	}
	t.Cleanup(func() {
		for _, h := range l.Hosts {
			if !h.EngineRunning() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			ids, _ := h.Docker(ctx, "ps", "-aq", "--filter", "network="+name)
			if f := strings.Fields(ids); len(f) > 0 {
				removeContainers(h, f...)
			}
			if err := RemoveNetwork(ctx, h, name, 50*time.Second); err != nil {
				t.Logf("network %s left on %s: %v", name, h.Name, err)
			}
			cancel()
		}
	})
}

// RemoveNetwork removes network name on h, trying again within the given
// time while Docker refuses (endpoints still going); a network that is
// gone already is removed.
func RemoveNetwork(ctx context.Context, h *lab.Host, name string, within time.Duration) error {
	return lab.WaitFor(ctx, within, 500*time.Millisecond, func() error {
		_, err := h.Docker(ctx, "network", "rm", name)
		if err != nil && strings.Contains(err.Error(), "No such network") {
			return nil
		}
		return err
	})
}

// CreateService creates a swarm service of serving containers on the
// manager, with the given "service create" arguments, and removes it when
// the test ends.
func CreateService(t testing.TB, l *lab.Lab, name string, args ...string) {
	t.Helper()
	full := append([]string{"service", "create", "--detach", "--no-resolve-image", "--name", name}, args...)
	full = append(full, lab.ImageTag)
	l.Manager().MustDocker(t, append(full, lab.ServerCmd...)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = l.Manager().Docker(ctx, "service", "rm", name)
	})
}

// Tasks are the running tasks of a service: per host, task container ID to
// address on the network asked for.
type Tasks map[*lab.Host]map[string]string

// Count is the number of tasks.
func (ts Tasks) Count() int {
	n := 0
	for _, byID := range ts {
		n += len(byID)
	}
	return n
}

// RunningTasks lists the running tasks of service on hosts, with their
// addresses on network.
func RunningTasks(ctx context.Context, hosts []*lab.Host, service, network string) (Tasks, error) {
	got := Tasks{}
	for _, h := range hosts {
		ids, err := h.Docker(ctx, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service, "--filter", "status=running")
		if err != nil {
			return nil, err
		}
		for _, id := range strings.Fields(ids) {
			ip, err := h.ContainerIP(ctx, id, network)
			if err != nil {
				return nil, fmt.Errorf("task %s: %w", id, err)
			}
			if got[h] == nil {
				got[h] = map[string]string{}
			}
			got[h][id] = ip
		}
	}
	return got, nil
}

// ServiceTasks waits until service has n running tasks on the lab's hosts
// and returns them.
func ServiceTasks(t testing.TB, l *lab.Lab, service, network string, n int, within time.Duration) Tasks {
	t.Helper()
	var got Tasks
	ctx := context.Background()
	err := lab.WaitFor(ctx, within, time.Second, func() error {
		var err error
		if got, err = RunningTasks(ctx, l.Hosts, service, network); err != nil {
			return err
		}
		if c := got.Count(); c != n {
			return fmt.Errorf("%d running tasks of %s, want %d", c, service, n)
		}
		return nil
	})
	if err != nil {
		ps, _ := l.Manager().Docker(ctx, "service", "ps", "--no-trunc", service)
		t.Fatalf("service %s: %v\n%s", service, err, ps)
	}
	return got
}
