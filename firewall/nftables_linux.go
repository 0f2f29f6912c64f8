package firewall

// This file owns the kernel side: weft's own nf_tables table, written
// with github.com/google/nftables. Nothing outside the table is read or
// written (Docker's iptables-nft tables beside it are not touched); every
// change of the rules is one batch, which the kernel applies atomically.
//
//	table ip weft {
//	  set members { type ipv4_addr }
//	  chain input {
//	    type filter hook input priority filter; policy accept;
//	    udp dport <vxlan> ip saddr != @members counter drop
//	    tcp dport <mesh>  ip saddr != @members counter drop
//	    udp dport <mesh>  ip saddr != @members counter drop
//	    udp dport <wg>    ip saddr != @members counter drop   (encrypted networks on)
//	  }
//	}

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of weft's table (family ip).
const TableName = "weft"

const (
	setName   = "members"
	chainName = "input"
)

// ruleCount is how many rules the chain holds when it is whole for r.
func ruleCount(r Rules) int {
	if r.WGPort != 0 {
		return 5
	}
	return 3
}

// NFTable is weft's table in a network namespace's nf_tables. Its methods
// are safe for concurrent use.
type NFTable struct {
	name string
	opts []nftables.ConnOption

	// mu serialises changes.
	mu sync.Mutex
	// ports are those of the rules last written (Members unset); the zero
	// value: rebuild.
	ports Rules
}

var _ Table = (*NFTable)(nil)

// NewNFTable returns weft's table in the current network namespace, or in
// the one of netnsFd when it is not negative (tests).
func NewNFTable(netnsFd int) *NFTable {
	t := &NFTable{name: TableName}
	if netnsFd >= 0 {
		t.opts = append(t.opts, nftables.WithNetNSFd(netnsFd))
	}
	return t
}

func (t *NFTable) conn() (*nftables.Conn, error) {
	c, err := nftables.New(t.opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

func (t *NFTable) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: t.name}
}

func (t *NFTable) set() *nftables.Set {
	return &nftables.Set{Table: t.table(), Name: setName, KeyType: nftables.TypeIPAddr}
}

// Apply makes the table hold rules: it builds the whole table when it is
// missing, incomplete or for other ports, and otherwise changes only the
// set's elements. Applying the same rules again writes nothing.
func (t *NFTable) Apply(r Rules) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := t.conn()
	if err != nil {
		return err
	}
	want := elements(r.Members)
	ports := Rules{VXLANPort: r.VXLANPort, MeshPort: r.MeshPort, WGPort: r.WGPort}
	if t.ports.VXLANPort != 0 && t.ports.VXLANPort == ports.VXLANPort && t.ports.MeshPort == ports.MeshPort && t.ports.WGPort == ports.WGPort {
		s, have, ok := t.current(c, ruleCount(r))
		if ok {
			add, del := diff(have, want)
			if len(add) == 0 && len(del) == 0 {
				return nil
			}
			if len(add) > 0 {
				if err := c.SetAddElements(s, add); err != nil {
					return fmt.Errorf("add members to nftables set: %w", err)
				}
			}
			if len(del) > 0 {
				if err := c.SetDeleteElements(s, del); err != nil {
					return fmt.Errorf("remove members from nftables set: %w", err)
				}
			}
			if err := c.Flush(); err != nil {
				t.ports = Rules{}
				return fmt.Errorf("update table %s: %w", t.name, err)
			}
			return nil
		}
	}
	if err := t.build(c, r, want); err != nil {
		t.ports = Rules{}
		return err
	}
	t.ports = ports
	return nil
}

// current returns the set and its elements; ok is false when the table
// is not whole (missing, flushed by someone, another chain): its chain
// does not hold rules rules (any whole count when rules is 0).
func (t *NFTable) current(c *nftables.Conn, rules int) (*nftables.Set, []nftables.SetElement, bool) {
	s, err := c.GetSetByName(t.table(), setName)
	if err != nil {
		return nil, nil, false
	}
	ch, err := c.ListChain(t.table(), chainName)
	if err != nil {
		return nil, nil, false
	}
	have, err := c.GetRules(t.table(), ch)
	if err != nil || (rules != 0 && len(have) != rules) || (rules == 0 && len(have) != 3 && len(have) != 5) {
		return nil, nil, false
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		return nil, nil, false
	}
	return s, els, true
}

// build replaces the table, in one batch: create (a no-op if it exists),
// delete, create afresh with the set, the chain and its rules.
func (t *NFTable) build(c *nftables.Conn, r Rules, members []nftables.SetElement) error {
	tbl := c.AddTable(t.table())
	c.DelTable(tbl)
	tbl = c.AddTable(t.table())
	s := t.set()
	s.Table = tbl
	if err := c.AddSet(s, members); err != nil {
		return fmt.Errorf("nftables set: %w", err)
	}
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: chainName, Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	})
	type guarded struct {
		proto byte
		port  int
	}
	ports := []guarded{{unix.IPPROTO_UDP, r.VXLANPort}, {unix.IPPROTO_TCP, r.MeshPort}, {unix.IPPROTO_UDP, r.MeshPort}}
	if r.WGPort != 0 {
		ports = append(ports, guarded{unix.IPPROTO_UDP, r.WGPort}, guarded{unix.IPPROTO_UDP, r.WGPort + 1})
	}
	for _, p := range ports {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: dropUnlisted(s, p.proto, p.port)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write table %s: %w", t.name, err)
	}
	return nil
}

// dropUnlisted is "<proto> dport <port> ip saddr != @set counter drop".
func dropUnlisted(s *nftables.Set, proto byte, port int) []expr.Any {
	p := make([]byte, 2)
	binary.BigEndian.PutUint16(p, uint16(port))
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// Members returns the set's addresses; an error when the table is not
// there.
func (t *NFTable) Members() ([]netip.Addr, error) {
	c, err := t.conn()
	if err != nil {
		return nil, err
	}
	_, els, ok := t.current(c, 0)
	if !ok {
		return nil, errors.New("no weft table")
	}
	var out []netip.Addr
	for _, e := range els {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// Dropped returns how many packets the table dropped, per rule: VXLAN,
// mesh TCP, mesh UDP, then WireGuard's two ports when they are guarded;
// nil when the
// table is not there.
func (t *NFTable) Dropped() []uint64 {
	c, err := t.conn()
	if err != nil {
		return nil
	}
	rules, err := c.GetRules(t.table(), &nftables.Chain{Name: chainName, Table: t.table()})
	if err != nil {
		return nil
	}
	var out []uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				out = append(out, ctr.Packets)
			}
		}
	}
	return out
}

// Remove deletes the table; a missing table is fine.
func (t *NFTable) Remove() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := t.conn()
	if err != nil {
		return err
	}
	c.DelTable(c.AddTable(t.table()))
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove table %s: %w", t.name, err)
	}
	t.ports = Rules{}
	return nil
}

func elements(addrs []netip.Addr) []nftables.SetElement {
	var out []nftables.SetElement
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() || seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, nftables.SetElement{Key: a.AsSlice()})
	}
	return out
}

// diff returns the elements of want missing from have, and those of have
// not in want.
func diff(have, want []nftables.SetElement) (add, del []nftables.SetElement) {
	in := func(s []nftables.SetElement, k []byte) bool {
		return slices.ContainsFunc(s, func(e nftables.SetElement) bool { return string(e.Key) == string(k) })
	}
	for _, w := range want {
		if !in(have, w.Key) {
			add = append(add, w)
		}
	}
	for _, h := range have {
		if !in(want, h.Key) {
			del = append(del, h)
		}
	}
	return add, del
}
