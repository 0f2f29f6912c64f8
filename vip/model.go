package vip

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/catalog"
)

// VIP is one service address as a sandbox's table balances it.
type VIP struct {
	// Addr is the service's address on the network.
	Addr netip.Addr
	// Backends are the addresses of the service's tasks that take new
	// connections, sorted. None: connections to Addr are refused.
	Backends []netip.Addr
}

// Spec is what one sandbox's table says: the VIPs of the weft networks the
// container is attached to, and those networks' subnets (the conntrack
// sweep looks at flows towards them only).
type Spec struct {
	// VIPs, sorted by address.
	VIPs []VIP
	// Subnets of the container's weft networks, sorted.
	Subnets []netip.Prefix
}

// Empty reports whether the spec has no VIP: the sandbox needs no table.
func (s Spec) Empty() bool { return len(s.VIPs) == 0 }

// Marker is a short digest of what the table says, stored with it so
// that a table already saying it is not written again.
func (s Spec) Marker() string {
	var b strings.Builder
	for _, v := range s.VIPs {
		b.WriteString(v.Addr.String())
		b.WriteByte('>')
		for _, a := range v.Backends {
			b.WriteString(a.String())
			b.WriteByte(',')
		}
		b.WriteByte(';')
	}
	sum := sha256.Sum256([]byte(b.String()))
	return "weft-vip " + hex.EncodeToString(sum[:8])
}

// drops reports whether going from s to next removes a VIP, or a backend
// of a VIP: connections s let through that next does not.
func (s Spec) drops(next Spec) bool {
	for _, v := range s.VIPs {
		i, ok := slices.BinarySearchFunc(next.VIPs, v.Addr, func(n VIP, a netip.Addr) int { return n.Addr.Compare(a) })
		if !ok {
			return true
		}
		for _, b := range v.Backends {
			if _, ok := slices.BinarySearchFunc(next.VIPs[i].Backends, b, netip.Addr.Compare); !ok {
				return true
			}
		}
	}
	return false
}

// allows reports whether a flow that was sent to dst and is answered from
// src is one the spec still wants: a flow to a VIP must be translated to
// one of its backends; a translated flow to any other address of the
// subnets is left over from a VIP that went.
func (s Spec) allows(dst, src netip.Addr) bool {
	if !slices.ContainsFunc(s.Subnets, func(p netip.Prefix) bool { return p.Contains(dst) }) {
		return true // not ours
	}
	i, found := slices.BinarySearchFunc(s.VIPs, dst, func(v VIP, a netip.Addr) int { return v.Addr.Compare(a) })
	if found {
		_, ok := slices.BinarySearchFunc(s.VIPs[i].Backends, src, netip.Addr.Compare)
		return ok
	}
	return dst == src
}

// Claim is what one host says about one service on one network: its VIP
// there (when the host knows it) and the addresses of its tasks that are
// being stopped. It is the value of an entry of the mesh table "vip"; its
// JSON field names are wire format: add fields, never rename one.
type Claim struct {
	// Network is the Docker network ID.
	Network string `json:"net"`
	// Service is the swarm service's name.
	Service string `json:"svc"`
	// VIP is the service's address on the network; empty if unknown.
	VIP string `json:"vip,omitempty"`
	// Drain are addresses of tasks of the service that the orchestrator
	// is stopping: they get no new connection.
	Drain []string `json:"drain,omitempty"`
}

// Table is the mesh table that carries the claims.
const Table = "vip"

// claimKey is the mesh key of a host's claim: its name, the network and
// the service (neither contains a "/").
func claimKey(host, network, service string) string {
	return host + "/" + network + "/" + service
}

// KeyOwner names the host a key of Table belongs to (the mesh's
// Config.KeyOwner for Table): the part before the first slash.
func KeyOwner(key string) string {
	host, _, _ := strings.Cut(key, "/")
	return host
}

// heldClaim is a claim with what ranks it against others of the same VIP.
type heldClaim struct {
	Claim
	own   bool   // this host's own view of its engine
	clock uint64 // the mesh entry's Lamport clock
}

// endpoint is a catalog record as the model needs it.
type endpoint struct {
	id    string
	ip    netip.Addr
	names []string
}

// model is the desired state: every network's VIPs and backends, folded
// from the catalog, the claims of every host and this host's engine. It is
// owned by one goroutine.
type model struct {
	// records are the catalog's endpoints by network, by catalog key.
	records map[string]map[string]endpoint
	// claims are the other hosts' claims, by mesh key.
	claims map[string]heldClaim
	// own are this host's claims, by mesh key (its own name first).
	own map[string]Claim
	// tasks maps, per network, endpoint IDs to the service the engine
	// says the endpoint is a task of.
	tasks map[string]map[string]string
}

