package dataplane

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Announcing remote endpoints to the local containers.
//
// A container that asked for an address before its entries were programmed
// holds an INCOMPLETE (later FAILED) neighbour entry and asks again only
// when its ARP retransmit timer fires, up to a second later; one that holds
// an older MAC for the address (the remote container was re-created with
// the same address) keeps sending to that MAC until the entry goes stale,
// tens of seconds. So whenever weft writes a remote endpoint's entries it
// also sends a gratuitous ARP for it (sender and target address the
// endpoint's IP, sender and target MAC its MAC, broadcast). Linux takes a
// gratuitous ARP for an address it already has an entry for, whatever the
// entry's state, and overrides the MAC; it creates no entry for an address
// it never asked for (arp_accept is off by default), so the announcement
// costs containers nothing otherwise.
//
// The frames leave from an announcer: a macvlan child (mode bridge) of the
// segment's VXLAN device. A broadcast that a bridge-mode child sends reaches
// every other child, that is every container of the segment on this host;
// the copy that goes on to the VXLAN device is consumed there (with proxy
// on, ARP is answered from the neighbour table, never sent, and without a
// default FDB entry nothing is flooded), so no other host sees it.
//
// The announcer is in a network namespace of its own that only this
// process holds, not in the host's: every child of the device receives the
// containers' broadcasts, and a child in the host namespace would hand them
// to the host's stack. Seen here with a child without address, ARP off and
// rp_filter on: a container's UDP datagram from 0.0.0.0 to 255.255.255.255
// reached a socket bound to 0.0.0.0 in the host namespace (with rp_filter
// off, a unicast datagram to a host address in a broadcast frame did too),
// and IPv6 cannot be turned off on one interface without sysctl, which a
// managed plugin cannot write. In a namespace of its own the announcer has
// nothing to deliver to. It has no address, ARP off (IFF_NOARP) and IPv6
// address generation off, so it never sends anything but the
// announcements. Like the Gateway it goes with the process and is made
// again by the next one's EnsureSegment: nothing but weft's own writes
// depends on it.

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE: no IPv6 link-local address,
// so no duplicate address detection or router solicitation is sent.
const addrGenModeNone = 1

// announcer is one segment's announcer.
type announcer struct {
	ns    netns.NsHandle
	h     *netlink.Handle // netlink in ns
	fd    int             // AF_PACKET socket in ns; protocol 0, so it receives nothing
	index int             // the child's interface index in ns
}

// announcerName is the announcer child's name inside its own namespace.
func announcerName(vni uint32) string { return "wa" + strconv.FormatUint(uint64(vni), 10) }

// ensureAnnouncerLocked makes the announcer of segment vni a child of
// parent, unless it already is one. A child dies with its parent, so one
// that exists belongs to the device of this name now. Called with k.mu held.
func (k *Kernel) ensureAnnouncerLocked(vni uint32, parent netlink.Link) error {
	a := k.announcers[vni]
	if a == nil {
		var err error
		if a, err = newAnnouncer(); err != nil {
			return err
		}
		k.announcers[vni] = a
	}
	name := announcerName(vni)
	if l, err := a.h.LinkByName(name); err == nil {
		a.index = l.Attrs().Index
		return nil
	}
	mv := &netlink.Macvlan{
		// Created straight in the announcer's namespace: the name never
		// appears in the host's.
		LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: parent.Attrs().Index, Namespace: netlink.NsFd(int(a.ns))},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := k.h.LinkAdd(mv); err != nil {
		return fmt.Errorf("create announcer of %s: %w", parent.Attrs().Name, err)
	}
	l, err := a.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up announcer of %s: %w", parent.Attrs().Name, err)
	}
	if err := a.h.LinkSetARPOff(l); err != nil {
		return fmt.Errorf("set ARP off on the announcer of %s: %w", parent.Attrs().Name, err)
	}
	// Before it goes up, or it would make a link-local address. A kernel
	// without IPv6 refuses the setting and makes none anyway.
	if err := a.h.LinkSetIP6AddrGenMode(l, addrGenModeNone); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("turn IPv6 address generation off on the announcer of %s: %w", parent.Attrs().Name, err)
	}
	if err := a.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set the announcer of %s up: %w", parent.Attrs().Name, err)
	}
	a.index = l.Attrs().Index
	k.log.Debug("announcer ready", "device", parent.Attrs().Name)
	return nil
}

// newAnnouncer makes the namespace and the socket of an announcer.
func newAnnouncer() (_ *announcer, err error) {
	a := &announcer{fd: -1}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.ns, err = newNamespace(); err != nil {
		return nil, fmt.Errorf("create announcer namespace: %w", err)
	}
	if a.h, err = netlink.NewHandleAt(a.ns); err != nil {
		return nil, fmt.Errorf("open announcer namespace: %w", err)
	}
	err = inNamespace(a.ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		a.fd = fd
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open announcer socket: %w", err)
	}
	return a, nil
}

// close releases the socket, the handle and the namespace, and with the
// namespace the child if it is still there.
func (a *announcer) close() {
	if a.fd >= 0 {
		unix.Close(a.fd)
		a.fd = -1
	}
	if a.h != nil {
		a.h.Close()
	}
	if a.ns.IsOpen() {
		a.ns.Close()
	}
}

// closeAnnouncerLocked removes the announcer of vni. Called with k.mu held.
func (k *Kernel) closeAnnouncerLocked(vni uint32) {
	if a := k.announcers[vni]; a != nil {
		a.close()
		delete(k.announcers, vni)
	}
}

// announceLocked sends one gratuitous ARP per endpoint of rs to the local
// containers of segment vni. It is best effort: the entries are written
// either way, and a container left waiting asks again on its own timer.
// Called with k.mu held.
func (k *Kernel) announceLocked(vni uint32, rs []RemoteEndpoint) {
	a := k.announcers[vni]
	if a == nil || a.index == 0 {
		k.log.Debug("no announcer; remote endpoints not announced", "vni", vni, "count", len(rs))
		return
	}
	to := &unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_ARP),
		Ifindex:  a.index,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	var frame [42]byte
	for _, r := range rs {
		garp(&frame, r)
		if err := unix.Sendto(a.fd, frame[:], 0, to); err != nil {
			k.log.Warn("announce remote endpoints", "vni", vni, "count", len(rs), "err", err)
			return
		}
	}
	k.log.Debug("remote endpoints announced", "vni", vni, "count", len(rs))
}

// garp writes into f the Ethernet frame of a gratuitous ARP for r: a reply
// (so that a VXLAN device with proxy on does not answer it as a request)
// from r.MAC to broadcast, sender and target both r.IP and r.MAC.
func garp(f *[42]byte, r RemoteEndpoint) {
	b := f[:0]
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	b = append(b, r.MAC...)
	b = append(b, 0x08, 0x06)                // ARP
	b = append(b, 0, 1, 0x08, 0, 6, 4, 0, 2) // Ethernet, IPv4, lengths 6 and 4, reply
	b = append(b, r.MAC...)
	b = append(b, r.IP.To4()...)
	b = append(b, r.MAC...)
	_ = append(b, r.IP.To4()...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
