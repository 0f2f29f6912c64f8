package dataplane

import (
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PathMTU returns the MTU of the path VXLAN takes from this host to the
// others; a segment's MTU is that less Overhead. For each remote VTEP it
// takes the route the kernel picks for it, and that route's MTU: the
// route's own MTU metric if it has one (the kernel sends by it), never more
// than its device's; the smallest over the remotes. With no remote it can
// route to, the MTU of the interface that holds local. ok is false when
// neither is known: no guess from the default route, whose interface need
// not be the one VXLAN uses (the caller has FallbackMTU for that case).
func (k *Kernel) PathMTU(local net.IP, remotes []net.IP) (mtu int, ok bool) {
	linkMTU := map[int]int{}
	mtuOf := func(index int) int {
		if m, ok := linkMTU[index]; ok {
			return m
		}
		m := 0
		if l, err := k.h.LinkByIndex(index); err == nil {
			m = l.Attrs().MTU
		}
		linkMTU[index] = m
		return m
	}
	for _, r := range remotes {
		routes, err := k.h.RouteGet(r)
		if err != nil {
			continue
		}
		for _, rt := range routes {
			if rt.Type == unix.RTN_LOCAL {
				continue // one of this host's own addresses
			}
			m := mtuOf(rt.LinkIndex)
			if rt.MTU > 0 && (m == 0 || rt.MTU < m) {
				m = rt.MTU
			}
			if m > 0 && (mtu == 0 || m < mtu) {
				mtu = m
			}
		}
	}
	if mtu > 0 {
		return mtu, true
	}
	if local == nil {
		return 0, false
	}
	addrs, err := k.h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return 0, false
	}
	for _, a := range addrs {
		if a.IP.Equal(local) {
			if m := mtuOf(a.LinkIndex); m > 0 {
				return m, true
			}
		}
	}
	return 0, false
}

// FallbackMTU is the MTU to assume while PathMTU knows nothing (this
// host's underlay address and the other hosts are not known yet): the
// smallest MTU among the interfaces that are up, not loopback, and hold an
// IPv4 address. Whichever of them VXLAN ends up on, its path is no wider,
// so a segment made with it is never too large, at worst smaller than it
// could be until the path is known. 1500 when there is no such interface.
func (k *Kernel) FallbackMTU() int {
	addrs, err := k.h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return 1500
	}
	links, err := retryDump(func() ([]netlink.Link, error) { return k.h.LinkList() })
	if err != nil {
		return 1500
	}
	withAddr := map[int]bool{}
	for _, a := range addrs {
		withAddr[a.LinkIndex] = true
	}
	mtu := 0
	for _, l := range links {
		at := l.Attrs()
		if at.Flags&net.FlagUp == 0 || at.Flags&net.FlagLoopback != 0 || !withAddr[at.Index] || at.MTU <= 0 {
			continue
		}
		if mtu == 0 || at.MTU < mtu {
			mtu = at.MTU
		}
	}
	if mtu == 0 {
		return 1500
	}
	return mtu
}
