package plugin

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/mesh"
)

// ipamTableName is the mesh table of the IPAM allocator's claims and votes.
const ipamTableName = "ipam"

// ipamPoll is how often the mesh is looked at for changes of the IPAM
// table: its Changes channel has one reader, meshPeers.
const ipamPoll = 100 * time.Millisecond

// newIPAM builds weft's IPAM driver on the mesh's "ipam" table. Run the
// returned function once the plugin's context exists.
func newIPAM(cfg Config, node nodeState, peers *meshPeers, log *slog.Logger) (*ipam.Allocator, func(context.Context), error) {
	t := &ipamTable{self: node.Name, peers: peers, changes: make(chan struct{}, 1)}
	icfg := ipam.DefaultConfig()
	icfg.StateDir = cfg.StateDir
	icfg.Logger = log
	icfg.Table = t
	icfg.ExpectedHosts = expectedHosts(cfg.Peers, node.Addr)
	if cfg.IPAMBlock != 0 {
		icfg.BlockBits = cfg.IPAMBlock
	}
	if cfg.IPAMReclaim != 0 {
		icfg.Reclaim = cfg.IPAMReclaim
	}
	a, err := ipam.New(icfg)
	if err != nil {
		return nil, nil, err
	}
	log.Info("IPAM ready", "expected_hosts", icfg.ExpectedHosts, "block_bits", icfg.BlockBits, "reclaim", icfg.Reclaim)
	return a, func(ctx context.Context) {
		go t.watch(ctx)
		go a.Run(ctx)
	}, nil
}

// expectedHosts counts the hosts of WEFT_PEERS and this one: the IPAM's
// claims need a majority of them.
func expectedHosts(peers []string, self string) int {
	seen := map[netip.Addr]bool{}
	for _, p := range append([]string{self}, peers...) {
		host := p
		if h, _, err := net.SplitHostPort(p); err == nil {
			host = h
		}
		if a, err := netip.ParseAddr(host); err == nil {
			seen[a.Unmap()] = true
		}
	}
	return max(1, len(seen))
}

// ipamTable is the mesh's IPAM table as the allocator sees it. The mesh
// starts after the allocator, once this host's underlay address is known:
// until then the table is empty and writes are dropped (the allocator
// writes its entries again on every step).
type ipamTable struct {
	self    string
	peers   *meshPeers
	changes chan struct{}
}

var _ ipam.Table = (*ipamTable)(nil)

func (t *ipamTable) Self() string { return t.self }

func (t *ipamTable) Put(key string, value []byte) {
	if m := t.peers.current(); m != nil {
		m.Put(ipamTableName, key, value)
	}
}

func (t *ipamTable) Delete(key string) {
	if m := t.peers.current(); m != nil {
		m.Delete(ipamTableName, key)
	}
}

func (t *ipamTable) Entries() []ipam.Entry {
	m := t.peers.current()
	if m == nil {
		return nil
	}
	es := m.Entries(ipamTableName)
	out := make([]ipam.Entry, len(es))
	for i, e := range es {
		out[i] = ipam.Entry{Owner: e.Owner, Key: e.Key, Value: e.Value}
	}
	return out
}

func (t *ipamTable) Alive() []string {
	m := t.peers.current()
	if m == nil {
		return []string{t.self}
	}
	var out []string
	for _, mb := range m.Members() {
		if mb.State == mesh.StateAlive || mb.State == mesh.StateSuspect {
			out = append(out, mb.Name)
		}
	}
	return out
}

func (t *ipamTable) Changes() <-chan struct{} { return t.changes }

// watch signals Changes whenever the table's entries or the members'
// states differ from the last look.
func (t *ipamTable) watch(ctx context.Context) {
	tick := time.NewTicker(ipamPoll)
	defer tick.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m := t.peers.current()
		if m == nil {
			continue
		}
		h := fnv.New64a()
		var n [8]byte
		for _, e := range m.Entries(ipamTableName) {
			h.Write([]byte(e.Owner))
			h.Write([]byte{0})
			h.Write([]byte(e.Key))
			binary.BigEndian.PutUint64(n[:], e.Clock)
			h.Write(n[:])
		}
		for _, mb := range m.Members() {
			h.Write([]byte(mb.Name))
			h.Write([]byte(mb.State))
		}
		if sum := h.Sum64(); sum != last {
			last = sum
			select {
			case t.changes <- struct{}{}:
			default:
			}
		}
	}
}
