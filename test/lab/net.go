package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The underlay is made with iproute2 rather than netlink so that the lab
// needs nothing beyond the standard library; Up clears leftovers first, so
// every object here is created fresh.

const bridgeNFCallIPTables = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// setupBridge creates the underlay bridge with its address.
func setupBridge(ctx context.Context, c Config) error {
	// Once any dockerd ran in the root namespace its FORWARD policy is DROP,
	// and with bridge-nf-call-iptables=1 that drops frames crossing our
	// bridge. The sysctl is per namespace: this only changes the root one.
	if _, err := os.Stat(bridgeNFCallIPTables); err == nil {
		if err := os.WriteFile(bridgeNFCallIPTables, []byte("0\n"), 0o644); err != nil {
			return fmt.Errorf("disable bridge-nf-call-iptables in the root namespace: %w", err)
		}
	}
	mtu := strconv.Itoa(c.MTU)
	steps := [][]string{
		{"link", "add", c.Bridge, "mtu", mtu, "type", "bridge"},
		{"addr", "add", c.Underlay.String(), "dev", c.Bridge},
		{"link", "set", c.Bridge, "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("underlay bridge %s: %w", c.Bridge, err)
		}
	}
	return nil
}

// setupHostNet creates host i's network namespace, its veth pair on the
// bridge, and its UTS namespace with hostname h<i>.
func setupHostNet(ctx context.Context, c Config, h *Host) error {
	ns := h.NetNS
	mtu := strconv.Itoa(c.MTU)
	veth := c.vethName(h.Index)
	gw := c.Underlay.Addr().String()
	addr := fmt.Sprintf("%s/%d", h.addr, c.Underlay.Bits())
	root := [][]string{
		{"netns", "add", ns},
		{"link", "add", veth, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", ns},
		{"link", "set", veth, "master", c.Bridge},
		{"link", "set", veth, "up"},
	}
	for _, s := range root {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("host %s underlay: %w", h.Name, err)
		}
	}
	inNS := [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", addr, "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "replace", "default", "via", gw, "dev", "eth0"},
	}
	for _, s := range inNS {
		if _, err := run(ctx, "ip", append([]string{"-n", ns}, s...)...); err != nil {
			return fmt.Errorf("host %s underlay: %w", h.Name, err)
		}
	}
	if _, err := run(ctx, "nsenter", "--net="+h.netnsPath(), "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
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

// labNetns lists the lab's network namespaces that exist.
func labNetns(c Config) []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if isHostSuffix(e.Name(), c.Name+"-h") {
			out = append(out, e.Name())
		}
	}
	return out
}

// labLinks lists the lab's bridge and root-side veths that exist.
func labLinks(c Config) []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		if e.Name() == c.Bridge || isHostSuffix(e.Name(), c.VethPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

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
	// Veths first: the bridge goes last so nothing is left dangling on it.
	links := labLinks(c)
	for _, l := range links {
		if l == c.Bridge {
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
	if _, err := os.Stat(filepath.Join("/sys/class/net", c.Bridge)); err == nil {
		if _, err := run(ctx, "ip", "link", "del", c.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
