package antispoof

// This file owns the kernel side: weft's table of sources, written with
// github.com/google/nftables. Every change is one batch, which the kernel
// applies atomically. Offsets are from the outer UDP header (th): the
// VXLAN header follows at th+8, its VNI in the three bytes at th+12 (read
// as four from th+11, with the reserved byte before it, so the key is the
// VNI as a 32-bit number and a frame with that byte set matches nothing);
// the inner Ethernet header at th+16 (source MAC th+22, type th+28), the
// inner IPv4 header at th+30 (source th+42).
//
// The inner destination MAC is at th+16 (its first byte's low bit: group
// addressed), the inner IPv4 destination at th+46.
//
// IPv6 frames (type 0x86dd): the inner IPv6 header at th+30, its source
// at th+38, its destination at th+54; their sources are in sets of their
// own (local6, remote6), checked by a rule of their own in each chain
// (shown below for IPv4 only).
//
//	table ip weft_sources {
//	  set local  { type ipv4_addr . ether_addr . ipv4_addr }              # vni . mac . ip
//	  set remote { type ipv4_addr . ipv4_addr . ether_addr . ipv4_addr }  # vtep . vni . mac . ip
//	  set local6 { type ipv4_addr . ether_addr . ipv6_addr }
//	  set remote6 { type ipv4_addr . ipv4_addr . ether_addr . ipv6_addr }
//	  set flood  { type ipv4_addr }                                       # vni
//	  chain output {
//	    type filter hook output priority filter; policy accept;
//	    udp dport <vxlan> @th,88,32 <probe vni> accept
//	    udp dport <vxlan> @th,128,8 & 1 == 1 @th,88,32 != @flood counter drop
//	    udp dport <vxlan> @th,128,8 & 1 == 0 @th,224,16 0x0800 @th,88,32 @flood ip daddr . @th,88,32 . @th,128,48 . @th,368,32 != @remote counter drop
//	    udp dport <vxlan> @th,224,16 0x0800 @th,88,32 . @th,176,48 . @th,336,32 @local accept
//	    udp dport <vxlan> counter drop
//	  }
//	  chain input {
//	    type filter hook input priority filter; policy accept;
//	    udp dport <vxlan> @th,88,32 <probe vni> accept
//	    udp dport <vxlan> @th,128,8 & 1 == 1 @th,88,32 != @flood counter drop
//	    udp dport <vxlan> @th,224,16 0x0800 ip saddr . @th,88,32 . @th,176,48 . @th,336,32 @remote accept
//	    udp dport <vxlan> counter drop
//	  }
//	  chain forward {
//	    type filter hook forward priority filter; policy accept;
//	    udp dport <vxlan> counter drop
//	  }
//	}

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of the table (family ip).
const TableName = "weft_sources"

const (
	localSet   = "local"
	remoteSet  = "remote"
	local6Set  = "local6"
	remote6Set = "remote6"
	floodSet   = "flood"
	outChain   = "output"
	inChain    = "input"
	fwdChain   = "forward"
)

var (
	// The VNI is typed as an IPv4 address: a four-byte big-endian type
	// that nft's command line shows and parses (VNI 42 is 0.0.0.42); an
	// integer without the "typeof" annotation, which the library does not
	// write, shows there with no length.
	localKey   = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeEtherAddr, nftables.TypeIPAddr)
	remoteKey  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeEtherAddr, nftables.TypeIPAddr)
	local6Key  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeEtherAddr, nftables.TypeIP6Addr)
	remote6Key = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeEtherAddr, nftables.TypeIP6Addr)
)

// family is a pair of sets, one per inner address family; a key goes to
// one of them by its length (an IPv6 key is longer than any IPv4 one).
type family struct{ v4, v6 *nftables.Set }

// maxKey4 is the length of the longest IPv4 key (remote).
const maxKey4 = 20

func (f family) of(k string) *nftables.Set {
	if len(k) > maxKey4 {
		return f.v6
	}
	return f.v4
}

