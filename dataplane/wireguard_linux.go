package dataplane

// The WireGuard interface of encrypted networks (package wg owns its keys
// and peers). The kernel side here is only the link: created as a kernel
// WireGuard link where the kernel has the type, otherwise left to the
// caller to create as a TUN (wireguard-go); then its address, MTU and
// state, written the same way for both.

import (
	"errors"
	"fmt"
	"net/netip"

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

// ConfigureTunnel gives the link name the single address addr (its prefix
// routes the other hosts' tunnel addresses through it), the MTU mtu, and
// sets it up. Calling it again with the same values writes nothing new.
func (k *Kernel) ConfigureTunnel(name string, addr netip.Prefix, mtu int) error {
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
	want, err := netlink.ParseAddr(addr.String())
	if err != nil {
		return fmt.Errorf("address %s: %w", addr, err)
	}
	if err := k.h.AddrReplace(link, want); err != nil {
		return fmt.Errorf("set address %s on %s: %w", addr, name, err)
	}
	for _, a := range have {
		if a.IPNet.String() != want.IPNet.String() {
			if err := k.h.AddrDel(link, &a); err != nil && !isNotFound(err) && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("remove address %s from %s: %w", a.IPNet, name, err)
			}
		}
	}
	if err := k.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	k.log.Debug("tunnel ready", "device", name, "addr", addr.String(), "mtu", mtu)
	return nil
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
