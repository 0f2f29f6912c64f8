// Package antispoof keeps a container from speaking, across hosts, with
// another container's addresses: weft's own nftables table in the host's
// network namespace ("table ip weft_sources") lets a VXLAN packet of a weft
// network leave this host only when its inner frame's source MAC and IPv4
// address are those of one of this host's endpoints on that network, and
// lets one in only when its inner source MAC and address are those of an
// endpoint the catalog places on the host that sent it (the outer source
// address) on that network. The package owns that table; the driver tells
// it, per change and in its repair pass, which sources each network has.
//
// Design notes:
//
//   - Where: on the VXLAN packets themselves, at the host's output and input
//     hooks (family ip), not on the VXLAN devices. The kernel encapsulates
//     a container's frame on the way out (the output hook sees the outer
//     packet, with the VNI and the whole inner frame behind the UDP header)
//     and decapsulates it after the input hook: there, and only there, the
//     outer source, the VNI and the inner source are seen together, so an
//     endpoint is bound to its host, which a filter on the device (that
//     sees only the inner frame) cannot do. One table, two sets keyed by
//     concatenations that hold the VNI, serve every network at once:
//     nothing to make or remove per device, and no hook that goes with a
//     device.
//   - What passes: inner IPv4 and IPv6 frames whose source pair is listed
//     (sets local and remote for IPv4, local6 and remote6 for IPv6). Nothing
//     else of a weft network crosses hosts legitimately: ARP and IPv6
//     neighbour solicitations never do (the devices answer them from their
//     neighbour tables and consume them, proxy on), and without a flood
//     entry no broadcast or unknown destination is sent. So ARP, IPv6 from
//     an address not listed (a link-local one), VLAN-tagged frames and
//     every other type are dropped, whatever their sender.
//   - Broadcast and multicast (group-addressed inner destination MAC) pass
//     only on the VNIs of networks that carry them (set flood; the driver
//     floods them to the other hosts, dataplane/flood_linux.go), their
//     sources checked as above; elsewhere they are dropped whatever their
//     source. On those networks the kernel's flood entry also sends unknown
//     unicast to every host; so there a unicast frame leaves only towards
//     the host the catalog places its destination (MAC and address) on,
//     and the flooded copies are dropped.
//   - The probe's segment (dataplane.ProbeVNI) is let through: only weft's
//     process sends on it, from a namespace of its own.
//   - Containers sending to the VXLAN port through the host (a container's
//     default route, Docker's gateway bridge and its masquerade make their
//     packets come from the host's own underlay address): forwarded packets
//     to weft's VXLAN port are dropped, so a container cannot hand another
//     host a VXLAN packet of its own making. This host forwards no one's
//     VXLAN traffic on weft's port.
//   - What it does not see: containers of one host talk through the
//     macvlan bridge of their network's device, never through VXLAN; a
//     container can spoof another of its own host there.
//   - Why a package of its own: the firewall's table says who may reach
//     weft's ports and follows the mesh's members; this one says what each
//     network's packets may carry and follows the catalog, per endpoint,
//     through the driver. Both are nf_tables tables of weft's, apart.
package antispoof

import (
	"fmt"
	"net"
	"net/netip"
)

// Entry is one source a network's packets may carry across hosts: an
// endpoint's MAC and IPv4 or IPv6 address on the network of VNI (a
// dual-stack endpoint has one of each). VTEP is the
// underlay address of the host that holds it; it is left invalid for this
// host's own endpoints.
type Entry struct {
	VNI  uint32
	MAC  net.HardwareAddr
	IP   netip.Addr
	VTEP netip.Addr
}

// Validate reports whether e can be written: a VNI, a 6-byte MAC, an IPv4
// or IPv6 address and, when remote is set, an IPv4 VTEP.
func (e Entry) Validate(remote bool) error {
	ipOK := e.IP.Is4() || (e.IP.Is6() && !e.IP.Is4In6() && e.IP.Zone() == "")
	if e.VNI == 0 || e.VNI > 1<<24-1 || len(e.MAC) != 6 || !ipOK || (remote && !e.VTEP.Is4()) {
		return fmt.Errorf("source %s is not a VNI, a 6-byte MAC and an IP address%s", e, map[bool]string{true: " from an IPv4 VTEP"}[remote])
	}
	return nil
}

func (e Entry) String() string {
	s := fmt.Sprintf("vni %d %s %s", e.VNI, e.MAC, e.IP)
	if e.VTEP.IsValid() {
		s += " via " + e.VTEP.String()
	}
	return s
}

// Sources is what the table lets through: Local, the sources this host's
// endpoints may send with; Remote, those each other host may; Flood, the
// VNIs of the networks that carry broadcast and multicast (opt-in), whose
// group-addressed frames pass, their sources checked like any other.
type Sources struct {
	Local  []Entry
	Remote []Entry
	Flood  []uint32
}

// Diff counts what one Sync changed in the kernel, by set. All zero: the
// kernel already held the desired sources.
type Diff struct {
	LocalAdded, LocalRemoved   int
	RemoteAdded, RemoteRemoved int
	FloodAdded, FloodRemoved   int
}

// Dropped counts the packets the table dropped: leaving this host with a
// source not its own (Out), arriving with a source not the sender's (In),
// and sent to the VXLAN port through this host (Forward).
type Dropped struct {
	Out, In, Forward uint64
}