// write adds (or removes) the elements ks, each to its set.
func (f family) write(c *nftables.Conn, ks []string, add bool) error {
	by := map[*nftables.Set][]string{}
	for _, k := range ks {
		by[f.of(k)] = append(by[f.of(k)], k)
	}
	for _, s := range []*nftables.Set{f.v4, f.v6} {
		if len(by[s]) == 0 {
			continue
		}
		var err error
		if add {
			err = c.SetAddElements(s, elements(by[s]))
		} else {
			err = c.SetDeleteElements(s, elements(by[s]))
		}
		if err != nil {
			return fmt.Errorf("change set %s: %w", s.Name, err)
		}
	}
	return nil
}

// Config configures a Table.
type Config struct {
	// VXLANPort is weft's VXLAN UDP port. Required.
	VXLANPort int
	// ExemptVNI is a VNI let through unchecked (dataplane.ProbeVNI, the
	// probe's segment); 0 for none.
	ExemptVNI uint32
	// NetNSFd is the network namespace to work in (tests); a negative
	// value, the caller's.
	NetNSFd int
}

// Table is weft's table of sources in a network namespace's nf_tables.
// Its methods are safe for concurrent use.
type Table struct {
	cfg  Config
	opts []nftables.ConnOption

	// mu serialises changes and guards the fields below.
	mu sync.Mutex
	// built tells that this process wrote the table whole and that local
	// and remote mirror the elements the kernel holds; false: the next
	// Sync builds it again from what it is asked for.
	built                bool
	local, remote, flood map[string]bool
}

// New returns the table of cfg; nothing is written until Sync.
func New(cfg Config) (*Table, error) {
	if cfg.VXLANPort <= 0 || cfg.VXLANPort > 65535 {
		return nil, fmt.Errorf("VXLAN port %d is outside 1-65535", cfg.VXLANPort)
	}
	t := &Table{cfg: cfg}
	if cfg.NetNSFd >= 0 {
		t.opts = append(t.opts, nftables.WithNetNSFd(cfg.NetNSFd))
	}
	return t, nil
}

func (t *Table) conn() (*nftables.Conn, error) {
	c, err := nftables.New(t.opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

func (t *Table) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
}

func (t *Table) sets(tbl *nftables.Table) (local, remote family) {
	return family{&nftables.Set{Table: tbl, Name: localSet, KeyType: localKey, Concatenation: true},
			&nftables.Set{Table: tbl, Name: local6Set, KeyType: local6Key, Concatenation: true}},
		family{&nftables.Set{Table: tbl, Name: remoteSet, KeyType: remoteKey, Concatenation: true},
			&nftables.Set{Table: tbl, Name: remote6Set, KeyType: remote6Key, Concatenation: true}}
}

func (t *Table) floodSet(tbl *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: tbl, Name: floodSet, KeyType: nftables.TypeIPAddr}
}

// ErrNotBuilt is returned by Change before Sync has written the table (or
// after a write failed): the next Sync brings it whole.
var ErrNotBuilt = errors.New("the table of sources is not written yet")

// Change removes del's sources and adds add's, in one batch. Only sources
// the table holds are removed and only those it lacks are added, so the
// same change again writes nothing. A source both removed and added stays.
func (t *Table) Change(add, del Sources) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.built {
		return ErrNotBuilt
	}
	la, ld := keysOf(add.Local, false), keysOf(del.Local, false)
	ra, rd := keysOf(add.Remote, true), keysOf(del.Remote, true)
	ldel, ladd := pick(ld, t.local, true), pick(la, t.local, false)
	rdel, radd := pick(rd, t.remote, true), pick(ra, t.remote, false)
	// A source both removed and added: removed, then added back.
	ladd = append(ladd, pick(intersect(la, ld), t.local, true)...)
	radd = append(radd, pick(intersect(ra, rd), t.remote, true)...)
	if len(ldel)+len(ladd)+len(rdel)+len(radd) == 0 {
		return nil
	}
	c, err := t.conn()
	if err != nil {
		return err
	}
	ls, rs := t.sets(t.table())
	for _, op := range []struct {
		f   family
		els []string
		add bool
	}{{ls, ldel, false}, {rs, rdel, false}, {ls, ladd, true}, {rs, radd, true}} {
		if err := op.f.write(c, op.els, op.add); err != nil {
			t.built = false
			return err
		}
	}
	if err := c.Flush(); err != nil {
		t.built = false
		return fmt.Errorf("change the sources of table %s: %w", TableName, err)
	}
	for _, k := range ldel {
		delete(t.local, k)
	}
	for _, k := range rdel {
		delete(t.remote, k)
	}
	for _, k := range ladd {
		t.local[k] = true
	}
	for _, k := range radd {
		t.remote[k] = true
	}
	return nil
}

