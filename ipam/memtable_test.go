package ipam

import (
	"maps"
	"slices"
	"sync"

	"github.com/weftnet/weft/mesh"
)

// memNet is an in-memory stand-in for the mesh: every host's table shows
// its own entries and those of the hosts it can reach, as the mesh shows
// the entries of alive members. Changes reach every connected host at
// once; a held host's writes reach no one until it is released, so tests
// can make hosts act on a stale view.
type memNet struct {
	mu     sync.Mutex
	data   map[string]map[string][]byte // owner -> key -> value
	frozen map[string]map[string][]byte // held owners: what the others see
	group  map[string]int               // hosts in different groups do not reach each other
	down   map[string]bool
	tables map[string]*memTable
}

func newMemNet() *memNet {
	return &memNet{
		data: map[string]map[string][]byte{}, frozen: map[string]map[string][]byte{},
		group: map[string]int{}, down: map[string]bool{}, tables: map[string]*memTable{},
	}
}

// table returns host's view, creating it (and bringing the host up).
func (n *memNet) table(host string) *memTable {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.tables[host]
	if t == nil {
		t = &memTable{net: n, name: host, changes: make(chan struct{}, 1)}
		n.tables[host] = t
	}
	if n.data[host] == nil {
		n.data[host] = map[string][]byte{}
	}
	delete(n.down, host)
	n.notifyLocked()
	return t
}

// partition puts the named hosts in group g (0 is everyone's at first).
func (n *memNet) partition(g int, hosts ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range hosts {
		n.group[h] = g
	}
	n.notifyLocked()
}

// heal puts every host back in one group.
func (n *memNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.group)
	n.notifyLocked()
}

// crash takes a host down: the others stop seeing it; its own entries are
// what it wrote, as a restarted mesh would get them back.
func (n *memNet) crash(host string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down[host] = true
	n.notifyLocked()
}

// hold keeps host's later writes from the others until release.
func (n *memNet) hold(host string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.frozen[host] = maps.Clone(n.data[host])
}

func (n *memNet) release(host string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.frozen, host)
	n.notifyLocked()
}

func (n *memNet) reachLocked(a, b string) bool {
	return !n.down[a] && !n.down[b] && n.group[a] == n.group[b]
}

func (n *memNet) notifyLocked() {
	for _, t := range n.tables {
		select {
		case t.changes <- struct{}{}:
		default:
		}
	}
}

type memTable struct {
	net     *memNet
	name    string
	changes chan struct{}
}

var _ Table = (*memTable)(nil)

func (t *memTable) Self() string { return t.name }

func (t *memTable) Put(key string, value []byte) {
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down[t.name] {
		return
	}
	n.data[t.name][key] = slices.Clone(value)
	n.notifyLocked()
}

func (t *memTable) Delete(key string) {
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down[t.name] {
		return
	}
	delete(n.data[t.name], key)
	n.notifyLocked()
}

func (t *memTable) Entries() []mesh.Entry {
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []mesh.Entry
	for owner, kv := range n.data {
		if owner != t.name && !n.reachLocked(t.name, owner) {
			continue
		}
		if f, ok := n.frozen[owner]; ok && owner != t.name {
			kv = f
		}
		for k, v := range kv {
			out = append(out, mesh.Entry{Owner: owner, Key: k, Value: slices.Clone(v)})
		}
	}
	return out
}

func (t *memTable) Alive() []string {
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for h := range n.data {
		if h == t.name || n.reachLocked(t.name, h) {
			out = append(out, h)
		}
	}
	return out
}

func (t *memTable) Changes() <-chan struct{} { return t.changes }
