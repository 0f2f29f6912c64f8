package driver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/antispoof"
	"github.com/weftnet/weft/dataplane"
)

// IPv6, dual stack: a network created with --ipv6 and an IPv6 subnet
// beside its IPv4 one. Each endpoint may have an IPv6 address besides its
// IPv4 one, from the same IPAM (swarm's, or the engine's default in local
// scope); it travels in the endpoint's record (catalog.Record.IP6), and
// each host programs it as a second permanent neighbour entry to the
// endpoint's MAC (the device's proxy answers neighbour solicitations from
// it, as it answers ARP), so nothing is flooded for IPv6 either. The
// IPv4 address stays the endpoint's identity: claims on an address
// (remoteSet) are decided by it, and a claim's IPv6 address goes with it.

// errSwarmIPv6 refuses a dual-stack swarm-scoped network. Swarm's
// allocator (Docker 20.10) gives each task and attached container one
// address, from one of the network's pools, and each engine then picks the
// other family's address alone: seen in the lab, the same IPv4 address on
// two hosts, or the same IPv6 one on all three. weft's IPAM in local scope
// gives both.
var errSwarmIPv6 = errors.New("weft: IPv6 is not supported on swarm-scoped networks (swarm gives each container an address of one family only, and the engines pick the other alike); create the network with --ipv6 in local scope, with --ipam-driver weft, on every host")

// byFamily moves the IPv6 pools of the IPv4 list (swarm's leader passes
// them there) to the IPv6 list, after its own; the rest stays where it
// was, to be checked there.
func byFamily(v4, v6 []*network.IPAMData) (four, six []*network.IPAMData) {
	six = append(six, v6...)
	for _, d := range v4 {
		if p, err := netip.ParsePrefix(poolOf(d)); err == nil && p.Addr().Is6() && !p.Addr().Is4In6() {
			six = append(six, d)
		} else {
			four = append(four, d)
		}
	}
	return four, six
}

func poolOf(d *network.IPAMData) string {
	if d == nil {
		return ""
	}
	return d.Pool
}

// parsePool6 checks the IPv6 pools Docker passes with a network: none, or
// one IPv6 subnet with an optional gateway.
func parsePool6(v6 []*network.IPAMData) (subnet, gateway string, err error) {
	if len(v6) == 0 || v6[0] == nil || v6[0].Pool == "" {
		return "", "", nil
	}
	if len(v6) > 1 {
		return "", "", fmt.Errorf("the network has %d IPv6 subnets; weft takes one", len(v6))
	}
	p, err := netip.ParsePrefix(v6[0].Pool)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return "", "", fmt.Errorf("IPv6 subnet %q is not an IPv6 CIDR", v6[0].Pool)
	}
	if gw := v6[0].Gateway; gw != "" {
		g, err := netip.ParsePrefix(gw)
		if err != nil || !g.Addr().Is6() || !p.Contains(g.Addr()) {
			return "", "", fmt.Errorf("IPv6 gateway %q is not an address of subnet %s", gw, p)
		}
		gateway = g.Addr().String()
	}
	return p.String(), gateway, nil
}

// endpointAddr6 checks an endpoint's IPv6 address (CIDR, as Docker gives
// it) against network n: empty is fine; one is only for a dual-stack
// network, inside its IPv6 subnet.
func endpointAddr6(n *Network, addr string) error {
	if addr == "" {
		return nil
	}
	a, err := netip.ParsePrefix(addr)
	if err != nil || !a.Addr().Is6() || a.Addr().Is4In6() {
		return fmt.Errorf("endpoint IPv6 address %q is not an IPv6 CIDR", addr)
	}
	if n.Subnet6 == "" {
		return fmt.Errorf("the endpoint has an IPv6 address but network %s has no IPv6 subnet; create it with --ipv6 and an IPv6 --subnet", short(n.ID))
	}
	if sub, err := netip.ParsePrefix(n.Subnet6); err == nil && !sub.Contains(a.Addr()) {
		return fmt.Errorf("IPv6 address %s is outside the network's subnet %s", a.Addr(), n.Subnet6)
	}
	return nil
}

// addr6 returns an endpoint's IPv6 address, or an invalid Addr.
func (ep *Endpoint) addr6() netip.Addr {
	p, err := netip.ParsePrefix(ep.Address6)
	if err != nil {
		return netip.Addr{}
	}
	return p.Addr()
}

// admit6 says why a remote endpoint's IPv6 address must not be programmed
// on network n, or nil: as admit for IPv4.
func admit6(n *Network, r dataplane.RemoteEndpoint) error {
	if r.IP6 == nil {
		return nil
	}
	ip, ok := netip.AddrFromSlice(r.IP6)
	if !ok {
		return fmt.Errorf("IPv6 address %v is not valid", r.IP6)
	}
	p, err := netip.ParsePrefix(n.Subnet6)
	if err != nil {
		return fmt.Errorf("IPv6 address %s on a network without an IPv6 subnet", ip)
	}
	if !p.Contains(ip) {
		return fmt.Errorf("IPv6 address %s is outside the network's subnet %s", ip, p)
	}
	if gw, err := netip.ParseAddr(n.Gateway6); err == nil && gw == ip {
		return fmt.Errorf("IPv6 address %s is the network's gateway", ip)
	}
	for _, ep := range n.Endpoints {
		if ep.addr6() == ip {
			return fmt.Errorf("IPv6 address %s is this host's endpoint %s", ip, short(ep.ID))
		}
	}
	return nil
}

// localSource6 returns the IPv6 source of a local endpoint of n.
func localSource6(n *Network, ep *Endpoint) (antispoof.Entry, bool) {
	a := ep.addr6()
	mac, err := net.ParseMAC(ep.MAC)
	if !a.IsValid() || err != nil || len(mac) != 6 {
		return antispoof.Entry{}, false
	}
	return antispoof.Entry{VNI: n.VNI, MAC: mac, IP: a}, true
}

// remoteSources returns the sources of a remote endpoint on vni: its IPv4
// one, and its IPv6 one on a dual-stack network.
func remoteSources(vni uint32, r dataplane.RemoteEndpoint) []antispoof.Entry {
	out := []antispoof.Entry{remoteSource(vni, r)}
	if ip6, ok := netip.AddrFromSlice(r.IP6); ok && r.IP6 != nil {
		e := out[0]
		e.IP = ip6
		out = append(out, e)
	}
	return out
}

// ip6Held reports whether a holder of set has ip6 as its IPv6 address.
func (s *remoteSet) ip6Held(ip6 net.IP) bool {
	for _, c := range s.byKey {
		if c.r.IP6.Equal(ip6) {
			if h, _ := s.holder(c.r.IP.String()); sameRemote(h.r, c.r) {
				return true
			}
		}
	}
	return false
}