// Sync makes the table hold want's sources: it builds the whole table
// when this process has not written it yet, or it is not whole, and
// otherwise changes only the sets' elements. With prune false, sources the
// table holds beyond want are kept (a start, before the catalog is
// complete). The same want again writes nothing. Malformed entries are
// skipped and reported in the error, after the rest is written.
func (t *Table) Sync(want Sources, prune bool) (Diff, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d Diff
	var bad []error
	for _, e := range want.Local {
		if err := e.Validate(false); err != nil {
			bad = append(bad, err)
		}
	}
	for _, e := range want.Remote {
		if err := e.Validate(true); err != nil {
			bad = append(bad, err)
		}
	}
	wl, wr, wf := keysOf(want.Local, false), keysOf(want.Remote, true), floodKeys(want.Flood)
	c, err := t.conn()
	if err != nil {
		return d, err
	}
	hl, hr, hf, whole, present := t.current(c)
	if !t.built && !present && !prune {
		// No table to keep, and a view that is not complete: a table
		// built now would drop the packets of every remote endpoint not
		// known yet (a first start, or one after weft's tables were
		// removed). It is built with the first complete view.
		return Diff{}, ErrNotBuilt
	}
	if !prune {
		for k := range hl {
			wl[k] = true
		}
		for k := range hr {
			wr[k] = true
		}
	}
	d.LocalAdded, d.LocalRemoved = count(wl, hl)
	d.RemoteAdded, d.RemoteRemoved = count(wr, hr)
	d.FloodAdded, d.FloodRemoved = count(wf, hf)
	if !t.built || !whole {
		if err := t.build(c, wl, wr, wf); err != nil {
			t.built = false
			return Diff{}, err
		}
		t.built, t.local, t.remote, t.flood = true, wl, wr, wf
		return d, errors.Join(bad...)
	}
	if d == (Diff{}) {
		t.local, t.remote, t.flood = wl, wr, wf
		return d, errors.Join(bad...)
	}
	ls, rs := t.sets(t.table())
	fs := t.floodSet(t.table())
	for _, op := range []struct {
		f         family
		want, has map[string]bool
	}{{ls, wl, hl}, {rs, wr, hr}, {family{fs, fs}, wf, hf}} {
		var add, del []string
		for k := range op.want {
			if !op.has[k] {
				add = append(add, k)
			}
		}
		for k := range op.has {
			if !op.want[k] {
				del = append(del, k)
			}
		}
		if err := op.f.write(c, add, true); err != nil {
			return Diff{}, err
		}
		if err := op.f.write(c, del, false); err != nil {
			return Diff{}, err
		}
	}
	if err := c.Flush(); err != nil {
		t.built = false
		return Diff{}, fmt.Errorf("sync the sources of table %s: %w", TableName, err)
	}
	t.local, t.remote, t.flood = wl, wr, wf
	return d, errors.Join(bad...)
}

