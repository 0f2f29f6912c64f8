package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Gateway is a network's service address on this host: a macvlan child of
// the network's VXLAN device, holding the network's gateway address, in a
// network namespace of its own that only the plugin's process holds. weft's
// DNS server listens there, so containers reach it on the gateway address
// through their weft interface, while the host's own namespace gets no
// route into the network (containers cannot reach the host through weft).
//
// Nothing else depends on it: when the plugin's process ends, the namespace
// and the child go with it, and a new process makes them again; container
// traffic never passes through it.
type Gateway struct {
	ns   netns.NsHandle
	name string // the child's name in ns
	// UDP and TCP are sockets bound to the gateway address, port 53.
	UDP net.PacketConn
	TCP net.Listener
}

// Close deletes the child, releases the sockets and the namespace. The
// child goes first: a query that arrives while the server stops then finds
// no address and is asked again by its client, where one that found the
// address with its socket closed would be refused (ICMP port unreachable)
// and fail at once. It is deleted here rather than left to the kernel's
// teardown of the namespace, which runs later in the background: its MAC
// is free, and its address silent, when Close returns.
func (g *Gateway) Close() {
	if h, err := netlink.NewHandleAt(g.ns); err == nil {
		if l, err := h.LinkByName(g.name); err == nil {
			_ = h.LinkDel(l)
		}
		h.Close()
	}
	if g.UDP != nil {
		g.UDP.Close()
	}
	if g.TCP != nil {
		g.TCP.Close()
	}
	g.ns.Close()
}

// OpenGateway makes the gateway of the network vni: a new namespace, a
// macvlan child of the device with the given MAC in it, addr on it, and
// UDP and TCP sockets bound to addr's address on port. A dual-stack
// network has a second gateway for its IPv6 address (its own namespace
// and child, with another MAC): addr may be IPv6, and is then usable at
// once (no duplicate address detection: the address is weft's).
func (k *Kernel) OpenGateway(vni uint32, addr netip.Prefix, mac net.HardwareAddr, port int) (_ *Gateway, err error) {
	bits, udp, tcp := 32, "udp4", "tcp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		bits, udp, tcp = 128, "udp6", "tcp6"
	} else if !addr.Addr().Is4() {
		return nil, fmt.Errorf("gateway address %s is not IPv4 nor IPv6", addr)
	}
	ns, err := newNamespace()
	if err != nil {
		return nil, fmt.Errorf("create gateway namespace for VNI %d: %w", vni, err)
	}
	g := &Gateway{ns: ns, name: "wg" + strconv.FormatUint(uint64(vni), 10)}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	if err := k.addGatewayChild(vni, g, mac); err != nil {
		return nil, err
	}

	// The rest happens in the gateway's namespace, without k.mu: waiting
	// here must not hold up the kernel writes of the host namespace.
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open gateway namespace: %w", err)
	}
	defer h.Close()
	for _, n := range []string{"lo", g.name} {
		l, err := h.LinkByName(n)
		if err != nil {
			return nil, fmt.Errorf("look up %s in gateway namespace: %w", n, err)
		}
		if n == g.name {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.Addr().AsSlice()), Mask: net.CIDRMask(addr.Bits(), bits)}}
			if bits == 128 {
				a.Flags = unix.IFA_F_NODAD
			}
			if err := h.AddrReplace(l, a); err != nil {
				return nil, fmt.Errorf("set gateway address %s: %w", addr, err)
			}
		}
		if err := setUpRetry(h, l); err != nil {
			return nil, fmt.Errorf("set %s up in gateway namespace: %w", n, err)
		}
	}

	hostport := net.JoinHostPort(addr.Addr().String(), strconv.Itoa(port))
	err = inNamespace(ns, func() error {
		var lerr error
		if g.UDP, lerr = net.ListenPacket(udp, hostport); lerr != nil {
			return lerr
		}
		g.TCP, lerr = net.Listen(tcp, hostport)
		return lerr
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in gateway namespace: %w", hostport, err)
	}
	k.log.Debug("gateway ready", "vni", vni, "addr", addr.String())
	return g, nil
}

// addGatewayChild creates the gateway's macvlan child of the device of vni
// straight in the gateway's namespace.
func (k *Kernel) addGatewayChild(vni uint32, g *Gateway, mac net.HardwareAddr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	parent, err := k.h.LinkByName(DeviceName(vni))
	if err != nil {
		return fmt.Errorf("look up device of VNI %d: %w", vni, err)
	}
	// A child of that name in the host namespace (left by a version that
	// made the child there and moved it) holds the MAC: it goes first.
	if old, lerr := k.h.LinkByName(g.name); lerr == nil {
		if _, ok := old.(*netlink.Macvlan); ok {
			_ = k.h.LinkDel(old)
		}
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: g.name, ParentIndex: parent.Attrs().Index, HardwareAddr: mac, MTU: parent.Attrs().MTU, Namespace: netlink.NsFd(int(g.ns))},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := k.h.LinkAdd(mv); err != nil {
		return fmt.Errorf("create gateway interface %s: %w", g.name, err)
	}
	return nil
}

// setUpRetry sets a link up. The kernel refuses a macvlan whose MAC a
// sibling still holds. After a plugin restart that sibling is the previous
// process's gateway, in a namespace the kernel is still tearing down in
// the background; nothing in this process is told when that ends (the
// sibling's removal is announced only in its own namespace), so this polls,
// for at most 5 s and without holding the Kernel's lock. A gateway closed
// by this process (Close) deletes its child at once and never makes it wait.
func setUpRetry(h *netlink.Handle, l netlink.Link) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := h.LinkSetUp(l)
		if err == nil || !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newNamespace creates a network namespace and returns a handle to it,
// leaving the calling thread where it was.
func newNamespace() (netns.NsHandle, error) {
	var ns netns.NsHandle
	err := onLockedThread(func(orig netns.NsHandle) error {
		var err error
		ns, err = netns.New() // switches this thread into it
		return err
	})
	return ns, err
}

// inNamespace runs fn with the calling goroutine's thread switched into
// ns. Sockets opened by fn stay in ns. fn must not start goroutines.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	return onLockedThread(func(netns.NsHandle) error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter namespace: %w", err)
		}
		return fn()
	})
}

// onLockedThread runs fn on a thread of its own, then switches that thread
// back to its original namespace. If that fails the thread is left locked,
// so that the runtime ends it rather than reuse it in the wrong namespace.
func onLockedThread(fn func(orig netns.NsHandle) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current namespace: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn(orig)
		if serr := netns.Set(orig); serr != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("return to the original namespace: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
