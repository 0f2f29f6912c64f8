package dataplane

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Remote endpoints are written two ways. SetRemote and DeleteRemote are the
// per-change writes: one endpoint, a fixed number of netlink requests, no
// dump, whatever the size of the segment. SetRemotes is the repair: it reads
// both tables of the device and makes them exactly the desired set, at a
// cost that grows with the table (tens of milliseconds at 10,000 entries),
// so it runs on a timer and after a restart, not on every change.
//
// The kernel keys the entries by MAC (FDB) and by IP (neighbour), not by
// endpoint; only the caller knows which endpoint holds which key now. So the
// caller keeps the desired table, and before DeleteRemote of an endpoint
// that went away it must leave out the keys another desired endpoint holds
// now (the IP of a container re-created with a new MAC, the MAC of one that
// moved to another host): a nil IP leaves the neighbour table alone, a nil
// MAC the FDB.

// SetRemote writes the entries of one remote endpoint on the device of
// vni: the FDB entry r.MAC -> r.VTEP and the permanent neighbour entry
// r.IP -> r.MAC, each replacing what the kernel held for that MAC or IP.
// It reads nothing back, so calling it again with the same r is harmless.
// It then announces r to the segment's local containers (announce_linux.go),
// so that one that asked for r.IP before it was programmed, or holds an
// older MAC for it, uses the new entry at once.
func (k *Kernel) SetRemote(vni uint32, r RemoteEndpoint) error {
	if err := r.Validate(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	dev := DeviceName(vni)
	link, err := k.h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("look up device %s: %w", dev, err)
	}
	idx := link.Attrs().Index
	if err := k.setFDB(idx, r); err != nil {
		return fmt.Errorf("set FDB entry %s -> %s on %s: %w", r.MAC, r.VTEP, dev, err)
	}
	if err := k.setNeigh(idx, r.IP, r.MAC); err != nil {
		return fmt.Errorf("set neighbour %s -> %s on %s: %w", r.IP, r.MAC, dev, err)
	}
	if r.IP6 != nil {
		if err := k.setNeigh(idx, r.IP6, r.MAC); err != nil {
			return fmt.Errorf("set neighbour %s -> %s on %s: %w", r.IP6, r.MAC, dev, err)
		}
	}
	k.log.Debug("remote endpoint set", "device", dev, "ip", r.IP.String(), "mac", r.MAC.String(), "vtep", r.VTEP.String())
	k.announceLocked(vni, []RemoteEndpoint{r})
	return nil
}

// DeleteRemote removes the entries of one remote endpoint from the device
// of vni: the FDB entry of r.MAC towards r.VTEP only (the kernel's VXLAN
// FDB delete with a destination removes only that remote, so an entry that
// already points elsewhere stays), and the neighbour entry of r.IP. A nil
// IP leaves the neighbour table alone; a nil MAC or VTEP leaves the FDB
// alone. Entries, or a device, already gone count as done.
func (k *Kernel) DeleteRemote(vni uint32, r RemoteEndpoint) error {
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
	idx := link.Attrs().Index
	var errs []error
	if len(r.MAC) == 6 && r.VTEP.To4() != nil {
		if _, err := k.delFDB(idx, r.MAC, r.VTEP); err != nil {
			errs = append(errs, fmt.Errorf("delete FDB entry %s -> %s on %s: %w", r.MAC, r.VTEP, dev, err))
		}
	}
	for _, ip := range []net.IP{r.IP.To4(), r.IP6} {
		if ip == nil {
			continue
		}
		if _, err := k.delNeigh(idx, ip); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %s on %s: %w", ip, dev, err))
		}
	}
	k.log.Debug("remote endpoint deleted", "device", dev, "ip", r.IP.String(), "mac", r.MAC.String(), "vtep", r.VTEP.String())
	return errors.Join(errs...)
}

