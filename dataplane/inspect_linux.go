package dataplane

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Inspection reads what weft left in a network namespace, for the end-to-end
// tests' invariant checks and for a status report. It only reads: it opens
// a netlink handle in the namespace (never switching the calling thread to
// it) and dumps links and neighbour tables. Its types are its own, so that
// a reader of kernel state does not depend on how the writer names things.

// KernelState is a snapshot of one network namespace.
type KernelState struct {
	// Links are every link of the namespace, by name.
	Links []Link
	// Devices are weft's VXLAN devices (named DevicePrefix + VNI), by VNI,
	// with their forwarding and neighbour tables.
	Devices []VXLANDevice
}

// Link is one network interface.
type Link struct {
	Name  string
	Index int
	// Kind is the link's type as iproute2 names it: "vxlan", "macvlan",
	// "veth", "bridge", "device" (loopback and plain devices), ...
	Kind string
	MTU  int
	MAC  net.HardwareAddr
	// Up is the administrative state (IFF_UP).
	Up bool
	// Master is the bridge the link is a port of, or "".
	Master string
	// Parent is the link this one is stacked on (a macvlan's device, a
	// veth's peer) when that link is in the same namespace, or "".
	Parent string
	// MacvlanMode is a macvlan's mode ("bridge", "private", ...), or "".
	MacvlanMode string
}

// VXLANDevice is one of weft's VXLAN devices.
type VXLANDevice struct {
	Link
	VNI      uint32
	Port     int
	Learning bool
	Proxy    bool
	// FDB is every entry of the device's forwarding table.
	FDB []FDBEntry
	// Neighbors is every IPv4 neighbour entry of the device.
	Neighbors []NeighborEntry
}

// FDBEntry is a forwarding entry of a VXLAN device: frames to MAC go to
// the host at VTEP.
type FDBEntry struct {
	MAC  net.HardwareAddr
	VTEP netip.Addr // invalid when the entry has no destination
	// Permanent is set on static entries (weft writes only those).
	Permanent bool
}

// String is "MAC VTEP", with "-" for a missing VTEP.
func (e FDBEntry) String() string { return e.MAC.String() + " " + addrOrDash(e.VTEP) }

// NeighborEntry is an IPv4 neighbour entry: IP is at MAC.
type NeighborEntry struct {
	IP  netip.Addr
	MAC net.HardwareAddr
	// Permanent is set on static entries (weft writes only those).
	Permanent bool
}

// String is "IP MAC".
func (e NeighborEntry) String() string { return addrOrDash(e.IP) + " " + macOrDash(e.MAC) }

// Link returns the link named name, or nil.
func (s *KernelState) Link(name string) *Link {
	for i := range s.Links {
		if s.Links[i].Name == name {
			return &s.Links[i]
		}
	}
	return nil
}

// LinksOfKind returns the links of one kind ("macvlan", "veth", ...).
func (s *KernelState) LinksOfKind(kind string) []Link {
	var out []Link
	for _, l := range s.Links {
		if l.Kind == kind {
			out = append(out, l)
		}
	}
	return out
}

// Device returns weft's VXLAN device of vni, or nil.
func (s *KernelState) Device(vni uint32) *VXLANDevice {
	for i := range s.Devices {
		if s.Devices[i].VNI == vni {
			return &s.Devices[i]
		}
	}
	return nil
}