// current returns the elements of the sets, and whether the table is
// whole (the three sets, the three chains with their rules).
func (t *Table) current(c *nftables.Conn) (local, remote, flood map[string]bool, whole, present bool) {
	local, remote, flood = map[string]bool{}, map[string]bool{}, map[string]bool{}
	tbl := t.table()
	ls, rs := t.sets(tbl)
	whole = true
	for _, s := range []struct {
		set *nftables.Set
		out map[string]bool
	}{{ls.v4, local}, {ls.v6, local}, {rs.v4, remote}, {rs.v6, remote}, {t.floodSet(tbl), flood}} {
		have, err := c.GetSetByName(tbl, s.set.Name)
		if err != nil {
			whole = false
			continue
		}
		present = true
		els, err := c.GetSetElements(have)
		if err != nil {
			whole = false
			continue
		}
		for _, e := range els {
			s.out[string(e.Key)] = true
		}
	}
	for name, n := range t.ruleCounts() {
		rules, err := c.GetRules(tbl, &nftables.Chain{Name: name, Table: tbl})
		if err != nil || len(rules) != n {
			whole = false
		}
	}
	return local, remote, flood, whole, present
}

func (t *Table) ruleCounts() map[string]int {
	out, in := 6, 4
	if t.cfg.ExemptVNI != 0 {
		out, in = out+1, in+1
	}
	return map[string]int{outChain: out, inChain: in, fwdChain: 1}
}

// build replaces the table, in one batch: create (a no-op if it exists),
// delete, create afresh with its sets, chains and rules.
func (t *Table) build(c *nftables.Conn, local, remote, flood map[string]bool) error {
	tbl := c.AddTable(t.table())
	c.DelTable(tbl)
	tbl = c.AddTable(t.table())
	ls, rs := t.sets(tbl)
	fs := t.floodSet(tbl)
	byKey := map[*nftables.Set][]string{ls.v4: nil, ls.v6: nil, rs.v4: nil, rs.v6: nil, fs: keys(flood)}
	for k := range local {
		byKey[ls.of(k)] = append(byKey[ls.of(k)], k)
	}
	for k := range remote {
		byKey[rs.of(k)] = append(byKey[rs.of(k)], k)
	}
	for _, s := range []*nftables.Set{ls.v4, ls.v6, rs.v4, rs.v6, fs} {
		if err := c.AddSet(s, elements(byKey[s])); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
	}
	policy := nftables.ChainPolicyAccept
	chain := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return c.AddChain(&nftables.Chain{
			Name: name, Table: tbl, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityFilter, Policy: &policy,
		})
	}
	port := t.cfg.VXLANPort
	for _, ch := range []struct {
		chain  *nftables.Chain
		set    family
		remote bool
	}{{chain(outChain, nftables.ChainHookOutput), ls, false}, {chain(inChain, nftables.ChainHookInput), rs, true}} {
		if t.cfg.ExemptVNI != 0 {
			c.AddRule(&nftables.Rule{Table: tbl, Chain: ch.chain, Exprs: exempt(port, t.cfg.ExemptVNI)})
		}
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch.chain, Exprs: groupElsewhere(port, fs)})
		if !ch.remote {
			c.AddRule(&nftables.Rule{Table: tbl, Chain: ch.chain, Exprs: unknownUnicast(port, fs, rs.v4, false)})
			c.AddRule(&nftables.Rule{Table: tbl, Chain: ch.chain, Exprs: unknownUnicast(port, fs, rs.v6, true)})
		}
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch.chain, Exprs: listed(port, ch.set.v4, ch.remote, false)})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch.chain, Exprs: listed(port, ch.set.v6, ch.remote, true)})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch.chain, Exprs: drop(port)})
	}
	c.AddRule(&nftables.Rule{Table: tbl, Chain: chain(fwdChain, nftables.ChainHookForward), Exprs: drop(port)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write table %s: %w", TableName, err)
	}
	return nil
}

// Registers: NFT_REG_1 (16 bytes) for single values; a concatenation goes
// into consecutive 32-bit registers from NFT_REG32_00, each field padded
// to a multiple of four bytes.
const (
	reg1    = 1
	reg3200 = 8
)

// vxlanPort is "udp dport <port>".
func vxlanPort(port int) []expr.Any {
	p := make([]byte, 2)
	binary.BigEndian.PutUint16(p, uint16(port))
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: p},
	}
}

