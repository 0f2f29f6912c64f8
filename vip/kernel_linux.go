package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TableName is the name of weft's nftables table (family ip) in each
// sandbox.
const TableName = "weft-vip"

const (
	natChain    = "nat-output"
	filterChain = "filter-output"
	vipsMap     = "vips"
	deadSet     = "dead"
)

// Kernel writes sandboxes' tables. Its methods may be called from one
// goroutine at a time.
type Kernel interface {
	// Apply makes the table of the network namespace at path say spec:
	// it writes the table (removes it, for an empty spec) unless the
	// table's marker already says spec, and reports whether it wrote. An
	// error wrapping ErrGone means the namespace no longer exists.
	Apply(path string, spec Spec) (wrote bool, err error)
	// Sweep deletes the conntrack flows of the namespace at path that
	// spec does not allow (Spec.allows) and reports how many. It costs a
	// walk of the kernel's whole conntrack table (milliseconds), so it is
	// called only when a spec has dropped something, or after a start.
	Sweep(path string, spec Spec) (int, error)
	// Mounted reports whether a network namespace is mounted at path (the
	// engine creates the file, then mounts the namespace on it).
	Mounted(path string) bool
}

// ErrGone reports a sandbox whose namespace is gone (or is not one).
var ErrGone = errors.New("network namespace gone")

// NetfilterKernel is the Kernel of the running system: nftables and
// conntrack over netlink sockets opened in each sandbox's namespace (the
// calling thread never changes namespace).
type NetfilterKernel struct{}

var _ Kernel = NetfilterKernel{}

// Apply implements Kernel.
func (NetfilterKernel) Apply(path string, spec Spec) (bool, error) {
	ns, err := openNamespace(path)
	if err != nil {
		return false, err
	}
	defer ns.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		return false, fmt.Errorf("open nftables in %s: %w", path, err)
	}
	defer conn.CloseLasting()
	marker, err := readMarker(conn)
	if err != nil {
		return false, fmt.Errorf("read table %s in %s: %w", TableName, path, err)
	}
	want := ""
	if !spec.Empty() {
		want = spec.Marker()
	}
	if marker == want {
		return false, nil
	}
	writeTable(conn, spec)
	if err := conn.Flush(); err != nil {
		return false, fmt.Errorf("write table %s in %s: %w", TableName, path, err)
	}
	return true, nil
}

// Sweep implements Kernel.
func (NetfilterKernel) Sweep(path string, spec Spec) (int, error) {
	ns, err := openNamespace(path)
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	n, err := sweepFlows(ns, spec)
	if err != nil {
		return n, fmt.Errorf("delete stale conntrack flows in %s: %w", path, err)
	}
	return n, nil
}

// openNamespace opens the network namespace mounted at path, refusing a
// path that is not (yet) one: the engine creates the file before it
// mounts the namespace on it.
func openNamespace(path string) (netns.NsHandle, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("open %s: %w", path, ErrGone)
		}
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		unix.Close(fd)
		return -1, fmt.Errorf("%s is not a namespace: %w", path, ErrGone)
	}
	return netns.NsHandle(fd), nil
}

// Mounted implements Kernel.
func (NetfilterKernel) Mounted(path string) bool {
	ns, err := openNamespace(path)
	if err != nil {
		return false
	}
	ns.Close()
	return true
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

// readMarker returns the marker of the namespace's table, "" if it has
// none.
func readMarker(conn *nftables.Conn) (string, error) {
	rules, err := conn.GetRules(table(), &nftables.Chain{Name: natChain})
	if errors.Is(err, unix.ENOENT) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, r := range rules {
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
			return s, nil
		}
	}
	return "", nil
}