// Inspect reads the weft state of the network namespace whose file is
// nsPath: /run/netns/<name> for a named namespace, /proc/<pid>/ns/net for a
// process's.
func Inspect(nsPath string) (*KernelState, error) {
	ns, h, err := openNS(nsPath)
	if err != nil {
		return nil, err
	}
	ns.Close()
	defer h.Close()

	links, err := retryDump(func() ([]netlink.Link, error) { return h.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", nsPath, err)
	}
	fdb, err := retryDump(func() ([]netlink.Neigh, error) { return h.NeighList(0, unix.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("list forwarding entries in %s: %w", nsPath, err)
	}
	neigh, err := retryDump(func() ([]netlink.Neigh, error) { return h.NeighList(0, unix.AF_INET) })
	if err != nil {
		return nil, fmt.Errorf("list neighbour entries in %s: %w", nsPath, err)
	}
	nd, err := retryDump(func() ([]netlink.Neigh, error) { return h.NeighList(0, unix.AF_INET6) })
	if err != nil {
		return nil, fmt.Errorf("list IPv6 neighbour entries in %s: %w", nsPath, err)
	}
	for _, n := range nd {
		// The kernel's own entries for multicast groups are no
		// neighbours.
		if !n.IP.IsMulticast() {
			neigh = append(neigh, n)
		}
	}

	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	s := &KernelState{}
	for _, l := range links {
		a := l.Attrs()
		link := Link{
			Name:   a.Name,
			Index:  a.Index,
			Kind:   l.Type(),
			MTU:    a.MTU,
			MAC:    a.HardwareAddr,
			Up:     a.Flags&net.FlagUp != 0,
			Master: names[a.MasterIndex],
		}
		if a.NetNsID < 0 {
			link.Parent = names[a.ParentIndex]
		}
		if mv, ok := l.(*netlink.Macvlan); ok {
			link.MacvlanMode = macvlanModes[mv.Mode]
		}
		s.Links = append(s.Links, link)

		v, ok := l.(*netlink.Vxlan)
		if !ok {
			continue
		}
		vni, ok := ParseDeviceName(a.Name)
		if !ok {
			continue
		}
		d := VXLANDevice{Link: link, VNI: vni, Port: v.Port, Learning: v.Learning, Proxy: v.Proxy}
		for _, n := range fdb {
			if n.LinkIndex == a.Index && n.HardwareAddr != nil {
				d.FDB = append(d.FDB, FDBEntry{MAC: n.HardwareAddr, VTEP: toAddr(n.IP), Permanent: n.State&netlink.NUD_PERMANENT != 0})
			}
		}
		for _, n := range neigh {
			if n.LinkIndex == a.Index && n.IP != nil {
				d.Neighbors = append(d.Neighbors, NeighborEntry{IP: toAddr(n.IP), MAC: n.HardwareAddr, Permanent: n.State&netlink.NUD_PERMANENT != 0})
			}
		}
		slices.SortFunc(d.FDB, func(a, b FDBEntry) int { return strings.Compare(a.String(), b.String()) })
		slices.SortFunc(d.Neighbors, func(a, b NeighborEntry) int { return a.IP.Compare(b.IP) })
		s.Devices = append(s.Devices, d)
	}
	slices.SortFunc(s.Links, func(a, b Link) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Devices, func(a, b VXLANDevice) int { return cmp.Compare(a.VNI, b.VNI) })
	return s, nil
}

// EntryChange is an FDB or neighbour entry of a weft VXLAN device that
// appeared, changed or went away.
type EntryChange struct {
	Device  string
	Deleted bool
	// FDB tells a forwarding entry (MAC -> IP, the VTEP) from a neighbour
	// entry (IP -> MAC).
	FDB bool
	IP  netip.Addr
	MAC net.HardwareAddr
}

// String reads like a line of `bridge monitor` or `ip monitor`.
func (c EntryChange) String() string {
	what := "neighbour " + addrOrDash(c.IP) + " lladdr " + macOrDash(c.MAC)
	if c.FDB {
		what = "fdb " + macOrDash(c.MAC) + " dst " + addrOrDash(c.IP)
	}
	verb := "set"
	if c.Deleted {
		verb = "deleted"
	}
	return fmt.Sprintf("%s %s dev %s", verb, what, c.Device)
}

// EntryWatch records the changes of the FDB and neighbour entries of weft's
// VXLAN devices in one namespace, from WatchEntries until Stop.
type EntryWatch struct {
	done chan struct{}
	ch   chan netlink.NeighUpdate
	h    *netlink.Handle
	ns   string

	// mu guards the fields below, written by the receiving goroutine.
	mu      sync.Mutex
	changes []EntryChange
	err     error // the error that ended the subscription early
	names   map[int]string
	ended   chan struct{}
}

// WatchEntries starts recording the entry changes in the namespace whose
// file is nsPath. Every change the kernel reports after it returns is
// recorded; Stop returns them.
func WatchEntries(nsPath string) (*EntryWatch, error) {
	ns, h, err := openNS(nsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	w := &EntryWatch{
		done:  make(chan struct{}),
		ch:    make(chan netlink.NeighUpdate, 256),
		h:     h,
		ns:    nsPath,
		names: map[int]string{},
		ended: make(chan struct{}),
	}
	opts := netlink.NeighSubscribeOptions{
		Namespace:     &ns,
		ErrorCallback: w.fail,
		// Room for a burst (a plugin restart rewrites every entry) so that
		// the kernel never drops a notification (ENOBUFS) before we read it.
		ReceiveBufferSize: 4 << 20,
	}
	if err := netlink.NeighSubscribeWithOptions(w.ch, w.done, opts); err != nil {
		h.Close()
		return nil, fmt.Errorf("subscribe to neighbour changes in %s: %w", nsPath, err)
	}
	// Names of the devices that exist now, for entries deleted together
	// with their device.
	if links, err := retryDump(func() ([]netlink.Link, error) { return h.LinkList() }); err == nil {
		for _, l := range links {
			w.names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	go w.receive()
	return w, nil
}

func (w *EntryWatch) receive() {
	defer close(w.ended)
	for u := range w.ch {
		dev := w.deviceName(u.LinkIndex)
		if _, ok := ParseDeviceName(dev); !ok {
			continue
		}
		c := EntryChange{Device: dev, Deleted: u.Type == unix.RTM_DELNEIGH, MAC: u.HardwareAddr, IP: toAddr(u.IP)}
		switch u.Family {
		case unix.AF_BRIDGE:
			c.FDB = true
		case unix.AF_INET, unix.AF_INET6:
		default:
			continue
		}
		w.mu.Lock()
		w.changes = append(w.changes, c)
		w.mu.Unlock()
	}
}

// deviceName names the link of index idx, as it is now or, if it is gone,
// as it was when it was last seen.
func (w *EntryWatch) deviceName(idx int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l, err := w.h.LinkByIndex(idx); err == nil {
		w.names[idx] = l.Attrs().Name
	}
	return w.names[idx]
}

func (w *EntryWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil && !w.stopped() {
		w.err = fmt.Errorf("watch of entry changes in %s ended: %w", w.ns, err)
	}
}

func (w *EntryWatch) stopped() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Stop ends the watch and returns the changes recorded, in the order the
// kernel reported them, and an error if the watch ended early (changes may
// then be missing). It may be called more than once.
func (w *EntryWatch) Stop() ([]EntryChange, error) {
	w.mu.Lock()
	if !w.stopped() {
		close(w.done)
	}
	w.mu.Unlock()
	<-w.ended
	w.mu.Lock()
	defer w.mu.Unlock()
	w.h.Close()
	return slices.Clone(w.changes), w.err
}

// openNS opens the namespace at nsPath and a route netlink handle in it.
// The handle works on its own; the namespace is for subscriptions.
func openNS(nsPath string) (netns.NsHandle, *netlink.Handle, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return ns, nil, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return ns, nil, fmt.Errorf("open netlink handle in %s: %w", nsPath, err)
	}
	return ns, h, nil
}

var macvlanModes = map[netlink.MacvlanMode]string{
	netlink.MACVLAN_MODE_PRIVATE:  "private",
	netlink.MACVLAN_MODE_VEPA:     "vepa",
	netlink.MACVLAN_MODE_BRIDGE:   "bridge",
	netlink.MACVLAN_MODE_PASSTHRU: "passthru",
	netlink.MACVLAN_MODE_SOURCE:   "source",
}

func toAddr(ip net.IP) netip.Addr {
	if v4 := ip.To4(); v4 != nil {
		return netip.AddrFrom4([4]byte(v4))
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}

func addrOrDash(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func macOrDash(m net.HardwareAddr) string {
	if len(m) == 0 {
		return "-"
	}
	return m.String()
}
