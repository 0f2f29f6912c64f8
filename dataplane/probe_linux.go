package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The data-path probe's segment. Every host has one more VXLAN device, of
// the reserved VNI ProbeVNI, on the same UDP port as the networks' devices,
// so that its packets take exactly the path, the socket and the firewall
// rules the containers' traffic takes between the hosts. Unlike the
// networks' devices it lives in a network namespace of the plugin's own
// (created there; its UDP socket stays in the host namespace, where the
// device was made), holding this host's VTEP address as its own: the
// namespace sees nothing but the other hosts' probe ports, the host sees
// no new address or route, and the device goes with the plugin's process,
// leaving nothing behind. Its entries are static like the networks': per
// other host, an FDB entry (probe MAC -> VTEP) and a neighbour entry (VTEP
// -> probe MAC), the MAC derived from the VTEP (ProbeMAC).
//
// A UDP socket bound to the VTEP address in that namespace carries the
// probes; it sets DF and never fragments them (IP_PMTUDISC_PROBE), so that
// a probe larger than the path is lost instead of cut. The VXLAN packet
// around it is treated as the networks' are (the kernel's default, no DF
// outside): what the probe finds is what the containers' packets meet.

// ProbeVNI is the VNI of the probe's segment. No weft network may use it.
const ProbeVNI = MaxVNI

// ProbeUDPPort is the port of the probe socket inside the probe's
// namespace (it is never seen on the underlay, where the probes travel
// inside VXLAN on the networks' port).
const ProbeUDPPort = 7

// probeDevice is the probe device's name inside its namespace.
const probeDevice = "weftprobe"

// ProbeMTU is the probe device's MTU: the largest a VXLAN device may have,
// so that the probe, not the device, decides how large a packet is sent.
const ProbeMTU = 65535 - Overhead

// ProbeMAC is the MAC of the probe device of the host whose VTEP is vtep.
func ProbeMAC(vtep netip.Addr) net.HardwareAddr {
	v4 := vtep.As4()
	return net.HardwareAddr{0x02, 0x70, v4[0], v4[1], v4[2], v4[3]}
}

// ProbePort is this host's end of the probe segment. Conn is safe for
// concurrent use; SetPeers is serialised.
type ProbePort struct {
	// Conn is the probe socket, bound to VTEP:ProbeUDPPort in the probe's
	// namespace.
	Conn *net.UDPConn
	// VTEP is this host's address, the probe port's own.
	VTEP netip.Addr

	ns netns.NsHandle
	h  *netlink.Handle // in ns

	// mu guards peers and the device's entries.
	mu    sync.Mutex
	index int
	peers map[netip.Addr]bool
}

// OpenProbe makes this host's probe port: a namespace, the probe device
// in it on the VXLAN UDP port port, vtep on it with a route to every
// address through it, and the probe socket. While the device of an
// earlier process of the plugin is still being torn down with its
// namespace, the kernel refuses the VNI (EEXIST): the caller tries again.
func (k *Kernel) OpenProbe(vtep netip.Addr, port int) (_ *ProbePort, err error) {
	if !vtep.Is4() {
		return nil, fmt.Errorf("probe address %s is not IPv4", vtep)
	}
	ns, err := newNamespace()
	if err != nil {
		return nil, fmt.Errorf("create the probe's namespace: %w", err)
	}
	p := &ProbePort{VTEP: vtep, ns: ns, peers: map[netip.Addr]bool{}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: probeDevice, MTU: ProbeMTU, HardwareAddr: ProbeMAC(vtep), Namespace: netlink.NsFd(int(ns))},
		VxlanId:   ProbeVNI,
		Port:      port,
		Learning:  false,
	}
	k.mu.Lock()
	err = k.h.LinkAdd(vx)
	k.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("create the probe device (VNI %d, port %d): %w", ProbeVNI, port, err)
	}
	if p.h, err = netlink.NewHandleAt(ns); err != nil {
		return nil, fmt.Errorf("open the probe's namespace: %w", err)
	}
	link, err := p.h.LinkByName(probeDevice)
	if err != nil {
		return nil, fmt.Errorf("look up the probe device: %w", err)
	}
	p.index = link.Attrs().Index
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(vtep.AsSlice()), Mask: net.CIDRMask(32, 32)}}
	if err := p.h.AddrReplace(link, addr); err != nil {
		return nil, fmt.Errorf("set the probe address %s: %w", vtep, err)
	}
	if err := p.h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set the probe device up: %w", err)
	}
	// Every other host's VTEP is on the device: one route for all.
	all := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if err := p.h.RouteReplace(&netlink.Route{LinkIndex: p.index, Dst: all, Scope: netlink.SCOPE_LINK}); err != nil {
		return nil, fmt.Errorf("route the probe segment: %w", err)
	}
	hostport := net.JoinHostPort(vtep.String(), strconv.Itoa(ProbeUDPPort))
	err = inNamespace(ns, func() error {
		c, lerr := net.ListenPacket("udp4", hostport)
		if lerr != nil {
			return lerr
		}
		p.Conn = c.(*net.UDPConn)
		return setNoFragment(p.Conn)
	})
	if err != nil {
		return nil, fmt.Errorf("open the probe socket %s: %w", hostport, err)
	}
	return p, nil
}