// SetRemotes makes the static FDB and neighbour entries of the device of
// vni exactly those of remotes: missing or wrong entries are written, then
// entries for endpoints no longer wanted are removed (add before delete, so
// a moved endpoint is never unreachable in between). It reports what it
// changed; on a kernel that already held the set, nothing. The endpoints
// whose entries it wrote are announced as SetRemote does.
func (k *Kernel) SetRemotes(vni uint32, remotes []RemoteEndpoint) (Repair, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var rep Repair
	dev := DeviceName(vni)
	idx, fdb, arp, err := k.tables(dev)
	if err != nil {
		return rep, err
	}

	// What the kernel has: MAC -> VTEP, IP -> MAC.
	haveFDB := map[string]string{}
	for _, n := range fdb {
		if isStaticFDB(n) {
			haveFDB[n.HardwareAddr.String()] = n.IP.String()
		}
	}
	haveARP := map[string]string{}
	for _, n := range arp {
		if isStaticNeigh(n) {
			haveARP[n.IP.String()] = n.HardwareAddr.String()
		}
	}

	wantFDB := map[string]RemoteEndpoint{}
	wantARP := map[string]RemoteEndpoint{} // by IPv4 and IPv6 address
	addr := map[string]net.IP{}
	for _, r := range remotes {
		if err := r.Validate(); err != nil {
			k.log.Warn("skipping malformed remote endpoint", "device", dev, "err", err)
			continue
		}
		wantFDB[r.MAC.String()] = r
		wantARP[r.IP.String()], addr[r.IP.String()] = r, r.IP
		if r.IP6 != nil {
			wantARP[r.IP6.String()], addr[r.IP6.String()] = r, r.IP6
		}
	}

	var errs []error
	rewritten := map[string]bool{}
	announce := map[string]RemoteEndpoint{}
	for mac, r := range wantFDB {
		if haveFDB[mac] == r.VTEP.String() {
			continue
		}
		if err := k.setFDB(idx, r); err != nil {
			errs = append(errs, fmt.Errorf("set FDB entry %s -> %s on %s: %w", mac, r.VTEP, dev, err))
			continue
		}
		rep.FDBAdded++
		rewritten[mac] = true
		announce[remoteKey(r)] = r
		k.log.Debug("fdb set", "device", dev, "mac", mac, "vtep", r.VTEP.String())
	}
	for ip, r := range wantARP {
		if haveARP[ip] == r.MAC.String() {
			continue
		}
		if err := k.setNeigh(idx, addr[ip], r.MAC); err != nil {
			errs = append(errs, fmt.Errorf("set neighbour %s -> %s on %s: %w", ip, r.MAC, dev, err))
			continue
		}
		rep.NeighAdded++
		announce[remoteKey(r)] = r
		k.log.Debug("neighbour set", "device", dev, "ip", ip, "mac", r.MAC.String())
	}
	for _, n := range fdb {
		if !isStaticFDB(n) {
			continue
		}
		mac := n.HardwareAddr.String()
		if r, ok := wantFDB[mac]; ok && (r.VTEP.Equal(n.IP) || rewritten[mac]) {
			// Wanted, or rewritten above towards the wanted VTEP (the
			// kernel replaced the destination; deleting the old one would
			// find nothing, and report success).
			continue
		}
		gone, err := k.delFDB(idx, n.HardwareAddr, n.IP)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete FDB entry %s -> %s on %s: %w", n.HardwareAddr, n.IP, dev, err))
			continue
		}
		if gone {
			rep.FDBRemoved++
			k.log.Debug("fdb deleted", "device", dev, "mac", n.HardwareAddr.String())
		}
	}
	for _, n := range arp {
		if !isStaticNeigh(n) {
			continue
		}
		// A wanted IP holds its MAC, or was rewritten above: deleting by IP
		// would remove the new entry.
		if _, ok := wantARP[n.IP.String()]; ok {
			continue
		}
		gone, err := k.delNeigh(idx, n.IP)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %s on %s: %w", n.IP, dev, err))
			continue
		}
		if gone {
			rep.NeighRemoved++
			k.log.Debug("neighbour deleted", "device", dev, "ip", n.IP.String())
		}
	}
	if len(announce) > 0 {
		rs := make([]RemoteEndpoint, 0, len(announce))
		for _, r := range announce {
			rs = append(rs, r)
		}
		k.announceLocked(vni, rs)
	}
	return rep, errors.Join(errs...)
}

