package labtest

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/test/lab"
)

// endpointIf matches the host-side name of an endpoint's interface: "wv"
// and the first 12 hex digits of the endpoint's ID. Other macvlan children
// of weft's devices may live in the host namespace for as long as their
// network does (an ARP announcer, say); endpoint interfaces only until
// Docker moves them into their container.
var endpointIf = regexp.MustCompile(`^wv[0-9a-f]{12}$`)

// Kernel reads weft's kernel state in h's network namespace.
func Kernel(h *lab.Host) (*dataplane.KernelState, error) {
	k, err := dataplane.Inspect(h.NetNSPath())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	return k, nil
}

// MustKernel reads weft's kernel state in h's network namespace, failing
// the test on an error.
func MustKernel(t testing.TB, h *lab.Host) *dataplane.KernelState {
	t.Helper()
	k, err := Kernel(h)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ContainerKernel reads the network namespace of the running container ctr
// on h: its links (weft's interface is the macvlan among them) and MTUs.
func ContainerKernel(t testing.TB, h *lab.Host, ctr string) *dataplane.KernelState {
	t.Helper()
	pid := h.MustDocker(t, "inspect", "-f", "{{.State.Pid}}", ctr)
	k, err := dataplane.Inspect("/proc/" + pid + "/ns/net")
	if err != nil {
		t.Fatalf("%s on %s: %v", ctr, h.Name, err)
	}
	return k
}

// WeftLinks lists weft's links in h's namespace: its VXLAN devices and
// any endpoint interface not (or no longer) in a container.
func WeftLinks(t testing.TB, h *lab.Host) []string {
	t.Helper()
	var links []string
	for _, l := range MustKernel(t, h).Links {
		if _, ok := dataplane.ParseDeviceName(l.Name); ok && l.Kind == "vxlan" || endpointIf.MatchString(l.Name) {
			links = append(links, l.Name)
		}
	}
	return links
}

// WaitNoWeftLinks waits until h holds no link of weft's.
func WaitNoWeftLinks(t testing.TB, h *lab.Host, within time.Duration) {
	t.Helper()
	err := lab.WaitFor(context.Background(), within, 250*time.Millisecond, func() error {
		if l := WeftLinks(t, h); len(l) > 0 {
			return fmt.Errorf("left behind: %v", l)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
}

// EntriesTowards counts, on h, the FDB entries of weft's devices that send
// to vtep.
func EntriesTowards(t testing.TB, h *lab.Host, vtep string) int {
	t.Helper()
	n := 0
	for _, d := range MustKernel(t, h).Devices {
		for _, e := range d.FDB {
			if e.VTEP.String() == vtep {
				n++
			}
		}
	}
	return n
}

// WatchDeletes records the deletions of FDB and neighbour entries of
// weft's devices on the hosts (the kernel's multicast neighbour entries
// left out), from now until the returned function is
// called; the function returns them, one line each, and may be called
// again (it then returns nothing). With devices given, only theirs.
func WatchDeletes(t testing.TB, hosts []*lab.Host, devices ...string) func() []string {
	t.Helper()
	type watch struct {
		h *lab.Host
		w *dataplane.EntryWatch
	}
	var watches []watch
	stopAll := func() {
		for _, w := range watches {
			_, _ = w.w.Stop()
		}
	}
	for _, h := range hosts {
		w, err := dataplane.WatchEntries(h.NetNSPath())
		if err != nil {
			stopAll()
			t.Fatalf("%s: %v", h.Name, err)
		}
		watches = append(watches, watch{h, w})
	}
	stopped := false
	stop := func() []string {
		if stopped {
			return nil
		}
		stopped = true
		var out []string
		for _, w := range watches {
			changes, err := w.w.Stop()
			if err != nil {
				// Deletions may have been missed: say so as one.
				out = append(out, w.h.Name+": "+err.Error())
			}
			for _, c := range changes {
				if !c.FDB && c.IP.IsMulticast() {
					// The kernel's own: a weft device, up in the host's
					// namespace, sends IPv6 multicast (router and neighbour
					// solicitations, MLD reports), for which the kernel keeps
					// NOARP entries and collects them as it likes. weft
					// writes no multicast neighbour entry.
					continue
				}
				if c.Deleted && (len(devices) == 0 || slices.Contains(devices, c.Device)) {
					out = append(out, w.h.Name+": "+c.String())
				}
			}
		}
		return out
	}
	t.Cleanup(func() { stop() })
	return stop
}

// stray lists what weft should not have left in a host's namespace:
// endpoint interfaces that are in no container, and bridges other than
// Docker's docker_gwbridge (weft makes none). Docker's own veths on
// docker_gwbridge are Docker's to account for: after a hard engine kill
// dockerd has been seen to leave one behind on a loaded machine, which
// says nothing of weft.
func stray(k *dataplane.KernelState) (problems []string) {
	for _, l := range k.Links {
		switch l.Kind {
		case "macvlan":
			if endpointIf.MatchString(l.Name) {
				problems = append(problems, fmt.Sprintf("endpoint interface %s (on %s) in the host namespace", l.Name, l.Parent))
			}
		case "bridge":
			if l.Name != "docker_gwbridge" {
				problems = append(problems, "bridge "+l.Name)
			}
		}
	}
	return problems
}

// hostNames joins the hosts' names with commas.
func hostNames(hs []*lab.Host) string {
	var n []string
	for _, h := range hs {
		n = append(n, h.Name)
	}
	return strings.Join(n, ",")
}

// WeftMTU returns the MTU of the running container ctr's weft interface:
// the one macvlan link in its namespace.
func WeftMTU(t testing.TB, h *lab.Host, ctr string) int {
	t.Helper()
	links := ContainerKernel(t, h, ctr).LinksOfKind("macvlan")
	if len(links) != 1 {
		t.Fatalf("%s on %s has %d macvlan interfaces, want one (weft's): %+v", ctr, h.Name, len(links), links)
	}
	return links[0].MTU
}

// WaitPurged waits until no host of hosts has an FDB entry that sends to
// vtep (a host lost or cut off), and returns how long that took.
func WaitPurged(t testing.TB, hosts []*lab.Host, vtep string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for _, h := range hosts {
		err := lab.WaitFor(context.Background(), within, 100*time.Millisecond, func() error {
			if n := EntriesTowards(t, h, vtep); n > 0 {
				return fmt.Errorf("%d FDB entries still point at %s", n, vtep)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
	}
	return time.Since(start)
}
