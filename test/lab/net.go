package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The underlay is made with iproute2 rather than netlink so that the lab
// needs nothing beyond the standard library; Up clears leftovers first, so
// every object here is created fresh.

const bridgeNFCallIPTables = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// setupBridge creates the underlay bridge with its address, and the
// outside bridge with its own when Config.Outside is set.
func setupBridge(ctx context.Context, c Config) error {
	// Once any dockerd ran in the root namespace its FORWARD policy is DROP,
	// and with bridge-nf-call-iptables=1 that drops frames crossing our
	// bridge. The sysctl is per namespace: this only changes the root one.
	if _, err := os.Stat(bridgeNFCallIPTables); err == nil {
		if err := os.WriteFile(bridgeNFCallIPTables, []byte("0\n"), 0o644); err != nil {
			return fmt.Errorf("disable bridge-nf-call-iptables in the root namespace: %w", err)
		}
	}
	if err := addBridge(ctx, c.Bridge, c.Underlay, c.MTU); err != nil {
		return fmt.Errorf("underlay bridge %s: %w", c.Bridge, err)
	}
	if c.Outside.IsValid() {
		if err := addBridge(ctx, c.outsideBridge(), c.Outside, c.OutsideMTU); err != nil {
			return fmt.Errorf("outside bridge %s: %w", c.outsideBridge(), err)
		}
	}
	return nil
}

func addBridge(ctx context.Context, name string, addr netip.Prefix, mtu int) error {
	return ipSteps(ctx, nil,
		[]string{"link", "add", name, "mtu", strconv.Itoa(mtu), "type", "bridge"},
		[]string{"addr", "add", addr.String(), "dev", name},
		[]string{"link", "set", name, "up"})
}

// addVeth creates a veth pair: root on bridge in the root namespace, and
// inside in namespace ns, both with mtu.
func addVeth(ctx context.Context, root, bridge, ns, inside string, mtu int) error {
	m := strconv.Itoa(mtu)
	return ipSteps(ctx, nil,
		[]string{"link", "add", root, "mtu", m, "type", "veth", "peer", "name", inside, "mtu", m, "netns", ns},
		[]string{"link", "set", root, "master", bridge},
		[]string{"link", "set", root, "up"})
}

// ipSteps runs iproute2's ip once per step, in order, with args before
// each step's own (e.g. "-n", ns), and stops at the first error.
func ipSteps(ctx context.Context, args []string, steps ...[]string) error {
	for _, s := range steps {
		if _, err := run(ctx, "ip", append(slices.Clone(args), s...)...); err != nil {
			return err
		}
	}
	return nil
}

// setupHostNet creates host i's network namespace, its veth pair on the
// bridge (and on the outside bridge, if any), and its UTS namespace with
// hostname h<i>.
func setupHostNet(ctx context.Context, c Config, h *Host) error {
	ns := h.NetNS
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	if err := addVeth(ctx, c.vethName(h.Index), c.Bridge, ns, UnderlayIf, c.MTU); err != nil {
		return fmt.Errorf("host %s underlay: %w", h.Name, err)
	}
	inNS := [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", fmt.Sprintf("%s/%d", h.addr, c.Underlay.Bits()), "dev", UnderlayIf},
		{"link", "set", UnderlayIf, "up"},
	}
	if c.Outside.IsValid() {
		if err := addVeth(ctx, c.outsideVethName(h.Index), c.outsideBridge(), ns, OutsideIf, c.OutsideMTU); err != nil {
			return fmt.Errorf("host %s outside: %w", h.Name, err)
		}
		inNS = append(inNS,
			[]string{"addr", "add", fmt.Sprintf("%s/%d", h.outside, c.Outside.Bits()), "dev", OutsideIf},
			[]string{"link", "set", OutsideIf, "up"},
			[]string{"route", "replace", "default", "via", c.Outside.Addr().String(), "dev", OutsideIf})
	} else {
		inNS = append(inNS, []string{"route", "replace", "default", "via", c.Underlay.Addr().String(), "dev", UnderlayIf})
	}
	if err := ipSteps(ctx, []string{"-n", ns}, inNS...); err != nil {
		return fmt.Errorf("host %s network: %w", h.Name, err)
	}
	if _, err := run(ctx, "nsenter", "--net="+h.NetNSPath(), "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}

	// A UTS namespace pinned on a file, so that every process of the host
	// (both daemons, Exec) shares the hostname swarm names the node after.
	if err := os.MkdirAll(h.runDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(h.utsFile(), nil, 0o644); err != nil {
		return err
	}
	if _, err := run(ctx, "unshare", "--uts="+h.utsFile(), "hostname", h.Name); err != nil {
		return fmt.Errorf("host %s hostname: %w", h.Name, err)
	}
	return nil
}

// labNetns lists the lab's network namespaces that exist: its hosts' and
// its outsiders'.
func labNetns(c Config) []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if isHostSuffix(e.Name(), c.Name+"-h") || isHostSuffix(e.Name(), c.Name+"-x") {
			out = append(out, e.Name())
		}
	}
	return out
}

// labLinks lists the lab's bridges and root-side veths that exist, the
// outside's too whether or not c asks for one (a run that made them may
// have had another config).
func labLinks(c Config) []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		if isBridge(c, e.Name()) || isHostSuffix(e.Name(), c.VethPrefix) || isHostSuffix(e.Name(), c.VethPrefix+"o") || isHostSuffix(e.Name(), c.VethPrefix+"x") {
			out = append(out, e.Name())
		}
	}
	return out
}

func isBridge(c Config, name string) bool { return name == c.Bridge || name == c.outsideBridge() }

// isHostSuffix reports whether name is prefix followed by a host number.
func isHostSuffix(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || rest == "" {
		return false
	}
	_, err := strconv.Atoi(rest)
	return err == nil
}

// removeNet deletes the lab's namespaces, veths and bridge. Missing objects
// are fine.
func removeNet(ctx context.Context, c Config) error {
	var errs []error
	for _, ns := range labNetns(c) {
		if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
			// A namespace file that is no longer a mount point is removed
			// by hand; "ip netns del" refuses it.
			if rerr := os.Remove(filepath.Join("/run/netns", ns)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	// Veths first: the bridges go last so nothing is left dangling on them.
	links := labLinks(c)
	for _, l := range links {
		if isBridge(c, l) {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/class/net", l)); err != nil {
			continue // went with its peer's namespace
		}
		if _, err := run(ctx, "ip", "link", "del", l); err != nil {
			// The kernel removes a veth whose peer's namespace is going
			// a moment later: gone in between is done, not an error.
			if _, serr := os.Stat(filepath.Join("/sys/class/net", l)); serr == nil {
				errs = append(errs, err)
			}
		}
	}
	for _, b := range []string{c.Bridge, c.outsideBridge()} {
		if _, err := os.Stat(filepath.Join("/sys/class/net", b)); err == nil {
			if _, err := run(ctx, "ip", "link", "del", b); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