func newModel() *model {
	return &model{
		records: map[string]map[string]endpoint{},
		claims:  map[string]heldClaim{},
		own:     map[string]Claim{},
		tasks:   map[string]map[string]string{},
	}
}

// record applies a catalog event and reports the network it touched.
func (m *model) record(ev catalog.Event) string {
	r := ev.Record
	key := catalog.Key(r.Host, r.Endpoint)
	if ev.Kind == catalog.Updated && ev.Old.Network != r.Network {
		delete(m.records[ev.Old.Network], catalog.Key(ev.Old.Host, ev.Old.Endpoint))
	}
	if ev.Kind == catalog.Removed {
		delete(m.records[r.Network], key)
		return r.Network
	}
	ip, err := netip.ParseAddr(r.IP)
	if err != nil {
		delete(m.records[r.Network], key)
		return r.Network
	}
	if m.records[r.Network] == nil {
		m.records[r.Network] = map[string]endpoint{}
	}
	m.records[r.Network][key] = endpoint{id: r.Endpoint, ip: ip, names: r.Names}
	return r.Network
}

// VIPs returns network's VIPs with their backends, sorted by address.
//
// A VIP claimed for two services (a service removed and another given its
// address, while a host has not read its engine again) goes to the claim
// of this host's engine, else to the newest claim. A VIP that is the
// address of an endpoint of the network is stale (swarm gave the address
// to a container) and left out.
func (m *model) VIPs(network string) []VIP {
	type choice struct {
		svc   string
		own   bool
		clock uint64
	}
	better := func(a, b choice) bool { // a beats b
		if a.own != b.own {
			return a.own
		}
		if a.clock != b.clock {
			return a.clock > b.clock
		}
		return a.svc < b.svc
	}
	vips := map[netip.Addr]choice{}
	drained := map[string]map[netip.Addr]bool{}
	add := func(c Claim, own bool, clock uint64) {
		if c.Network != network {
			return
		}
		svc := strings.ToLower(c.Service)
		for _, d := range c.Drain {
			if a, err := netip.ParseAddr(d); err == nil {
				if drained[svc] == nil {
					drained[svc] = map[netip.Addr]bool{}
				}
				drained[svc][a] = true
			}
		}
		a, err := netip.ParseAddr(c.VIP)
		if err != nil || !a.Is4() {
			return
		}
		ch := choice{svc: svc, own: own, clock: clock}
		if old, ok := vips[a]; !ok || better(ch, old) {
			vips[a] = ch
		}
	}
	for _, c := range m.own {
		add(c, true, 0)
	}
	for _, c := range m.claims {
		add(c.Claim, false, c.clock)
	}
	if len(vips) == 0 {
		return nil
	}
	recs := m.records[network]
	taken := map[netip.Addr]bool{}
	for _, e := range recs {
		taken[e.ip] = true
	}
	tasks := m.tasks[network]
	out := make([]VIP, 0, len(vips))
	for a, ch := range vips {
		if taken[a] {
			continue
		}
		v := VIP{Addr: a}
		name := "tasks." + ch.svc
		for _, e := range recs {
			if drained[ch.svc][e.ip] {
				continue
			}
			if slices.Contains(e.names, name) || strings.ToLower(tasks[e.id]) == ch.svc {
				v.Backends = append(v.Backends, e.ip)
			}
		}
		slices.SortFunc(v.Backends, netip.Addr.Compare)
		v.Backends = slices.Compact(v.Backends)
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b VIP) int { return a.Addr.Compare(b.Addr) })
	return out
}

// spec returns the table of a sandbox attached to networks whose subnets
// are given.
func (m *model) spec(networks []string, subnets map[string]netip.Prefix) Spec {
	var s Spec
	for _, n := range networks {
		s.VIPs = append(s.VIPs, m.VIPs(n)...)
		if p, ok := subnets[n]; ok {
			s.Subnets = append(s.Subnets, p)
		}
	}
	slices.SortFunc(s.VIPs, func(a, b VIP) int { return a.Addr.Compare(b.Addr) })
	s.VIPs = slices.CompactFunc(s.VIPs, func(a, b VIP) bool { return a.Addr == b.Addr })
	slices.SortFunc(s.Subnets, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	s.Subnets = slices.Compact(s.Subnets)
	return s
}
