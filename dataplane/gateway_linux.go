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
	ns netns.NsHandle
	// UDP and TCP are sockets bound to the gateway address, port 53.
	UDP net.PacketConn
	TCP net.Listener
}

// Close releases the sockets and the namespace (and with it the child).
func (g *Gateway) Close() {
	if g.UDP != nil {
		g.UDP.Close()
	}
	if g.TCP != nil {
		g.TCP.Close()
	}
	g.ns.Close()
}

// OpenGateway makes the gateway of the network vni: a new namespace, a
// macvlan child of the device with the given MAC moved into it, addr on it,
// and UDP and TCP sockets bound to addr's address on port.
func (k *Kernel) OpenGateway(vni uint32, addr netip.Prefix, mac net.HardwareAddr, port int) (_ *Gateway, err error) {
	if !addr.Addr().Is4() {
		return nil, fmt.Errorf("gateway address %s is not IPv4", addr)
	}
	ns, err := newNamespace()
	if err != nil {
		return nil, fmt.Errorf("create gateway namespace for VNI %d: %w", vni, err)
	}
	g := &Gateway{ns: ns}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()

	name := "wg" + strconv.FormatUint(uint64(vni), 10)
	k.mu.Lock()
	defer k.mu.Unlock()
	parent, err := k.h.LinkByName(DeviceName(vni))
	if err != nil {
		return nil, fmt.Errorf("look up device of VNI %d: %w", vni, err)
	}
	// A child of that name left by an earlier, failed attempt goes first.
	if old, lerr := k.h.LinkByName(name); lerr == nil {
		_ = k.h.LinkDel(old)
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: parent.Attrs().Index, HardwareAddr: mac, MTU: parent.Attrs().MTU},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := k.h.LinkAdd(mv); err != nil {
		return nil, fmt.Errorf("create gateway interface %s: %w", name, err)
	}
	link, err := k.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up gateway interface %s: %w", name, err)
	}
	if err := k.h.LinkSetNsFd(link, int(ns)); err != nil {
		_ = k.h.LinkDel(link)
		return nil, fmt.Errorf("move gateway interface %s into its namespace: %w", name, err)
	}

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open gateway namespace: %w", err)
	}
	defer h.Close()
	for _, n := range []string{"lo", name} {
		l, err := h.LinkByName(n)
		if err != nil {
			return nil, fmt.Errorf("look up %s in gateway namespace: %w", n, err)
		}
		if n == name {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.Addr().AsSlice()), Mask: net.CIDRMask(addr.Bits(), 32)}}
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
		if g.UDP, lerr = net.ListenPacket("udp4", hostport); lerr != nil {
			return lerr
		}
		g.TCP, lerr = net.Listen("tcp4", hostport)
		return lerr
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in gateway namespace: %w", hostport, err)
	}
	k.log.Debug("gateway ready", "vni", vni, "addr", addr.String())
	return g, nil
}

// setUpRetry sets a link up. The kernel refuses a macvlan whose MAC a
// sibling still holds; after a plugin restart that sibling is the previous
// gateway, in a namespace the kernel is still tearing down, so wait for it.
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
