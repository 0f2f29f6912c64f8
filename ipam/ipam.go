// Package ipam is weft's IPAM driver, for networks whose addresses do not
// come from swarm's allocator (`--ipam-driver weft:latest`).
//
// Today it allocates on this host only: each pool is a subnet the user
// names, the gateway is its first address, and addresses are handed out
// lowest-free-first and persisted in the state directory. It is therefore
// right for single-host networks; cross-host allocation, where hosts claim
// blocks of a pool through the mesh, is not built yet.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/docker/go-plugins-helpers/ipam"
)

// AddressSpace is the one address space weft's IPAM offers.
const AddressSpace = "weft"

// Docker's option naming the gateway request in RequestAddress.
const requestAddressType = "RequestAddressType"
const gatewayType = "com.docker.network.gateway"

const stateFile = "ipam.json"

// Config holds the IPAM driver's settings.
type Config struct {
	// StateDir is where pools and addresses are persisted; empty keeps
	// them in memory only.
	StateDir string
	// Logger receives the driver's log; nil discards it.
	Logger *slog.Logger
}

// Allocator implements ipam.Ipam.
type Allocator struct {
	cfg Config
	log *slog.Logger

	// mu guards pools.
	mu    sync.Mutex
	pools map[string]*pool // by pool ID (the subnet's canonical text)
}

var _ ipam.Ipam = (*Allocator)(nil)

type pool struct {
	Prefix netip.Prefix    `json:"prefix"`
	Refs   int             `json:"refs"`
	Used   map[string]bool `json:"used"` // addresses handed out, including the gateway
}

// New returns an allocator with the pools of its state directory loaded.
func New(cfg Config) (*Allocator, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Allocator{cfg: cfg, log: log, pools: map[string]*pool{}}
	if cfg.StateDir == "" {
		return a, nil
	}
	b, err := os.ReadFile(filepath.Join(cfg.StateDir, stateFile))
	if os.IsNotExist(err) {
		return a, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &a.pools)
	}
	if err != nil {
		log.Warn("IPAM state unreadable; starting empty", "err", err)
		a.pools = map[string]*pool{}
	}
	for id, p := range a.pools {
		if p == nil || !p.Prefix.IsValid() {
			delete(a.pools, id)
			continue
		}
		if p.Used == nil {
			p.Used = map[string]bool{}
		}
	}
	return a, nil
}

func (a *Allocator) saveLocked() error {
	if a.cfg.StateDir == "" {
		return nil
	}
	b, err := json.Marshal(a.pools)
	if err != nil {
		return err
	}
	path := filepath.Join(a.cfg.StateDir, stateFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write IPAM state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace IPAM state: %w", err)
	}
	return nil
}

// GetCapabilities reports that weft does not need MACs to allocate.
func (a *Allocator) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{}, nil
}

// GetDefaultAddressSpaces names weft's address space.
func (a *Allocator) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: AddressSpace, GlobalDefaultAddressSpace: AddressSpace}, nil
}

// RequestPool registers the subnet the user named.
func (a *Allocator) RequestPool(req *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if req.V6 {
		return nil, errors.New("weft IPAM: IPv6 pools are not supported yet")
	}
	if req.Pool == "" {
		return nil, errors.New("weft IPAM: name the network's subnet with --subnet; weft does not pick one")
	}
	if req.SubPool != "" {
		return nil, errors.New("weft IPAM: --ip-range is not supported yet")
	}
	pfx, err := netip.ParsePrefix(req.Pool)
	if err != nil || !pfx.Addr().Is4() {
		return nil, fmt.Errorf("weft IPAM: subnet %q is not an IPv4 CIDR", req.Pool)
	}
	pfx = pfx.Masked()
	if pfx.Bits() > 30 {
		return nil, fmt.Errorf("weft IPAM: subnet %s is too small; use /30 or larger", pfx)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	id := pfx.String()
	for oid, p := range a.pools {
		if oid != id && p.Prefix.Overlaps(pfx) {
			return nil, fmt.Errorf("weft IPAM: subnet %s overlaps %s, already in use", pfx, p.Prefix)
		}
	}
	p, ok := a.pools[id]
	if !ok {
		p = &pool{Prefix: pfx, Used: map[string]bool{}}
		a.pools[id] = p
	}
	p.Refs++
	if err := a.saveLocked(); err != nil {
		p.Refs--
		if p.Refs == 0 {
			delete(a.pools, id)
		}
		return nil, fmt.Errorf("weft IPAM: %w", err)
	}
	return &ipam.RequestPoolResponse{PoolID: id, Pool: id}, nil
}

// ReleasePool drops one reference to a pool; the last one frees it.
func (a *Allocator) ReleasePool(req *ipam.ReleasePoolRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[req.PoolID]
	if !ok {
		return nil
	}
	p.Refs--
	if p.Refs <= 0 {
		delete(a.pools, req.PoolID)
	}
	return a.saveLocked()
}

// RequestAddress hands out the address asked for, or the gateway (the
// pool's first address), or the lowest free one.
func (a *Allocator) RequestAddress(req *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[req.PoolID]
	if !ok {
		return nil, fmt.Errorf("weft IPAM: pool %q is not known", req.PoolID)
	}
	first := p.Prefix.Addr().Next()
	var addr netip.Addr
	switch {
	case req.Address != "":
		ad, err := netip.ParseAddr(req.Address)
		if err != nil || !p.Prefix.Contains(ad) {
			return nil, fmt.Errorf("weft IPAM: address %q is not in pool %s", req.Address, p.Prefix)
		}
		if ad == p.Prefix.Addr() || ad == lastAddr(p.Prefix) {
			return nil, fmt.Errorf("weft IPAM: address %s is the network or broadcast address of %s", ad, p.Prefix)
		}
		if p.Used[ad.String()] && req.Options[requestAddressType] != gatewayType {
			return nil, fmt.Errorf("weft IPAM: address %s is already in use", ad)
		}
		addr = ad
	case req.Options[requestAddressType] == gatewayType:
		addr = first
	default:
		for ad := first; p.Prefix.Contains(ad) && ad != lastAddr(p.Prefix); ad = ad.Next() {
			if !p.Used[ad.String()] {
				addr = ad
				break
			}
		}
		if !addr.IsValid() {
			return nil, fmt.Errorf("weft IPAM: no free address left in %s", p.Prefix)
		}
	}
	p.Used[addr.String()] = true
	if err := a.saveLocked(); err != nil {
		delete(p.Used, addr.String())
		return nil, fmt.Errorf("weft IPAM: %w", err)
	}
	return &ipam.RequestAddressResponse{Address: netip.PrefixFrom(addr, p.Prefix.Bits()).String()}, nil
}

// ReleaseAddress returns an address to its pool. Releasing an address
// that is free is not an error.
func (a *Allocator) ReleaseAddress(req *ipam.ReleaseAddressRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[req.PoolID]
	if !ok {
		return nil
	}
	delete(p.Used, req.Address)
	return a.saveLocked()
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
