package wg

// The plaintext drop rule, written with github.com/google/nftables in a
// table of its own, one batch per change (the kernel applies it
// atomically). The VNI is read as four bytes from th+12 (the VNI and the
// reserved byte after it) masked to its three, so a frame with that byte
// set is dropped too:
//
//	table ip weft_sealed {
//	  set vnis { type ipv4_addr }   # VNI << 8, big-endian
//	  chain input {
//	    type filter hook input priority filter - 10; policy accept;
//	    iifname != "weftwg0" iifname != "weftwg1" meta l4proto udp udp dport <vxlan> @th,96,32 & 0xffffff00 @vnis counter drop
//	  }
//	  chain output {
//	    type filter hook output priority filter - 10; policy accept;
//	    oifname != "weftwg0" oifname != "weftwg1" meta l4proto udp udp dport <vxlan> @th,96,32 & 0xffffff00 @vnis counter drop
//	  }
//	}
//
// (both slots' interfaces: during a key rotation either carries the
// traffic). The output chain keeps an encrypted network's VXLAN off every
// other interface: while the tunnel is missing (a userspace tunnel between
// two runs of the plugin), its routes go with it, and the device's packets
// would otherwise follow whatever route is left, in clear.
//
// Decrypted VXLAN arrives on weftwg0 or weftwg1 and passes on (to weft's table of
// sources, which checks it like any other); the same VNI from any other
// interface never reaches the device.

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// FilterTable is the name of the drop rule's table (family ip).
const FilterTable = "weft_sealed"

// Filter keeps the drop rule of the encrypted networks' VNIs.
type Filter interface {
	// Set makes the rule drop VXLAN on port for vnis unless it arrives on
	// (or leaves through) one of ifnames; no vnis removes the table.
	Set(ifnames []string, port int, vnis []uint32) error
}

// NFTFilter is Filter in a namespace's nf_tables. Safe for concurrent use.
type NFTFilter struct {
	opts []nftables.ConnOption

	mu sync.Mutex
}

var _ Filter = (*NFTFilter)(nil)

// NewNFTFilter returns the filter of the namespace netnsFd (negative: the
// caller's).
func NewNFTFilter(netnsFd int) *NFTFilter {
	f := &NFTFilter{}
	if netnsFd >= 0 {
		f.opts = append(f.opts, nftables.WithNetNSFd(netnsFd))
	}
	return f
}

func (f *NFTFilter) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: FilterTable}
}

func (f *NFTFilter) set(tbl *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: tbl, Name: "vnis", KeyType: nftables.TypeIPAddr}
}

func vniKey(vni uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, vni<<8)
}

// Set writes the table when what the kernel holds differs from what is
// asked (elements, or the chain's rule), so a repeated call reads only.
func (f *NFTFilter) Set(ifnames []string, port int, vnis []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := nftables.New(f.opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tbl := f.table()
	if len(vnis) == 0 {
		if _, err := c.ListTableOfFamily(FilterTable, nftables.TableFamilyIPv4); err != nil {
			return nil // none
		}
		c.DelTable(tbl)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("remove table %s: %w", FilterTable, err)
		}
		return nil
	}
	want := make([][]byte, 0, len(vnis))
	for _, v := range vnis {
		want = append(want, vniKey(v))
	}
	names := make([][]byte, 0, len(ifnames))
	for _, n := range ifnames {
		b := make([]byte, unix.IFNAMSIZ)
		copy(b, n)
		names = append(names, b)
	}
	if f.holds(c, want, names) {
		return nil
	}
	c.AddTable(tbl)
	c.DelTable(tbl)
	c.AddTable(tbl)
	s := f.set(tbl)
	els := make([]nftables.SetElement, 0, len(want))
	for _, k := range want {
		els = append(els, nftables.SetElement{Key: k})
	}
	if err := c.AddSet(s, els); err != nil {
		return fmt.Errorf("add set to %s: %w", FilterTable, err)
	}
	policy := nftables.ChainPolicyAccept
	prio := nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 10)
	p := binary.BigEndian.AppendUint16(nil, uint16(port))
	for _, h := range []struct {
		chain string
		hook  *nftables.ChainHook
		iface expr.MetaKey
	}{{"input", nftables.ChainHookInput, expr.MetaKeyIIFNAME}, {"output", nftables.ChainHookOutput, expr.MetaKeyOIFNAME}} {
		ch := c.AddChain(&nftables.Chain{
			Name: h.chain, Table: tbl, Type: nftables.ChainTypeFilter,
			Hooknum: h.hook, Priority: prio, Policy: &policy,
		})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: dropVNIs(h.iface, names, p, s)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write table %s: %w", FilterTable, err)
	}
	return nil
}

// dropVNIs is "<iface> != names[0] <iface> != names[1] ... udp dport port
// (VNI) @s counter drop".
func dropVNIs(iface expr.MetaKey, names [][]byte, port []byte, s *nftables.Set) []expr.Any {
	var out []expr.Any
	for _, n := range names {
		out = append(out, &expr.Meta{Key: iface, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: n})
	}
	return append(out,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0xff, 0xff, 0xff, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// holds reports whether the table exists with exactly want in its set and
// its one rule, which lets in exactly the interfaces names.
func (f *NFTFilter) holds(c *nftables.Conn, want, names [][]byte) bool {
	tbl := f.table()
	s, err := c.GetSetByName(tbl, "vnis")
	if err != nil {
		return false
	}
	els, err := c.GetSetElements(s)
	if err != nil || len(els) != len(want) {
		return false
	}
	for _, e := range els {
		if !slices.ContainsFunc(want, func(k []byte) bool { return string(k) == string(e.Key) }) {
			return false
		}
	}
	for _, ch := range []string{"input", "output"} {
		rules, err := c.GetRules(tbl, &nftables.Chain{Name: ch, Table: tbl})
		if err != nil || len(rules) != 1 {
			return false
		}
		var let [][]byte
		for _, e := range rules[0].Exprs {
			if cmp, ok := e.(*expr.Cmp); ok && cmp.Op == expr.CmpOpNeq {
				let = append(let, cmp.Data)
			}
		}
		if len(let) != len(names) {
			return false
		}
		for i := range let {
			if string(let[i]) != string(names[i]) {
				return false
			}
		}
	}
	return true
}

// Dropped returns how many packets the chain ("input" or "output")
// dropped; 0 without a table.
func (f *NFTFilter) Dropped(chain string) uint64 {
	c, err := nftables.New(f.opts...)
	if err != nil {
		return 0
	}
	tbl := f.table()
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: chain, Table: tbl})
	if err != nil {
		return 0
	}
	var n uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ct, ok := e.(*expr.Counter); ok {
				n += ct.Packets
			}
		}
	}
	return n
}
