package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"

	"github.com/weftnet/weft/internal/statefile"
)

const stateFile = "ipam.json"

// stateVersion is the layout of ipam.json. Version 0 was the single-host
// allocator's map of pools; it is read and converted.
const stateVersion = 2

// persisted is everything the allocator must remember across restarts:
// what this host decided (pools, claims, votes, dead and removed hosts,
// lent and foreign addresses) and the last copy of the other hosts'
// entries, which the mesh drops while their owner is dead.
type persisted struct {
	Version int    `json:"version"`
	Node    string `json:"node"`
	Epoch   uint64 `json:"epoch"`
	// Restoring: this host was removed and is re-homing what it kept.
	Restoring bool             `json:"restoring,omitempty"`
	Pools     map[string]*pool `json:"pools"`
	// Pools6 are the IPv6 pools (ipv6.go), with this host's addresses.
	Pools6  map[string]*pool6     `json:"pools6,omitempty"`
	Claims  map[string]*claim     `json:"claims"` // own, by block
	Old     map[string]*claim     `json:"old,omitempty"`
	Votes   map[string]*voteRec   `json:"votes"` // own, by block
	Dead    map[string]*deadRec   `json:"dead"`  // own, by host
	Removed map[string]*removal   `json:"removed"`
	Lent    map[netip.Addr]string `json:"lent"`    // own block's address -> borrower
	Foreign map[netip.Addr]string `json:"foreign"` // address in another's block -> its holder
	// Cache holds the other hosts' entries: owner -> key -> value.
	Cache map[string]map[string]json.RawMessage `json:"cache"`
}

// pool is one subnet Docker asked for on this host.
type pool struct {
	Prefix netip.Prefix `json:"prefix"`
	// Bits is the prefix length of the pool's blocks.
	Bits int `json:"bits"`
	Refs int `json:"refs"`
}

// claim is one of this host's claims.
type claim struct {
	Block netip.Prefix `json:"block"`
	claimRec
	// Acked is the largest Limit a majority has seen: addresses below it
	// may be handed out. 0 while the claim does not hold.
	Acked int `json:"acked"`
}

// removal records a host the majority removed at Epoch.
type removal struct {
	Epoch uint64 `json:"epoch"`
	// Windows stay quarantined until the host is back in a newer epoch
	// and has listed what it still uses (then Lifted).
	Windows []span `json:"windows,omitempty"`
	Lifted  bool   `json:"lifted,omitempty"`
}

func newPersisted(node string) *persisted {
	return &persisted{
		Version: stateVersion, Node: node,
		Pools: map[string]*pool{}, Pools6: map[string]*pool6{}, Claims: map[string]*claim{}, Old: map[string]*claim{},
		Votes: map[string]*voteRec{}, Dead: map[string]*deadRec{}, Removed: map[string]*removal{},
		Lent: map[netip.Addr]string{}, Foreign: map[netip.Addr]string{},
		Cache: map[string]map[string]json.RawMessage{},
	}
}

// fill makes every map usable after decoding.
func (p *persisted) fill() {
	if p.Pools == nil {
		p.Pools = map[string]*pool{}
	}
	if p.Pools6 == nil {
		p.Pools6 = map[string]*pool6{}
	}
	for _, q := range p.Pools6 {
		if q.Used == nil {
			q.Used = map[netip.Addr]bool{}
		}
	}
	if p.Claims == nil {
		p.Claims = map[string]*claim{}
	}
	if p.Old == nil {
		p.Old = map[string]*claim{}
	}
	if p.Votes == nil {
		p.Votes = map[string]*voteRec{}
	}
	if p.Dead == nil {
		p.Dead = map[string]*deadRec{}
	}
	if p.Removed == nil {
		p.Removed = map[string]*removal{}
	}
	if p.Lent == nil {
		p.Lent = map[netip.Addr]string{}
	}
	if p.Foreign == nil {
		p.Foreign = map[netip.Addr]string{}
	}
	if p.Cache == nil {
		p.Cache = map[string]map[string]json.RawMessage{}
	}
	for id, pl := range p.Pools {
		if pl == nil || !pl.Prefix.IsValid() || pl.Bits < pl.Prefix.Bits() || pl.Bits > 30 {
			delete(p.Pools, id)
		}
	}
	for k, c := range p.Claims {
		if c == nil || !c.Block.IsValid() {
			delete(p.Claims, k)
		} else if len(c.Used) != len(newBitmap(size(c.Block))) {
			c.Used = newBitmap(size(c.Block))
		}
	}
	for k, c := range p.Old {
		if c == nil || !c.Block.IsValid() {
			delete(p.Old, k)
		}
	}
}

// load reads the state file. A missing file is a fresh start; an
// unreadable one is set aside and reported (the caller starts fresh but
// the file is kept, since it may hold votes that must not be forgotten).
func load(dir, node string) (*persisted, error) {
	st := newPersisted(node)
	if dir == "" {
		return st, nil
	}
	path := filepath.Join(dir, stateFile)
	var p persisted
	ver, err := statefile.Load(path, &p, stateVersion)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return st, nil
	case err != nil:
		return st, fmt.Errorf("IPAM state: %w", err)
	case ver == 0:
		// The single-host allocator's file: its pools, nothing claimed.
		var old map[string]*struct {
			Prefix netip.Prefix `json:"prefix"`
		}
		if _, err := statefile.Load(path, &old, 0); err == nil {
			for id, p := range old {
				if p != nil && p.Prefix.IsValid() {
					st.Pools[id] = &pool{Prefix: p.Prefix, Bits: defaultBits(p.Prefix, DefaultConfig().BlockBits)}
				}
			}
		}
		return st, nil
	}
	p.fill()
	p.Version = stateVersion
	return &p, nil
}

func (p *persisted) save(dir string) error {
	if dir == "" {
		return nil
	}
	if err := statefile.Save(filepath.Join(dir, stateFile), p); err != nil {
		return fmt.Errorf("save IPAM state: %w", err)
	}
	return nil
}