// setNoFragment makes c send with DF and never fragment, whatever the
// path MTU the kernel has cached: a probe too large for the path is lost.
func setNoFragment(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	}); err != nil {
		return err
	}
	return serr
}

// SetPeers makes the probe device's entries those of exactly the hosts
// whose VTEPs are given (this host's own is skipped). Calling it again
// with the same set writes nothing.
func (p *ProbePort) SetPeers(vteps []netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil {
		return errors.New("probe port closed")
	}
	want := map[netip.Addr]bool{}
	var errs []error
	for _, v := range vteps {
		if !v.Is4() || v == p.VTEP {
			continue
		}
		want[v] = true
		if p.peers[v] {
			continue
		}
		ip, mac := net.IP(v.AsSlice()), ProbeMAC(v)
		if err := p.h.NeighSet(&netlink.Neigh{LinkIndex: p.index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: ip, HardwareAddr: mac}); err != nil {
			errs = append(errs, fmt.Errorf("set probe FDB entry %s -> %s: %w", mac, v, err))
			continue
		}
		if err := p.h.NeighSet(&netlink.Neigh{LinkIndex: p.index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: ip, HardwareAddr: mac}); err != nil {
			errs = append(errs, fmt.Errorf("set probe neighbour %s -> %s: %w", v, mac, err))
			continue
		}
		p.peers[v] = true
	}
	for v := range p.peers {
		if want[v] {
			continue
		}
		ip, mac := net.IP(v.AsSlice()), ProbeMAC(v)
		err1 := p.h.NeighDel(&netlink.Neigh{LinkIndex: p.index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, IP: ip, HardwareAddr: mac})
		err2 := p.h.NeighDel(&netlink.Neigh{LinkIndex: p.index, Family: unix.AF_INET, IP: ip})
		if (err1 != nil && !isNotFound(err1)) || (err2 != nil && !isNotFound(err2)) {
			errs = append(errs, fmt.Errorf("delete probe entries of %s: %w", v, errors.Join(err1, err2)))
			continue
		}
		delete(p.peers, v)
	}
	return errors.Join(errs...)
}

// Close closes the socket, deletes the device and releases the namespace.
// The device is deleted here rather than left to the namespace's teardown,
// which the kernel runs later in the background: a new probe port can take
// the VNI as soon as Close returns.
func (p *ProbePort) Close() {
	if p.Conn != nil {
		p.Conn.Close()
	}
	p.mu.Lock()
	if p.h != nil {
		if l, err := p.h.LinkByName(probeDevice); err == nil {
			_ = p.h.LinkDel(l)
		}
		p.h.Close()
		p.h = nil
	}
	p.mu.Unlock()
	p.ns.Close()
}
