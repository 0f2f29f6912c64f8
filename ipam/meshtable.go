package ipam

import (
	"context"
	"net"
	"net/netip"

	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

// MeshTableName is the mesh table of the allocator's claims and votes.
const MeshTableName = "ipam"

// MeshTable is the allocator's Table over the mesh: its "ipam" table,
// and the members alive. Changes fire from the mesh's own events (entries
// of the table, members coming and going): nothing polls.
type MeshTable struct {
	m       *mesh.Mesh
	watch   *feed.Sub[mesh.Event]
	changes chan struct{}
}

var _ Table = (*MeshTable)(nil)

// NewMeshTable returns the allocator's table over m; Run delivers its
// changes.
func NewMeshTable(m *mesh.Mesh) *MeshTable {
	return &MeshTable{m: m, watch: m.Watch(MeshTableName, true), changes: make(chan struct{}, 1)}
}

// Run turns the mesh's events into Changes until ctx ends.
func (t *MeshTable) Run(ctx context.Context) {
	defer t.watch.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.watch.Ready():
		}
		if len(t.watch.Take()) == 0 {
			continue
		}
		select {
		case t.changes <- struct{}{}:
		default:
		}
	}
}

// Self implements Table.
func (t *MeshTable) Self() string { return t.m.LocalNode() }

// Put implements Table.
func (t *MeshTable) Put(key string, value []byte) { t.m.Put(MeshTableName, key, value) }

// Delete implements Table.
func (t *MeshTable) Delete(key string) { t.m.Delete(MeshTableName, key) }

// Entries implements Table.
func (t *MeshTable) Entries() []mesh.Entry { return t.m.Entries(MeshTableName) }

// Alive implements Table: the members alive or suspected, this host
// included, at most one per underlay address. Where several alive members
// share an address, none of them is listed (this host always is): a host
// runs one member, so only a member posing as several (extra mesh nodes
// on ports of its own address, which the gossip key lets it run) does
// that, and its fakes must not vote.
func (t *MeshTable) Alive() []string {
	self := t.m.LocalNode()
	byAddr := map[string][]string{}
	out := []string{self}
	for _, mb := range t.m.Members() {
		if mb.Name == self || (mb.State != mesh.StateAlive && mb.State != mesh.StateSuspect) {
			continue
		}
		host := mb.Addr
		if h, _, err := net.SplitHostPort(mb.Addr); err == nil {
			host = h
		}
		byAddr[host] = append(byAddr[host], mb.Name)
	}
	selfAddr := ""
	for _, mb := range t.m.Members() {
		if mb.Name == self {
			selfAddr, _, _ = net.SplitHostPort(mb.Addr)
		}
	}
	for addr, names := range byAddr {
		if len(names) == 1 && (addr != selfAddr || selfAddr == "") {
			out = append(out, names[0])
		}
	}
	return out
}

// Changes implements Table.
func (t *MeshTable) Changes() <-chan struct{} { return t.changes }

// ExpectedHosts counts the hosts of WEFT_PEERS and this one (self, an
// address): the allocator's claims need a majority of them.
func ExpectedHosts(peers []string, self string) int {
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