func th(reg, off, n uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: n}
}

// exempt is "udp dport <port> @th,88,32 <vni> accept".
func exempt(port int, vni uint32) []expr.Any {
	return append(vxlanPort(port),
		th(reg1, 11, 4),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binary.BigEndian.AppendUint32(nil, vni)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
}

// Inner frame types and where each one's source and destination
// addresses are, from the outer UDP header.
var (
	typeIPv4         = []byte{0x08, 0x00}
	typeIPv6         = []byte{0x86, 0xdd}
	src4, dst4, len4 = uint32(42), uint32(46), uint32(4)
	src6, dst6, len6 = uint32(38), uint32(54), uint32(16)
)

// innerType is "@th,224,16 <type of v6 or IPv4>".
func innerType(v6 bool) []expr.Any {
	typ := typeIPv4
	if v6 {
		typ = typeIPv6
	}
	return []expr.Any{th(reg1, 28, 2), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: typ}}
}

// listed is "udp dport <port>, inner type IPv4 (or IPv6), [ip saddr .]
// vni . inner source MAC . inner source address in @set, accept".
func listed(port int, s *nftables.Set, remote, v6 bool) []expr.Any {
	e := append(vxlanPort(port), innerType(v6)...)
	r := uint32(reg3200)
	if remote {
		e = append(e, &expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4})
		r++
	}
	src, n := src4, len4
	if v6 {
		src, n = src6, len6
	}
	e = append(e,
		th(r, 11, 4),    // vni
		th(r+1, 22, 6),  // inner source MAC, padded to 8 bytes
		th(r+3, src, n), // inner source address
		&expr.Lookup{SourceRegister: reg3200, SetName: s.Name, SetID: s.ID},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
	return e
}

// groupBit loads the inner destination MAC's first byte, and keeps its
// group bit.
func groupBit() []expr.Any {
	return []expr.Any{
		th(reg1, 16, 1),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{1}, Xor: []byte{0}},
	}
}