// writeTable queues, as one transaction, the replacement of the table by
// one that says spec (none for an empty spec). Adding the table first
// makes the delete succeed whether or not it existed.
func writeTable(conn *nftables.Conn, spec Spec) {
	t := table()
	conn.AddTable(t)
	conn.DelTable(t)
	if spec.Empty() {
		return
	}
	conn.AddTable(t)
	var setID uint32
	newSet := func(s *nftables.Set, elems []nftables.SetElement) *nftables.Set {
		setID++
		s.Table, s.ID = t, setID
		// Only a malformed set makes AddSet fail; Flush reports it.
		_ = conn.AddSet(s, elems)
		return s
	}
	var jumps, dead []nftables.SetElement
	for i, v := range spec.VIPs {
		key := v.Addr.AsSlice()
		dead = append(dead, nftables.SetElement{Key: key})
		if len(v.Backends) == 0 {
			continue
		}
		chain := conn.AddChain(&nftables.Chain{Name: "vip-" + strconv.Itoa(i), Table: t})
		elems := make([]nftables.SetElement, len(v.Backends))
		for j, b := range v.Backends {
			elems[j] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(j)), Val: b.AsSlice()}
		}
		backends := newSet(&nftables.Set{
			Name: "backends-" + strconv.Itoa(i), IsMap: true, Constant: true,
			KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeIPAddr,
		}, elems)
		conn.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: []expr.Any{
			&expr.Numgen{Register: 1, Modulus: uint32(len(v.Backends)), Type: unix.NFT_NG_INCREMENTAL},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: backends.Name, SetID: backends.ID},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		}})
		jumps = append(jumps, nftables.SetElement{Key: key, VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain.Name}})
	}
	vips := newSet(&nftables.Set{Name: vipsMap, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}, jumps)
	deads := newSet(&nftables.Set{Name: deadSet, KeyType: nftables.TypeIPAddr}, dead)

	accept := nftables.ChainPolicyAccept
	nat := conn.AddChain(&nftables.Chain{
		Name: natChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	daddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
	conn.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: []expr.Any{
		daddr,
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: vips.Name, SetID: vips.ID},
	}, UserData: userdata.AppendString(nil, userdata.TypeComment, spec.Marker())})

	filter := conn.AddChain(&nftables.Chain{
		Name: filterChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	isDead := &expr.Lookup{SourceRegister: 1, SetName: deads.Name, SetID: deads.ID}
	conn.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: []expr.Any{
		daddr, isDead,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	}})
	conn.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: []expr.Any{
		daddr, isDead,
		&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreachable},
	}})
}

// sweepFlows deletes the namespace's conntrack flows that spec does not
// allow (Spec.allows).
func sweepFlows(ns netns.NsHandle, spec Spec) (int, error) {
	if len(spec.Subnets) == 0 {
		return 0, nil
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, staleFlows{spec})
	return int(n), err
}

// staleFlows matches the conntrack flows a spec does not allow.
type staleFlows struct{ spec Spec }

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f staleFlows) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	dst, ok1 := netip.AddrFromSlice(flow.Forward.DstIP)
	src, ok2 := netip.AddrFromSlice(flow.Reverse.SrcIP)
	if !ok1 || !ok2 {
		return false
	}
	return !f.spec.allows(dst.Unmap(), src.Unmap())
}

// icmpPortUnreachable is ICMP's destination unreachable code 3.
const icmpPortUnreachable = 3

// ReadTable returns what the table in the network namespace at path says:
// its VIPs, sorted, each with its backends (none if it has no table). For
// tests and inspection.
func ReadTable(path string) ([]VIP, error) {
	ns, err := openNamespace(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("open nftables in %s: %w", path, err)
	}
	defer conn.CloseLasting()
	t := table()
	set := func(name string) ([]nftables.SetElement, error) {
		s, err := conn.GetSetByName(t, name)
		if err != nil {
			return nil, fmt.Errorf("read set %s of %s in %s: %w", name, TableName, path, err)
		}
		return conn.GetSetElements(s)
	}
	dead, err := set(deadSet)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// VIP i of the spec (sorted by address) has its backends in the map
	// backends-i, if it has any (writeTable).
	var out []VIP
	for _, e := range dead {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			out = append(out, VIP{Addr: a})
		}
	}
	slices.SortFunc(out, func(a, b VIP) int { return a.Addr.Compare(b.Addr) })
	for i := range out {
		elems, err := set("backends-" + strconv.Itoa(i))
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, b := range elems {
			if ba, ok := netip.AddrFromSlice(b.Val); ok {
				out[i].Backends = append(out[i].Backends, ba)
			}
		}
		slices.SortFunc(out[i].Backends, netip.Addr.Compare)
	}
	return out, nil
}
