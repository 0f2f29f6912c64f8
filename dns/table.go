// Package dns is weft's name server: for each weft network it answers the
// names of that network's containers on every host (hostnames such as vp1
// from swarm templates, container names, aliases, service names,
// <service>.<slot> and tasks.<service>), bare and under weft's domain, with
// PTR records for their addresses; on a dual-stack network, AAAA records
// and ip6.arpa PTR records for their IPv6 addresses too. Names outside weft's knowledge go to the
// host's upstream resolvers; unknown names inside weft's domain get
// NXDOMAIN.
//
// The names travel with the endpoints' records through the mesh, so the
// server of every host knows every container. A zone (the names of one
// network) is rebuilt outside the lock and swapped in whole, so queries
// never wait on an update.
package dns

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Host is one endpoint's names and address.
type Host struct {
	// Names are the endpoint's names, in order of preference (the first is
	// the target of its PTR record).
	Names []string
	// Addr is its IPv4 address on the network.
	Addr netip.Addr
	// Addr6 is its IPv6 address on a dual-stack network; invalid
	// otherwise.
	Addr6 netip.Addr
}

// Table holds the zones of all networks, by VNI. It is safe for concurrent
// use.
type Table struct {
	domain string // lower case, with a trailing dot

	// mu guards zones; zones themselves are never modified once stored.
	mu    sync.RWMutex
	zones map[uint32]*zone
}

type zone struct {
	byName map[string][]netip.Addr // fully qualified, lower case; IPv4 and IPv6
	byAddr map[netip.Addr]string   // PTR target
}

// NewTable returns an empty table for names under domain.
func NewTable(domain string) *Table {
	return &Table{domain: Fqdn(domain), zones: map[uint32]*zone{}}
}

// Domain returns weft's domain, fully qualified.
func (t *Table) Domain() string { return t.domain }

// Set replaces the zone of a network.
func (t *Table) Set(vni uint32, hosts []Host) {
	z := &zone{byName: map[string][]netip.Addr{}, byAddr: map[netip.Addr]string{}}
	for _, e := range hosts {
		if !e.Addr.Is4() {
			continue
		}
		addrs := []netip.Addr{e.Addr}
		if e.Addr6.Is6() && !e.Addr6.Is4In6() {
			addrs = append(addrs, e.Addr6)
		}
		for _, n := range e.Names {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			if !ValidName(n) {
				continue
			}
			qs := []string{n + "." + t.domain}
			if Bare(n) {
				qs = append(qs, n+".")
			}
			for _, a := range addrs {
				for _, q := range qs {
					if !slices.Contains(z.byName[q], a) {
						z.byName[q] = append(z.byName[q], a)
					}
				}
				if _, ok := z.byAddr[a]; !ok {
					z.byAddr[a] = n + "." + t.domain
				}
			}
		}
	}
	t.mu.Lock()
	t.zones[vni] = z
	t.mu.Unlock()
}

// Drop removes the zone of a network.
func (t *Table) Drop(vni uint32) {
	t.mu.Lock()
	delete(t.zones, vni)
	t.mu.Unlock()
}

// Lookup returns the addresses of a fully qualified, lower-case name in a
// network, IPv4 and IPv6. The slice is a copy.
func (t *Table) Lookup(vni uint32, name string) ([]netip.Addr, bool) {
	t.mu.RLock()
	z := t.zones[vni]
	t.mu.RUnlock()
	if z == nil {
		return nil, false
	}
	a, ok := z.byName[name]
	return slices.Clone(a), ok
}

// Reverse returns the PTR target of an address in a network.
func (t *Table) Reverse(vni uint32, addr netip.Addr) (string, bool) {
	t.mu.RLock()
	z := t.zones[vni]
	t.mu.RUnlock()
	if z == nil {
		return "", false
	}
	n, ok := z.byAddr[addr]
	return n, ok
}

// InDomain reports whether a fully qualified name is weft's domain or
// under it.
func (t *Table) InDomain(name string) bool {
	return name == t.domain || strings.HasSuffix(name, "."+t.domain)
}

// Fqdn lower-cases a name and gives it a trailing dot.
func Fqdn(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// ValidName reports whether n (no trailing dot) is a usable DNS name:
// labels of 1-63 letters, digits, '-' or '_', 253 bytes at most.
func ValidName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Bare reports whether a name is answered bare as well as under weft's
// domain: names of one label (a hostname such as vp1, a container name, an
// alias), and the shapes weft derives from swarm's labels — <service>.<slot>,
// <service>.<node ID> (a global service's task) and tasks.<service>. Any
// other name with a dot is answered under the domain only, so a container
// cannot shadow a name of the outside world for its whole network (a
// --hostname api.github.com is api.github.com.weft.local, nothing more).
func Bare(n string) bool {
	first, rest, dotted := strings.Cut(n, ".")
	switch {
	case !dotted:
		return true
	case strings.Contains(rest, "."):
		return false
	case first == "tasks":
		return true
	case isDigits(rest):
		return true
	default:
		return isNodeID(rest)
	}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isNodeID reports whether s looks like a swarm node ID: 25 lower-case
// letters and digits.
func isNodeID(s string) bool {
	if len(s) != 25 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
