package dataplane

// The WireGuard interface of encrypted networks (package wg owns its keys
// and peers). The kernel side here is only the link: created as a kernel
// WireGuard link where the kernel has the type, otherwise left to the
// caller to create as a TUN (wireguard-go); then its address, MTU and
// state, written the same way for both.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WireGuardOverhead is what WireGuard over IPv4 adds to every packet:
// outer IPv4 (20), UDP (8), its data header (16) and tag (16).
const WireGuardOverhead = 60

// EnsureWireGuardLink creates the kernel WireGuard link name, or adopts
// the one that exists. It reports false, without error, when the kernel
// has no WireGuard (the link type is unknown to it): the caller then runs
// WireGuard in userspace on a TUN of that name.
func (k *Kernel) EnsureWireGuardLink(name string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if have, err := k.h.LinkByName(name); err == nil {
		if have.Type() == "wireguard" {
			return true, nil
		}
		return false, nil // a TUN of a userspace WireGuard: the caller's
	}
	err := k.h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}})
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		return true, nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		// "Unknown device type": no kernel WireGuard here.
		return false, nil
	}
	return false, fmt.Errorf("create WireGuard link %s: %w", name, err)
}

// ConfigureTunnel gives the link name exactly the addresses addrs, each
// a /32 (no prefix route: RouteTunnel decides which link carries the
// tunnel's subnets), the MTU mtu, and sets it up. Calling it again with
// the same values writes nothing new.
func (k *Kernel) ConfigureTunnel(name string, addrs []netip.Addr, mtu int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	link, err := k.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up tunnel %s: %w", name, err)
	}
	if link.Attrs().MTU != mtu {
		if err := k.h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
		}
	}
	have, err := k.h.AddrList(link, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	want := map[string]bool{}
	for _, a := range addrs {
		p := netip.PrefixFrom(a, 32).String()
		want[p] = true
		if slices.ContainsFunc(have, func(h netlink.Addr) bool { return h.IPNet.String() == p }) {
			continue
		}
		na, err := netlink.ParseAddr(p)
		if err != nil {
			return fmt.Errorf("address %s: %w", p, err)
		}
		if err := k.h.AddrReplace(link, na); err != nil {
			return fmt.Errorf("set address %s on %s: %w", p, name, err)
		}
	}
	for _, a := range have {
		if !want[a.IPNet.String()] {
			if err := k.h.AddrDel(link, &a); err != nil && !isNotFound(err) && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("remove address %s from %s: %w", a.IPNet, name, err)
			}
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := k.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	k.log.Debug("tunnel ready", "device", name, "addrs", addrs, "mtu", mtu)
	return nil
}

// RouteTunnel routes each of dsts through the link name with source src,
// replacing the route that was there: one write per destination, each
// atomic, so a packet takes either the old link and its source or the
// new ones, never a mix. A route already so is left alone.
func (k *Kernel) RouteTunnel(name string, dsts []netip.Prefix, src netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	link, err := k.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up tunnel %s: %w", name, err)
	}
	idx := link.Attrs().Index
	for _, d := range dsts {
		dst := &net.IPNet{IP: d.Addr().AsSlice(), Mask: net.CIDRMask(d.Bits(), 32)}
		have, err := k.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Dst: dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list routes to %s: %w", d, err)
		}
		if len(have) == 1 && have[0].LinkIndex == idx && have[0].Src.Equal(src.AsSlice()) {
			continue
		}
		r := &netlink.Route{LinkIndex: idx, Dst: dst, Src: src.AsSlice(), Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN}
		if err := k.h.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s through %s from %s: %w", d, name, src, err)
		}
	}
	return nil
}

// TunnelRoute returns the name of the link the route to dst goes through;
// false when there is none.
func (k *Kernel) TunnelRoute(dst netip.Prefix) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}
	have, err := k.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Dst: n, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil || len(have) == 0 {
		return "", false
	}
	link, err := k.h.LinkByIndex(have[0].LinkIndex)
	if err != nil {
		return "", false
	}
	return link.Attrs().Name, true
}

// DeleteLink removes the link name; one already gone is not an error.
func (k *Kernel) DeleteLink(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	link, err := k.h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := k.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
