package dataplane

// Flooding, for the networks that carry broadcast and multicast (opt-in):
// head-end replication. The device of such a network gets one all-zeros
// FDB entry (00:00:00:00:00:00 -> VTEP) per remote host with endpoints on
// it; the kernel sends a frame whose destination MAC has no FDB entry of
// its own once to each of those VTEPs. What that covers, as the kernel's
// VXLAN does it (TestFloodKernelFacts measures each):
//
//   - broadcast and multicast frames from the local containers: a macvlan
//     child (mode bridge) hands every group-addressed frame to its siblings
//     and to the VXLAN device, which replicates it;
//   - unknown unicast too: the all-zeros entry is the kernel's fallback for
//     any destination MAC it has no entry for. weft's table of sources
//     (antispoof/) drops those copies on a multicast network; the devices
//     alone would send them;
//   - not ARP, nor IPv6 neighbour solicitations: with proxy on, the device
//     answers them from its neighbour table, or drops them, and never
//     sends them.
//
// A network without the option has no all-zeros entry, so nothing is
// flooded there. The entries are written by the per-change path (one
// append or delete per VTEP that gains its first or loses its last
// endpoint on the network) and by the repair (SetFlood, the whole list).

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// zeroMAC is the MAC of the flood entries.
var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// isZeroMAC reports whether m is the all-zeros MAC of a flood entry.
func isZeroMAC(m net.HardwareAddr) bool {
	return len(m) == 6 && string(m) == string(zeroMAC)
}

// FloodRepair counts what one SetFlood call changed: VTEPs added and
// removed from the device's flood list.
type FloodRepair struct {
	Added, Removed int
}

// AddFlood appends vtep to the flood list of the device of vni (an
// all-zeros FDB entry towards it). An entry that exists is left as is.
func (k *Kernel) AddFlood(vni uint32, vtep net.IP) error {
	if vtep.To4() == nil {
		return fmt.Errorf("flood VTEP %v is not an IPv4 address", vtep)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	dev := DeviceName(vni)
	link, err := k.h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("look up device %s: %w", dev, err)
	}
	if err := k.addFlood(link.Attrs().Index, vtep); err != nil {
		return fmt.Errorf("add flood entry towards %s on %s: %w", vtep, dev, err)
	}
	k.log.Debug("flood entry set", "device", dev, "vtep", vtep.String())
	return nil
}

// DeleteFlood removes vtep from the flood list of the device of vni. An
// entry, or a device, already gone counts as done.
func (k *Kernel) DeleteFlood(vni uint32, vtep net.IP) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	dev := DeviceName(vni)
	link, err := k.h.LinkByName(dev)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up device %s: %w", dev, err)
	}
	if _, err := k.delFDB(link.Attrs().Index, zeroMAC, vtep); err != nil {
		return fmt.Errorf("delete flood entry towards %s on %s: %w", vtep, dev, err)
	}
	k.log.Debug("flood entry deleted", "device", dev, "vtep", vtep.String())
	return nil
}

// SetFlood makes the flood list of the device of vni exactly vteps (empty:
// nothing is flooded): missing entries are appended first, then entries
// towards VTEPs not in the list removed.
func (k *Kernel) SetFlood(vni uint32, vteps []net.IP) (FloodRepair, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var rep FloodRepair
	dev := DeviceName(vni)
	idx, have, err := k.floodList(dev)
	if err != nil {
		return rep, err
	}
	var errs []error
	want := map[string]bool{}
	for _, v := range vteps {
		if v.To4() == nil {
			errs = append(errs, fmt.Errorf("flood VTEP %v is not an IPv4 address", v))
			continue
		}
		want[v.String()] = true
		if slices.ContainsFunc(have, v.Equal) {
			continue
		}
		if err := k.addFlood(idx, v); err != nil {
			errs = append(errs, fmt.Errorf("add flood entry towards %s on %s: %w", v, dev, err))
			continue
		}
		rep.Added++
		k.log.Debug("flood entry set", "device", dev, "vtep", v.String())
	}
	for _, v := range have {
		if want[v.String()] {
			continue
		}
		gone, err := k.delFDB(idx, zeroMAC, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete flood entry towards %s on %s: %w", v, dev, err))
			continue
		}
		if gone {
			rep.Removed++
			k.log.Debug("flood entry deleted", "device", dev, "vtep", v.String())
		}
	}
	return rep, errors.Join(errs...)
}

// Flood returns the VTEPs of the flood list of the device of vni.
func (k *Kernel) Flood(vni uint32) ([]net.IP, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, have, err := k.floodList(DeviceName(vni))
	return have, err
}

// floodList returns the index of device dev and the VTEPs of its
// all-zeros FDB entries.
func (k *Kernel) floodList(dev string) (int, []net.IP, error) {
	link, err := k.h.LinkByName(dev)
	if err != nil {
		return 0, nil, fmt.Errorf("look up device %s: %w", dev, err)
	}
	idx := link.Attrs().Index
	fdb, err := retryDump(func() ([]netlink.Neigh, error) { return k.h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return 0, nil, fmt.Errorf("list FDB of %s: %w", dev, err)
	}
	var out []net.IP
	for _, n := range fdb {
		if n.IP != nil && isZeroMAC(n.HardwareAddr) {
			out = append(out, n.IP)
		}
	}
	return idx, out, nil
}

// addFlood appends the entry 00:00:00:00:00:00 -> vtep: an all-zeros entry
// holds a list of destinations, one per append (NeighSet would replace
// the list with one). Appending one that exists is EEXIST: done.
func (k *Kernel) addFlood(idx int, vtep net.IP) error {
	err := k.h.NeighAppend(&netlink.Neigh{
		LinkIndex:    idx,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		IP:           vtep,
		HardwareAddr: zeroMAC,
	})
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
