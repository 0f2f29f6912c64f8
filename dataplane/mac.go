package dataplane

import (
	"net"
	"net/netip"
)

// MACFor derives a locally administered MAC (02:77 then the four address
// bytes) from an IPv4 address, so that an endpoint keeps its MAC wherever
// its address goes. weft uses it for endpoints whose MAC Docker leaves to
// the driver and for each network's gateway. An IPv6 address (the IPv6
// gateway of a dual-stack network) gets 06:77 then its last four bytes,
// apart from every IPv4 one.
func MACFor(ip netip.Addr) net.HardwareAddr {
	if ip.Is6() && !ip.Is4In6() {
		v6 := ip.As16()
		return net.HardwareAddr{0x06, 0x77, v6[12], v6[13], v6[14], v6[15]}
	}
	v4 := ip.Unmap().As4()
	return net.HardwareAddr{0x02, 0x77, v4[0], v4[1], v4[2], v4[3]}
}
