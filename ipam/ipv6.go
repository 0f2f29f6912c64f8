package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"

	"github.com/docker/go-plugins-helpers/ipam"
)

// IPv6 pools, for dual-stack networks. They need no agreement between the
// hosts: a pool is a /64 or larger, and each host hands out addresses from
// a /96 of its own inside it, the 32 bits after the pool's first 64 being
// a hash of the host's mesh name (its identity across restarts), the last
// 32 a counter. Two hosts share a /96 only if their names hash alike (for
// n hosts, a chance of about n²/2^33: 1 in 860,000 for 100 hosts); the
// driver then keeps the earlier claim of an address, as for IPv4. The
// gateway is the pool's first address after the network address, the
// same on every host.

// pool6 is one IPv6 subnet Docker asked for on this host.
type pool6 struct {
	Prefix netip.Prefix `json:"prefix"`
	Refs   int          `json:"refs"`
	// Used holds the addresses this host handed out, by address.
	Used map[netip.Addr]bool `json:"used"`
}

// requestPool6 registers an IPv6 subnet.
func (a *Allocator) requestPool6(req *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if req.Pool == "" {
		return nil, errors.New("weft IPAM: name the network's IPv6 subnet with a second --subnet, the same on every host; weft does not pick one")
	}
	if req.SubPool != "" {
		return nil, errors.New("weft IPAM: --ip-range is not supported yet")
	}
	pfx, err := netip.ParsePrefix(req.Pool)
	if err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6() {
		return nil, fmt.Errorf("weft IPAM: subnet %q is not an IPv6 CIDR", req.Pool)
	}
	pfx = pfx.Masked()
	if pfx.Bits() > 64 {
		return nil, fmt.Errorf("weft IPAM: IPv6 subnet %s is too small; use /64 or larger", pfx)
	}
	for k := range req.Options {
		if k == OptBlock {
			return nil, fmt.Errorf("weft IPAM: option %s applies to the IPv4 subnet only", OptBlock)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	id := pfx.String()
	for oid, p := range a.st.Pools6 {
		if oid != id && p.Prefix.Overlaps(pfx) {
			return nil, fmt.Errorf("weft IPAM: subnet %s overlaps %s, already in use", pfx, p.Prefix)
		}
	}
	p, ok := a.st.Pools6[id]
	if !ok {
		p = &pool6{Prefix: pfx, Used: map[netip.Addr]bool{}}
		a.st.Pools6[id] = p
	}
	p.Refs++
	a.touch()
	a.saveLocked()
	if a.dirty {
		return nil, errors.New("weft IPAM: cannot save its state; see the plugin's log")
	}
	a.log.Info("IPv6 pool requested", "pool", id, "range", a.range6(pfx))
	return &ipam.RequestPoolResponse{PoolID: id, Pool: id}, nil
}

// range6 is this host's /96 of pool p.
func (a *Allocator) range6(p netip.Prefix) netip.Prefix {
	b := p.Masked().Addr().As16()
	h := fnv.New32a()
	h.Write([]byte(a.self))
	binary.BigEndian.PutUint32(b[8:12], h.Sum32())
	return netip.PrefixFrom(netip.AddrFrom16(b), 96)
}

// gateway6Of is an IPv6 pool's gateway: its first address after the
// network address.
func gateway6Of(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// requestAddress6 hands out the gateway, the address asked for, or the
// lowest free one of this host's range.
func (a *Allocator) requestAddress6(p *pool6, req *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	reply := func(ad netip.Addr) (*ipam.RequestAddressResponse, error) {
		return &ipam.RequestAddressResponse{Address: netip.PrefixFrom(ad, p.Prefix.Bits()).String()}, nil
	}
	var x netip.Addr
	if req.Address != "" {
		ad, err := netip.ParseAddr(req.Address)
		if err != nil || !p.Prefix.Contains(ad) {
			return nil, fmt.Errorf("weft IPAM: address %q is not in pool %s", req.Address, p.Prefix)
		}
		x = ad
	}
	gw := gateway6Of(p.Prefix)
	if req.Options[requestAddressType] == gatewayType {
		if x.IsValid() && x != gw {
			return nil, fmt.Errorf("weft IPAM: the IPv6 gateway of %s is %s on every host; --gateway %s is not supported", p.Prefix, gw, x)
		}
		return reply(gw)
	}
	switch {
	case x.IsValid() && (x == gw || x == p.Prefix.Masked().Addr()):
		return nil, fmt.Errorf("weft IPAM: address %s is reserved in %s", x, p.Prefix)
	case x.IsValid() && p.Used[x]:
		return nil, fmt.Errorf("weft IPAM: address %s is in use on this host", x)
	case !x.IsValid():
		r := a.range6(p.Prefix)
		for ad := r.Addr().Next(); r.Contains(ad); ad = ad.Next() {
			if !p.Used[ad] && ad != gw {
				x = ad
				break
			}
		}
		if !x.IsValid() {
			return nil, fmt.Errorf("weft IPAM: this host's range %s of %s is full", r, p.Prefix)
		}
	}
	p.Used[x] = true
	a.touch()
	a.saveLocked()
	if a.dirty {
		delete(p.Used, x)
		return nil, errors.New("weft IPAM: cannot save its state; see the plugin's log")
	}
	a.log.Debug("address handed out", "pool", p.Prefix, "address", x)
	return reply(x)
}

// releaseAddress6 frees an address of an IPv6 pool.
func (a *Allocator) releaseAddress6(p *pool6, x netip.Addr) {
	if !p.Used[x] {
		return
	}
	delete(p.Used, x)
	a.touch()
	a.saveLocked()
}

// releasePool6 drops one reference to an IPv6 pool.
func (a *Allocator) releasePool6(id string, p *pool6) {
	p.Refs--
	if p.Refs <= 0 {
		delete(a.st.Pools6, id)
		a.log.Info("IPv6 pool released", "pool", id)
	}
	a.touch()
	a.saveLocked()
}
