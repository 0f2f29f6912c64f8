// Package dataplane owns every kernel object weft creates, and is the only
// package that speaks netlink.
//
// Kernel model, per weft network on each host:
//
//   - one VXLAN device named "weft<VNI>" in the host namespace: learning off,
//     proxy on (the device answers ARP for remote endpoints from its static
//     neighbour table), no default FDB entry, so unknown and broadcast traffic
//     is never flooded to other hosts;
//   - one macvlan child (mode bridge) of that device per local endpoint, handed
//     to Docker in Join and moved by Docker into the container. Local
//     containers switch through the macvlan; frames for remote containers leave
//     through the VXLAN device;
//   - for every remote endpoint, a static FDB entry (MAC -> remote VTEP) and a
//     permanent neighbour entry (IP -> MAC) on the VXLAN device;
//   - one more macvlan child, the announcer, in a namespace of the plugin's
//     own, from which a gratuitous ARP for every remote endpoint written
//     reaches the local containers (announce_linux.go).
//
// Why this layout: nothing in it depends on the plugin's process or mounts, so
// disabling, restarting or upgrading the plugin never removes a container's
// interface; and macvlan children are not filtered by the host's iptables
// FORWARD policy, which is DROP on every Docker host. Two networks are isolated
// by construction: separate devices, separate segments.
//
// Every write is idempotent (create-or-compare, NeighSet, deletes that treat
// "not found" as done). SetRemote and DeleteRemote write one remote
// endpoint's entries as it changes, without reading the tables back;
// SetRemotes reconciles a device's whole FDB and neighbour tables against
// the desired set (the periodic repair), so a restart is just a reconcile
// from whatever the kernel still holds.
package dataplane

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DevicePrefix starts the name of every VXLAN device weft creates; the VNI
// follows in decimal, so a restarted plugin finds its devices again.
const DevicePrefix = "weft"

// Overhead is what VXLAN over IPv4 adds to every frame: outer IPv4 (20),
// UDP (8), VXLAN (8) and the inner Ethernet header (14).
const Overhead = 50

// MaxVNI is the largest VXLAN network identifier (24 bits).
const MaxVNI = 1<<24 - 1

// Segment describes the VXLAN segment of one weft network on this host.
type Segment struct {
	// VNI is the segment's VXLAN network identifier, 1..MaxVNI.
	VNI uint32
	// MTU of the VXLAN device; macvlan children inherit it.
	MTU int
	// Port is the UDP destination port of the encapsulated traffic.
	Port int
}

// RemoteEndpoint is a remote endpoint reached through the segment.
type RemoteEndpoint struct {
	// IP is the endpoint's address on the weft network.
	IP net.IP
	// IP6 is the endpoint's IPv6 address on a dual-stack network; nil on
	// an IPv4-only one. It gets a neighbour entry of its own, to the same
	// MAC.
	IP6 net.IP
	// MAC is the endpoint's hardware address.
	MAC net.HardwareAddr
	// VTEP is the underlay address of the host that holds the endpoint.
	VTEP net.IP
}

// Validate reports whether r can be programmed: an IPv4 address, a 6-byte
// MAC and an IPv4 VTEP, and no IPv6 address or an IPv6 one.
func (r RemoteEndpoint) Validate() error {
	if r.IP.To4() == nil || len(r.MAC) != 6 || r.VTEP.To4() == nil {
		return fmt.Errorf("remote endpoint %s is not an IPv4 address, a 6-byte MAC and an IPv4 VTEP", remoteKey(r))
	}
	if r.IP6 != nil && !isIPv6(r.IP6) {
		return fmt.Errorf("remote endpoint %s: %v is not an IPv6 address", remoteKey(r), r.IP6)
	}
	return nil
}

// isIPv6 reports whether ip is an IPv6 address (not an IPv4 one in any
// form).
func isIPv6(ip net.IP) bool {
	return len(ip) == net.IPv6len && ip.To4() == nil
}

// Repair counts what one SetRemotes call changed in the kernel, by table.
// Added counts entries written because they were missing or held another
// value; Removed, entries for endpoints no longer wanted. All zero: the
// kernel already held the desired table (no drift).
type Repair struct {
	FDBAdded, FDBRemoved     int
	NeighAdded, NeighRemoved int
}

// DeviceName returns the name of the VXLAN device of a VNI.
func DeviceName(vni uint32) string {
	return DevicePrefix + strconv.FormatUint(uint64(vni), 10)
}

// ParseDeviceName returns the VNI of a weft VXLAN device name.
func ParseDeviceName(name string) (uint32, bool) {
	rest, ok := strings.CutPrefix(name, DevicePrefix)
	if !ok || rest == "" {
		return 0, false
	}
	v, err := strconv.ParseUint(rest, 10, 32)
	if err != nil || v == 0 || v > MaxVNI || strconv.FormatUint(v, 10) != rest {
		return 0, false
	}
	return uint32(v), true
}

// Validate reports whether n can be programmed.
func (n Segment) Validate() error {
	if n.VNI == 0 || n.VNI > MaxVNI {
		return fmt.Errorf("VNI %d is outside 1-%d", n.VNI, MaxVNI)
	}
	if n.MTU < 68 || n.MTU > 65535-Overhead {
		return fmt.Errorf("MTU %d is outside 68-%d", n.MTU, 65535-Overhead)
	}
	if n.Port <= 0 || n.Port > 65535 {
		return fmt.Errorf("VXLAN port %d is outside 1-65535", n.Port)
	}
	return nil
}

// remoteKey identifies a remote endpoint: its neighbour + FDB pair.
func remoteKey(p RemoteEndpoint) string {
	k := p.IP.String() + "|" + p.MAC.String() + "|" + p.VTEP.String()
	if p.IP6 != nil {
		k += "|" + p.IP6.String()
	}
	return k
}
