package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel programs one network namespace through netlink. It is safe for
// concurrent use; writes are serialised so that a reconcile of a device
// never interleaves with another.
type Kernel struct {
	log *slog.Logger

	// mu serialises all netlink writes and guards the fields below.
	mu sync.Mutex
	h  *netlink.Handle
	// announcers holds each segment's announcer (announce_linux.go), and
	// announceErr the last error making it, logged once.
	announcers  map[uint32]*announcer
	announceErr map[uint32]string
}

func kernelOn(h *netlink.Handle, log *slog.Logger) *Kernel {
	return &Kernel{h: h, log: orDiscard(log), announcers: map[uint32]*announcer{}, announceErr: map[uint32]string{}}
}

// NewKernel returns a Kernel for the calling process's network namespace.
func NewKernel(log *slog.Logger) (*Kernel, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	return kernelOn(h, log), nil
}

// NewKernelAt returns a Kernel for the network namespace ns (used by tests
// that work in a fresh namespace).
func NewKernelAt(ns netns.NsHandle, log *slog.Logger) (*Kernel, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle in namespace: %w", err)
	}
	return kernelOn(h, log), nil
}

// Close releases the netlink handle and the announcers (the kernel entries
// and devices stay).
func (k *Kernel) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for vni := range k.announcers {
		k.closeAnnouncerLocked(vni)
	}
	k.h.Close()
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// EnsureSegment creates the VXLAN device of n, or adopts the one that exists
// if it is compatible. An existing device with another UDP port is replaced;
// one with another MTU gets its MTU changed in place, so that the
// containers attached to it keep their interfaces. Lowering it lowers
// every macvlan child above the new MTU with it, inside the containers'
// namespaces too (the kernel does so for macvlan children); raising it
// leaves the children where they are, so a container keeps the smaller MTU
// until its interface is made again.
func (k *Kernel) EnsureSegment(n Segment) error {
	if err := n.Validate(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	name := DeviceName(n.VNI)
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, MTU: n.MTU},
		VxlanId:   int(n.VNI),
		Port:      n.Port,
		Learning:  false,
		Proxy:     true,
	}
	err := k.h.LinkAdd(want)
	if errors.Is(err, unix.EEXIST) {
		var have netlink.Link
		have, err = k.h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("look up existing device %s: %w", name, err)
		}
		if !compatible(have, want) {
			k.log.Warn("replacing incompatible VXLAN device", "device", name, "vni", n.VNI)
			if err := k.h.LinkDel(have); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete incompatible device %s: %w", name, err)
			}
			err = k.h.LinkAdd(want)
		} else {
			err = nil
			if have.Attrs().MTU != n.MTU {
				if err := k.h.LinkSetMTU(have, n.MTU); err != nil {
					return fmt.Errorf("set MTU %d on %s: %w", n.MTU, name, err)
				}
			}
		}
	}
	if err != nil {
		return fmt.Errorf("create VXLAN device %s (VNI %d, port %d): %w", name, n.VNI, n.Port, err)
	}
	link, err := k.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up device %s: %w", name, err)
	}
	if err := k.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	// Without its announcer a segment still works; its containers only
	// wait for their own ARP retries. So a failure is logged, not
	// returned, and the next EnsureSegment tries again.
	if err := k.ensureAnnouncerLocked(n.VNI, link); err != nil {
		if k.announceErr[n.VNI] != err.Error() {
			k.log.Warn("remote endpoints will not be announced to local containers", "device", name, "err", err)
		}
		k.announceErr[n.VNI] = err.Error()
	} else {
		delete(k.announceErr, n.VNI)
	}
	k.log.Debug("vxlan device ready", "device", name, "vni", n.VNI, "mtu", n.MTU)
	return nil
}

func compatible(have netlink.Link, want *netlink.Vxlan) bool {
	v, ok := have.(*netlink.Vxlan)
	if !ok {
		return false
	}
	return v.VxlanId == want.VxlanId && v.Port == want.Port && !v.Learning && v.Proxy
}

// DeleteSegment removes the VXLAN device of vni and, with it, every macvlan
// child still in the host namespace, and the segment's announcer. A missing
// device is not an error.
func (k *Kernel) DeleteSegment(vni uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closeAnnouncerLocked(vni)
	delete(k.announceErr, vni)
	name := DeviceName(vni)
	link, err := k.h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up device %s: %w", name, err)
	}
	if err := k.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete device %s: %w", name, err)
	}
	k.log.Debug("vxlan device deleted", "device", name)
	return nil
}

// Segments returns the VNIs of the weft VXLAN devices in the namespace.
func (k *Kernel) Segments() ([]uint32, error) {
	links, err := retryDump(func() ([]netlink.Link, error) { return k.h.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var vnis []uint32
	for _, l := range links {
		if _, ok := l.(*netlink.Vxlan); !ok {
			continue
		}
		if vni, ok := ParseDeviceName(l.Attrs().Name); ok {
			vnis = append(vnis, vni)
		}
	}
	return vnis, nil
}

// CreateInterface creates the macvlan child name of the device of vni, with
// the given MAC, ready for Docker to move into a container. An existing
// child of that name on the same device is reused (with its MAC set again).
func (k *Kernel) CreateInterface(vni uint32, name string, mac net.HardwareAddr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	dev := DeviceName(vni)
	parent, err := k.h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("look up device %s for interface %s: %w", dev, name, err)
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:         name,
			ParentIndex:  parent.Attrs().Index,
			HardwareAddr: mac,
			MTU:          parent.Attrs().MTU,
		},
		Mode: netlink.MACVLAN_MODE_BRIDGE,
	}
	err = k.h.LinkAdd(mv)
	if errors.Is(err, unix.EEXIST) {
		have, lerr := k.h.LinkByName(name)
		if lerr != nil {
			return fmt.Errorf("look up existing interface %s: %w", name, lerr)
		}
		if _, ok := have.(*netlink.Macvlan); !ok || have.Attrs().ParentIndex != parent.Attrs().Index {
			if err := k.h.LinkDel(have); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete stale interface %s: %w", name, err)
			}
			err = k.h.LinkAdd(mv)
		} else {
			err = k.h.LinkSetHardwareAddr(have, mac)
		}
	}
	if err != nil {
		return fmt.Errorf("create macvlan %s on %s: %w", name, dev, err)
	}
	k.log.Debug("interface created", "interface", name, "device", dev, "mac", mac.String())
	return nil
}

// DeleteInterface removes a macvlan child that is still in the host
// namespace. One that is gone (moved into a container that ended, or
// never made) is not an error.
func (k *Kernel) DeleteInterface(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	link, err := k.h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up interface %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Macvlan); !ok {
		return fmt.Errorf("refusing to delete %s: it is a %s, not a weft macvlan", name, link.Type())
	}
	if err := k.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete interface %s: %w", name, err)
	}
	k.log.Debug("interface deleted", "interface", name)
	return nil
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed underneath it.
func retryDump[T any](f func() ([]T, error)) ([]T, error) {
	var (
		out []T
		err error
	)
	for range 5 {
		out, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH)
}
