package driver

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/docker/go-plugins-helpers/network"
)

// pool is a network's address pools as Docker gives them.
type pool struct {
	Subnet  string // CIDR
	Gateway string // address; empty when Docker gave none
	// Subnet6 and Gateway6: the IPv6 pool of a dual-stack network.
	Subnet6, Gateway6 string
}

// parsePool checks the address pools Docker passes with a network: one
// IPv4 subnet, and one IPv6 subnet or none (ipv6.go). Swarm's leader
// passes every pool of a network in AllocateNetwork's IPv4 list, IPv6
// ones included, so each list is sorted by its pools' family first.
func parsePool(v4, v6 []*network.IPAMData) (pool, error) {
	v4, v6 = byFamily(v4, v6)
	s6, g6, err := parsePool6(v6)
	if err != nil {
		return pool{}, err
	}
	if len(v4) == 0 || v4[0] == nil || v4[0].Pool == "" {
		return pool{}, errors.New("the network needs an IPv4 subnet (--subnet)")
	}
	p, err := netip.ParsePrefix(v4[0].Pool)
	if err != nil || !p.Addr().Is4() {
		return pool{}, fmt.Errorf("subnet %q is not an IPv4 CIDR", v4[0].Pool)
	}
	out := pool{Subnet: v4[0].Pool, Subnet6: s6, Gateway6: g6}
	if gw := v4[0].Gateway; gw != "" {
		g, err := netip.ParsePrefix(gw)
		if err != nil || !g.Addr().Is4() {
			return pool{}, fmt.Errorf("gateway %q is not an IPv4 CIDR", gw)
		}
		out.Gateway = g.Addr().String()
	}
	return out, nil
}

// adoptLocked makes network id served on this host, from Docker's call or
// from the engine's view after a lost state: it checks the options, picks
// the VNI (the one allocated by the swarm leader, derived from the subnet
// in local scope, or derived from the ID like the leader would), refuses a
// VNI another network here holds, and ensures the device. A network that
// exists keeps its endpoints (Docker replays CreateNetwork after a
// restart).
func (d *Driver) adoptLocked(id string, raw map[string]string, p pool) (*Network, error) {
	opts, err := parseOptions(raw)
	if err != nil {
		return nil, err
	}
	if err := d.checkEncryption(opts); err != nil {
		return nil, err
	}
	derived := false
	switch {
	case opts.VNI != 0:
	case d.cfg.Scope == network.LocalScope:
		// Each engine gives the network its own ID; the subnet is what
		// every host shares, so it names the segment.
		opts.VNI, derived = subnetVNI(p.Subnet), true
	default:
		opts.VNI, err = autoVNI(id, func(v uint32) bool { return d.vniOwnerLocked(v, id) != "" })
		if err != nil {
			return nil, err
		}
	}
	if other := d.vniOwnerLocked(opts.VNI, id); other != "" {
		if derived {
			return nil, fmt.Errorf("VNI %d, derived from subnet %s, is already used by network %s on this host; choose one with -o %s=N, the same on every host", opts.VNI, p.Subnet, short(other), OptVNI)
		}
		return nil, fmt.Errorf("VNI %d is already used by network %s on this host", opts.VNI, short(other))
	}
	n := &Network{ID: id, VNI: opts.VNI, Subnet: p.Subnet, Gateway: p.Gateway, Subnet6: p.Subnet6, Gateway6: p.Gateway6, Options: raw, Endpoints: map[string]*Endpoint{}, seen: time.Now()}
	old, replay := d.networks[id]
	if replay {
		n.Endpoints = old.Endpoints
	}
	if err := d.dp.EnsureSegment(d.segmentLocked(n)); err != nil {
		return nil, fmt.Errorf("cannot create the network's VXLAN device: %w", err)
	}
	d.networks[id] = n
	d.sealed.mark(n)
	if !replay || old.VNI != n.VNI || old.Subnet != n.Subnet || old.Gateway != n.Gateway || old.Subnet6 != n.Subnet6 || old.Gateway6 != n.Gateway6 {
		d.netEvents.Publish(networkEvent(n, true))
	}
	d.Kick() // program the other hosts' endpoints on it
	return n, nil
}

// dropNetworkLocked forgets a network (its device is the caller's).
func (d *Driver) dropNetworkLocked(n *Network) {
	delete(d.networks, n.ID)
	d.sealed.unmark(n.VNI)
	d.netEvents.Publish(networkEvent(n, false))
}

// vniOwnerLocked returns the ID of another network using vni, or "".
func (d *Driver) vniOwnerLocked(vni uint32, self string) string {
	for _, n := range d.networks {
		if n.VNI == vni && n.ID != self {
			return n.ID
		}
	}
	return ""
}

// vniTakenLocked returns the ID of another network that has vni, on this
// host or among the allocations this host made as leader, or "".
func (d *Driver) vniTakenLocked(vni uint32, self string) string {
	if other := d.vniOwnerLocked(vni, self); other != "" {
		return other
	}
	for id, v := range d.allocated {
		if v == vni && id != self {
			return id
		}
	}
	return ""
}
