package dataplane

import (
	"net"
	"net/netip"
)

// MACFor derives a locally administered MAC (02:77 then the four address
// bytes) from an IPv4 address, so that an endpoint keeps its MAC wherever
// its address goes. weft uses it for endpoints whose MAC Docker leaves to
// the driver and for each network's gateway.
func MACFor(ip netip.Addr) net.HardwareAddr {
	v4 := ip.As4()
	return net.HardwareAddr{0x02, 0x77, v4[0], v4[1], v4[2], v4[3]}
}