// groupElsewhere is "udp dport <port> @th,128,8 & 1 == 1 @th,88,32 !=
// @flood counter drop": a broadcast or multicast frame on a network that
// does not carry them.
func groupElsewhere(port int, flood *nftables.Set) []expr.Any {
	e := append(vxlanPort(port), groupBit()...)
	return append(e,
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
		th(reg1, 11, 4),
		&expr.Lookup{SourceRegister: reg1, SetName: flood.Name, SetID: flood.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// unknownUnicast is "udp dport <port> @th,128,8 & 1 == 0 <inner type>
// @th,88,32 @flood ip daddr . @th,88,32 . @th,128,48 . <inner destination>
// != @remote(6) counter drop": on a network with flood entries, a unicast
// IPv4 (IPv6) frame sent to a host the catalog does not place its
// destination on (the kernel's flooded copies of an unknown destination).
func unknownUnicast(port int, flood, remote *nftables.Set, v6 bool) []expr.Any {
	e := append(vxlanPort(port), groupBit()...)
	e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0}})
	e = append(e, innerType(v6)...)
	dst, n := dst4, len4
	if v6 {
		dst, n = dst6, len6
	}
	return append(e,
		th(reg1, 11, 4),
		&expr.Lookup{SourceRegister: reg1, SetName: flood.Name, SetID: flood.ID},
		&expr.Payload{DestRegister: reg3200, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		th(reg3200+1, 11, 4),  // vni
		th(reg3200+2, 16, 6),  // inner destination MAC, padded to 8 bytes
		th(reg3200+4, dst, n), // inner destination address
		&expr.Lookup{SourceRegister: reg3200, SetName: remote.Name, SetID: remote.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// drop is "udp dport <port> counter drop".
func drop(port int) []expr.Any {
	return append(vxlanPort(port), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// Dropped returns the drop rules' counters; zero when there is no table.
func (t *Table) Dropped() Dropped {
	var d Dropped
	c, err := t.conn()
	if err != nil {
		return d
	}
	tbl := t.table()
	for name, out := range map[string]*uint64{outChain: &d.Out, inChain: &d.In, fwdChain: &d.Forward} {
		rules, err := c.GetRules(tbl, &nftables.Chain{Name: name, Table: tbl})
		if err != nil {
			continue
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					*out += ctr.Packets
				}
			}
		}
	}
	return d
}

// Sources returns what the kernel's sets hold; an error when the table is
// not there.
func (t *Table) Sources() (Sources, error) {
	c, err := t.conn()
	if err != nil {
		return Sources{}, err
	}
	l, r, f, whole, _ := t.current(c)
	if !whole {
		return Sources{}, fmt.Errorf("no whole table %s", TableName)
	}
	var s Sources
	for k := range f {
		s.Flood = append(s.Flood, binary.BigEndian.Uint32([]byte(k)))
	}
	slices.Sort(s.Flood)
	for k := range l {
		s.Local = append(s.Local, decode(k, false))
	}
	for k := range r {
		s.Remote = append(s.Remote, decode(k, true))
	}
	return s, nil
}

// Remove deletes the table; a missing table is fine.
func (t *Table) Remove() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := t.conn()
	if err != nil {
		return err
	}
	c.DelTable(c.AddTable(t.table()))
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove table %s: %w", TableName, err)
	}
	t.built, t.local, t.remote, t.flood = false, nil, nil, nil
	return nil
}

// key encodes e as the set's key: [vtep .] vni . mac (padded) . ip.
func key(e Entry, remote bool) string {
	var b []byte
	if remote {
		v := e.VTEP.As4()
		b = append(b, v[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, e.VNI)
	b = append(b, e.MAC...)
	b = append(b, 0, 0)
	if e.IP.Is4() {
		ip := e.IP.As4()
		return string(append(b, ip[:]...))
	}
	ip := e.IP.As16()
	return string(append(b, ip[:]...))
}

func decode(k string, remote bool) Entry {
	b := []byte(k)
	var e Entry
	if remote {
		e.VTEP = netip.AddrFrom4([4]byte(b[:4]))
		b = b[4:]
	}
	e.VNI = binary.BigEndian.Uint32(b[:4])
	e.MAC = net.HardwareAddr(append([]byte(nil), b[4:10]...))
	if len(b) == 28 {
		e.IP = netip.AddrFrom16([16]byte(b[12:28]))
	} else {
		e.IP = netip.AddrFrom4([4]byte(b[12:16]))
	}
	return e
}

// floodKeys returns the set keys of the VNIs vnis (valid ones only).
func floodKeys(vnis []uint32) map[string]bool {
	out := make(map[string]bool, len(vnis))
	for _, v := range vnis {
		if v != 0 && v <= 1<<24-1 {
			out[string(binary.BigEndian.AppendUint32(nil, v))] = true
		}
	}
	return out
}

// keysOf returns the keys of the valid entries of es.
func keysOf(es []Entry, remote bool) map[string]bool {
	out := make(map[string]bool, len(es))
	for _, e := range es {
		if e.Validate(remote) == nil {
			out[key(e, remote)] = true
		}
	}
	return out
}

// pick returns the keys of ks that have holds (in) or lacks (!in).
func pick(ks, have map[string]bool, in bool) []string {
	var out []string
	for k := range ks {
		if have[k] == in {
			out = append(out, k)
		}
	}
	return out
}

func intersect(a, b map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		if b[k] {
			out[k] = true
		}
	}
	return out
}

func count(want, have map[string]bool) (added, removed int) {
	for k := range want {
		if !have[k] {
			added++
		}
	}
	for k := range have {
		if !want[k] {
			removed++
		}
	}
	return added, removed
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func elements(ks []string) []nftables.SetElement {
	out := make([]nftables.SetElement, len(ks))
	for i, k := range ks {
		out[i] = nftables.SetElement{Key: []byte(k)}
	}
	return out
}
