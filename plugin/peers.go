package plugin

import (
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/mesh"
)

// endpointTable is the mesh table that carries endpoint records.
const endpointTable = "endpoint"

// meshPeers gives the driver its view of the other hosts through the mesh.
// The mesh starts only once this host's underlay address is known, which
// may be after Docker's first calls: until then local records are kept
// here and published when the mesh attaches.
type meshPeers struct {
	log     *slog.Logger
	changes chan struct{}

	// mu guards the fields below.
	mu    sync.Mutex
	mesh  *mesh.Mesh
	local map[string]driver.Record
}

var _ driver.Peers = (*meshPeers)(nil)

func newMeshPeers(log *slog.Logger) *meshPeers {
	return &meshPeers{log: log, changes: make(chan struct{}, 1), local: map[string]driver.Record{}}
}

// attach starts using m and publishes the records kept so far.
func (p *meshPeers) attach(m *mesh.Mesh) {
	p.mu.Lock()
	p.mesh = m
	for _, r := range p.local {
		p.putLocked(r)
	}
	p.mu.Unlock()
	go func() {
		for range m.Changes() {
			p.notify()
		}
	}()
	p.notify()
}

func (p *meshPeers) notify() {
	select {
	case p.changes <- struct{}{}:
	default:
	}
}

func (p *meshPeers) current() *mesh.Mesh {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mesh
}

// Publish implements driver.Peers.
func (p *meshPeers) Publish(r driver.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.local[r.Endpoint] = r
	p.putLocked(r)
}

func (p *meshPeers) putLocked(r driver.Record) {
	if p.mesh == nil {
		return
	}
	r.Host = p.mesh.LocalNode()
	b, err := json.Marshal(r)
	if err != nil {
		p.log.Error("encode endpoint record", "endpoint", r.Endpoint, "err", err)
		return
	}
	p.mesh.Put(endpointTable, recordKey(p.mesh, r.Endpoint), b)
}

// recordKey is the mesh key of a local endpoint's record. It names this
// node, so that a host that comes back under a new identity (its state
// directory lost) never contends for a key with its former self: the old
// identity's copy, which may carry a newer Lamport clock, would otherwise
// win, and then vanish with the old identity.
func recordKey(m *mesh.Mesh, endpointID string) string {
	return m.LocalNode() + "/" + endpointID
}

// Withdraw implements driver.Peers.
func (p *meshPeers) Withdraw(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.local, id)
	if p.mesh != nil {
		p.mesh.Delete(endpointTable, recordKey(p.mesh, id))
	}
}

// Remote implements driver.Peers: the endpoints other live hosts publish.
func (p *meshPeers) Remote() []driver.Record {
	m := p.current()
	if m == nil {
		return nil
	}
	self := m.LocalNode()
	var out []driver.Record
	for _, e := range m.Entries(endpointTable) {
		if e.Owner == self {
			continue
		}
		var r driver.Record
		if err := json.Unmarshal(e.Value, &r); err != nil {
			p.log.Warn("undecodable endpoint record", "peer", e.Owner, "key", e.Key, "err", err)
			continue
		}
		r.Host = e.Owner
		out = append(out, r)
	}
	return out
}

// Synced reports whether Remote is complete (see mesh.Mesh.Synced).
func (p *meshPeers) Synced() bool {
	m := p.current()
	return m != nil && m.Synced()
}

// Changes implements driver.Peers.
func (p *meshPeers) Changes() <-chan struct{} { return p.changes }