// Remotes returns the remote endpoints programmed on the device of vni: one
// per permanent IPv4 neighbour entry whose MAC also has a static FDB entry,
// with the IPv6 address of a permanent IPv6 entry to the same MAC.
func (k *Kernel) Remotes(vni uint32) ([]RemoteEndpoint, error) {
	_, fdb, arp, err := k.tables(DeviceName(vni))
	if err != nil {
		return nil, err
	}
	vtep := map[string]net.IP{}
	for _, n := range fdb {
		if isStaticFDB(n) {
			vtep[n.HardwareAddr.String()] = n.IP
		}
	}
	ip6 := map[string]net.IP{}
	for _, n := range arp {
		if isStaticNeigh(n) && isIPv6(n.IP) {
			ip6[n.HardwareAddr.String()] = n.IP
		}
	}
	var out []RemoteEndpoint
	for _, n := range arp {
		if !isStaticNeigh(n) || n.IP.To4() == nil {
			continue
		}
		if v, ok := vtep[n.HardwareAddr.String()]; ok {
			out = append(out, RemoteEndpoint{IP: n.IP, MAC: n.HardwareAddr, VTEP: v, IP6: ip6[n.HardwareAddr.String()]})
		}
	}
	return out, nil
}

// tables returns the index of device dev and its FDB and neighbour tables.
func (k *Kernel) tables(dev string) (idx int, fdb, arp []netlink.Neigh, err error) {
	link, err := k.h.LinkByName(dev)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("look up device %s: %w", dev, err)
	}
	idx = link.Attrs().Index
	fdb, err = retryDump(func() ([]netlink.Neigh, error) { return k.h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return 0, nil, nil, fmt.Errorf("list FDB of %s: %w", dev, err)
	}
	arp, err = retryDump(func() ([]netlink.Neigh, error) { return k.h.NeighList(idx, unix.AF_INET) })
	if err != nil {
		return 0, nil, nil, fmt.Errorf("list neighbours of %s: %w", dev, err)
	}
	nd, err := retryDump(func() ([]netlink.Neigh, error) { return k.h.NeighList(idx, unix.AF_INET6) })
	if err != nil {
		return 0, nil, nil, fmt.Errorf("list IPv6 neighbours of %s: %w", dev, err)
	}
	return idx, fdb, append(arp, nd...), nil
}

// isStaticFDB reports whether n is an FDB entry weft writes for a remote
// endpoint: a permanent MAC -> VTEP entry (not a flood entry, whose MAC is
// all zeros: flood_linux.go owns those).
func isStaticFDB(n netlink.Neigh) bool {
	return n.IP != nil && n.HardwareAddr != nil && n.State&netlink.NUD_PERMANENT != 0 && !isZeroMAC(n.HardwareAddr)
}

// isStaticNeigh reports whether n is a neighbour entry weft writes: a
// permanent IP -> MAC entry (IPv4 or IPv6).
func isStaticNeigh(n netlink.Neigh) bool {
	return n.IP != nil && n.State&netlink.NUD_PERMANENT != 0
}

// setFDB writes the FDB entry r.MAC -> r.VTEP (NTF_SELF: into the VXLAN
// device's own table), replacing the destination of an entry for r.MAC.
func (k *Kernel) setFDB(idx int, r RemoteEndpoint) error {
	return k.h.NeighSet(&netlink.Neigh{
		LinkIndex:    idx,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		IP:           r.VTEP,
		HardwareAddr: r.MAC,
	})
}

// setNeigh writes the permanent neighbour entry ip -> mac, IPv4 (the ARP
// table) or IPv6 (neighbour discovery's).
func (k *Kernel) setNeigh(idx int, ip net.IP, mac net.HardwareAddr) error {
	return k.h.NeighSet(&netlink.Neigh{
		LinkIndex:    idx,
		Family:       family(ip),
		State:        netlink.NUD_PERMANENT,
		IP:           ip,
		HardwareAddr: mac,
	})
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// delFDB removes the FDB entry mac -> vtep. It reports false when the
// kernel has no entry for mac; note that when it has one towards another
// VTEP, the kernel leaves it and reports success (true here).
func (k *Kernel) delFDB(idx int, mac net.HardwareAddr, vtep net.IP) (bool, error) {
	err := k.h.NeighDel(&netlink.Neigh{
		LinkIndex:    idx,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		IP:           vtep,
		HardwareAddr: mac,
	})
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// delNeigh removes the neighbour entry of ip, and reports whether there
// was one to remove.
func (k *Kernel) delNeigh(idx int, ip net.IP) (bool, error) {
	err := k.h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: family(ip), IP: ip})
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, err
}
