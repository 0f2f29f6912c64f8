package driver

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
)

// remoteSet is the desired remote endpoints of one VNI, as the catalog
// holds them, indexed so that a change touches only its own entries.
//
// Two records may claim one address (swarm gives a task's address to a new
// task while the old record is still around, or hands the address of a
// host whose weft is down to a new task elsewhere). One claim holds the
// address, and only the holder's entries are programmed (FDB: MAC to VTEP;
// neighbour: IP to MAC), in the per-change path and in the repair alike:
//
//  1. a live claim beats one whose host is down (catalog.Record.Down): a
//     down host's record may be stale, a live host's is current;
//  2. a claim made before its host went down stays behind the others once
//     the host is back: that host missed what happened meanwhile, and its
//     weft republishes or withdraws the record once it has read its engine
//     again (a changed record is a new claim);
//  3. then the earliest claim keeps it: a member can write records that
//     claim any address (every member holds the gossip key), so a claim
//     arriving for an address a live host's endpoint holds waits, logged,
//     until that record goes. Swarm reusing a removed task's address
//     waits so for the old record's removal (it comes with the change).
//
// When the holder goes, or loses its rank, the address is pointed at the
// claim that holds it now instead of being deleted. Before any of this, a
// record whose address is outside its network's subnet, is its gateway,
// or is one of this host's own endpoints' is never programmed (admit).
type remoteSet struct {
	seq   uint64
	byKey map[string]claim // catalog key (host/endpoint)
	byIP  map[string]map[string]struct{}
}

// claim is one record's endpoint, when it was set, whether its host is
// down, and whether it has been since the claim was made.
type claim struct {
	r     dataplane.RemoteEndpoint
	seq   uint64
	down  bool
	stale bool
}

// beats reports whether claim a holds an address over claim b (the rules
// above, in order; seq is unique, so there is no tie).
func (a claim) beats(b claim) bool {
	if a.down != b.down {
		return !a.down
	}
	if a.stale != b.stale {
		return !a.stale
	}
	return a.seq < b.seq
}

func newRemoteSet() *remoteSet {
	return &remoteSet{byKey: map[string]claim{}, byIP: map[string]map[string]struct{}{}}
}

// put sets the claim of key. A claim whose endpoint is unchanged (only
// its names, or its host's down mark, changed) is the same claim: it keeps
// its place in time, and stays stale once its host has been down.
func (s *remoteSet) put(key string, r dataplane.RemoteEndpoint, down bool) {
	if old, ok := s.byKey[key]; ok && sameRemote(old.r, r) {
		old.r, old.down, old.stale = r, down, old.stale || down
		s.byKey[key] = old
		return
	}
	s.remove(key)
	s.seq++
	s.byKey[key] = claim{r: r, seq: s.seq, down: down, stale: down}
	keys := s.byIP[r.IP.String()]
	if keys == nil {
		keys = map[string]struct{}{}
		s.byIP[r.IP.String()] = keys
	}
	keys[key] = struct{}{}
}

func (s *remoteSet) remove(key string) {
	c, ok := s.byKey[key]
	if !ok {
		return
	}
	delete(s.byKey, key)
	if keys := s.byIP[c.r.IP.String()]; keys != nil {
		delete(keys, key)
		if len(keys) == 0 {
			delete(s.byIP, c.r.IP.String())
		}
	}
}

// holder returns the claim that holds ip, if any.
func (s *remoteSet) holder(ip string) (claim, bool) {
	var best claim
	found := false
	for k := range s.byIP[ip] {
		if c := s.byKey[k]; !found || c.beats(best) {
			best, found = c, true
		}
	}
	return best, found
}

// holders returns the holder of each of ips that has one.
func (s *remoteSet) holders(ips ...string) map[string]claim {
	out := make(map[string]claim, len(ips))
	for _, ip := range ips {
		if c, ok := s.holder(ip); ok {
			out[ip] = c
		}
	}
	return out
}

// macHeld reports whether a holder has mac behind vtep.
func (s *remoteSet) macHeld(r dataplane.RemoteEndpoint) bool {
	for _, c := range s.byKey {
		if c.r.VTEP.Equal(r.VTEP) && string(c.r.MAC) == string(r.MAC) {
			if h, _ := s.holder(c.r.IP.String()); sameRemote(h.r, c.r) {
				return true
			}
		}
	}
	return false
}

// list returns the holders, oldest claim first: what the device of the
// VNI should hold, for a whole-table write.
func (s *remoteSet) list() []dataplane.RemoteEndpoint {
	cs := make([]claim, 0, len(s.byIP))
	for ip := range s.byIP {
		if c, ok := s.holder(ip); ok {
			cs = append(cs, c)
		}
	}
	slices.SortFunc(cs, func(a, b claim) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]dataplane.RemoteEndpoint, len(cs))
	for i, c := range cs {
		out[i] = c.r
	}
	return out
}

// kernelOp is one kernel write decided under the driver's lock and done
// after it.
type kernelOp struct {
	vni uint32
	set bool // SetRemote; else DeleteRemote
	r   dataplane.RemoteEndpoint
}

// apply folds a batch of catalog events into the desired remote endpoints
// and writes the difference to the kernel, one entry per change, for the
// networks this host has.
func (d *Driver) apply(evs []catalog.Event) {
	if len(evs) == 0 {
		return
	}
	var ops []kernelOp
	var src sourceChange
	d.mu.Lock()
	local := map[uint32]bool{}
	for _, n := range d.networks {
		local[n.VNI] = true
	}
	touched := map[uint32]bool{}
	for _, ev := range evs {
		if ev.Local {
			continue
		}
		touched[ev.Record.VNI], touched[ev.Old.VNI] = true, true
		key := catalog.Key(ev.Record.Host, ev.Record.Endpoint)
		switch ev.Kind {
		case catalog.Added, catalog.Updated:
			if ev.Kind == catalog.Updated && ev.Old.VNI != ev.Record.VNI {
				ops = append(ops, d.changeLocked(ev.Old.VNI, key, nil, local[ev.Old.VNI], &src)...)
			}
			r, err := toRemote(ev.Record)
			if err != nil {
				d.log.Warn("ignoring malformed endpoint record", "peer", ev.Record.Host, "err", err)
				ops = append(ops, d.changeLocked(ev.Record.VNI, key, nil, local[ev.Record.VNI], &src)...)
				continue
			}
			if n := d.networkLocked(ev.Record.VNI); n != nil {
				if err := admit(n, r); err != nil {
					d.refusedLocked(ev.Record, err)
					ops = append(ops, d.changeLocked(ev.Record.VNI, key, nil, true, &src)...)
					continue
				}
			}
			ops = append(ops, d.changeLocked(ev.Record.VNI, key, &claim{r: r, down: ev.Record.Down}, local[ev.Record.VNI], &src)...)
		case catalog.Removed:
			ops = append(ops, d.changeLocked(ev.Record.VNI, key, nil, local[ev.Record.VNI], &src)...)
		}
	}
	flood := d.floodOpsLocked(touched)
	d.mu.Unlock()
	for _, op := range undone(ops) {
		var err error
		if op.set {
			err = d.dp.SetRemote(op.vni, op.r)
		} else {
			err = d.dp.DeleteRemote(op.vni, op.r)
		}
		if err != nil {
			// The device may have gone with its network meanwhile; the
			// repair pass puts right whatever else failed.
			d.log.Debug("kernel entry write failed", "vni", op.vni, "ip", op.r.IP.String(), "set", op.set, "err", err)
		}
	}
	d.writeFlood(flood)
	d.writeSources(src)
}

// undone leaves out of a batch's kernel writes each delete that a later
// write of the batch puts back: a host that restarts with a new mesh
// identity (its state directory lost) republishes its endpoints under new
// keys, and the old keys' records go in the same batch; deleting their
// entries before writing them again would cut its containers' traffic
// for that instant.
func undone(ops []kernelOp) []kernelOp {
	out := ops[:0:0]
	for i, op := range ops {
		if !op.set && slices.ContainsFunc(ops[i+1:], func(later kernelOp) bool {
			return later.set && later.vni == op.vni && rewrites(later.r, op.r)
		}) {
			continue
		}
		out = append(out, op)
	}
	return out
}

// rewrites reports whether setting w writes again every entry that
// deleting del removes: del's fields that are set, w has alike.
func rewrites(w, del dataplane.RemoteEndpoint) bool {
	return (del.IP == nil || w.IP.Equal(del.IP)) &&
		(del.MAC == nil || bytes.Equal(w.MAC, del.MAC)) &&
		(del.VTEP == nil || w.VTEP.Equal(del.VTEP))
}

// changeLocked sets (next) or removes (nil) the claim of key on vni and,
// when the network is here, returns the kernel writes that take the
// device from the holders of the addresses involved before the change to
// those after it: the new holders written first, then what nothing holds
// any more deleted, so a moved endpoint is never unreachable in between.
// The sources of the holders that changed go into src: the new holders'
// added, the old ones' removed.
func (d *Driver) changeLocked(vni uint32, key string, next *claim, here bool, src *sourceChange) []kernelOp {
	set := d.remotes[vni]
	if set == nil {
		if next == nil {
			return nil
		}
		set = newRemoteSet()
		d.remotes[vni] = set
	}
	var ips []string
	if c, ok := set.byKey[key]; ok {
		ips = append(ips, c.r.IP.String())
	}
	if next != nil {
		ips = append(ips, next.r.IP.String())
	}
	before := set.holders(ips...)
	if next != nil {
		set.put(key, next.r, next.down)
	} else {
		set.remove(key)
	}
	if len(set.byKey) == 0 {
		delete(d.remotes, vni)
	}
	if !here {
		return nil
	}
	after := set.holders(ips...)
	if next != nil {
		if h := after[next.r.IP.String()]; !sameRemote(h.r, next.r) {
			d.log.Warn("two endpoint records claim one address; the earlier claim of a live host keeps it",
				"vni", vni, "ip", next.r.IP.String(), "holder_vtep", h.r.VTEP.String(), "claim", key, "claim_vtep", next.r.VTEP.String())
		}
	}
	var sets, dels []kernelOp
	for ip, a := range after {
		if b, ok := before[ip]; !ok || !sameRemote(a.r, b.r) {
			sets = append(sets, kernelOp{vni: vni, set: true, r: a.r})
			src.add.Remote = append(src.add.Remote, remoteSources(vni, a.r)...)
		}
	}
	for ip, b := range before {
		a, held := after[ip]
		if held && sameRemote(a.r, b.r) {
			continue
		}
		src.del.Remote = append(src.del.Remote, remoteSources(vni, b.r)...)
		var del dataplane.RemoteEndpoint
		if !held {
			del.IP = b.r.IP // its neighbour entry: nothing holds the address
		}
		if b.r.IP6 != nil && !set.ip6Held(b.r.IP6) {
			del.IP6 = b.r.IP6 // its IPv6 neighbour entry, likewise
		}
		if !set.macHeld(b.r) {
			del.MAC, del.VTEP = b.r.MAC, b.r.VTEP // its FDB entry, towards that VTEP only
		}
		if del.IP != nil || del.IP6 != nil || del.MAC != nil {
			dels = append(dels, kernelOp{vni: vni, r: del})
		}
	}
	return append(sets, dels...)
}

func sameRemote(a, b dataplane.RemoteEndpoint) bool {
	return a.IP.Equal(b.IP) && a.VTEP.Equal(b.VTEP) && string(a.MAC) == string(b.MAC) && a.IP6.Equal(b.IP6)
}

// toRemote turns a catalog record into the kernel's view of it.
func toRemote(r catalog.Record) (dataplane.RemoteEndpoint, error) {
	ip, mac, vtep, err := r.Addrs()
	if err != nil {
		return dataplane.RemoteEndpoint{}, err
	}
	ip6, err := r.Addr6()
	if err != nil {
		return dataplane.RemoteEndpoint{}, err
	}
	out := dataplane.RemoteEndpoint{IP: net.IP(ip.AsSlice()), MAC: mac, VTEP: net.IP(vtep.AsSlice())}
	if ip6.IsValid() {
		out.IP6 = net.IP(ip6.AsSlice())
	}
	return out, nil
}

// repair brings every device of this host in line: its MTU with the
// underlay's, its entries with the catalog. Until the catalog is complete
// (just after a start, before the mesh has exchanged state), it only adds
// and updates entries, since deleting what the catalog does not hold yet
// would cut endpoints that are alive. Except in a network's first pass,
// which programs its entries, what a pass has to change is drift (entries
// changed behind weft's back, or writes that failed): logged and counted.
// periodic marks the timer's pass. It runs in Run's goroutine.
func (d *Driver) repair(periodic bool) {
	type job struct {
		seg  dataplane.Segment
		want []dataplane.RemoteEndpoint
		// flood is the device's flood list (multicast.go).
		flood []string
		// first marks a network's first pass since it came here (or
		// since the start) with the catalog complete: it programs the
		// entries, it repairs nothing.
		first bool
	}
	// Whether the catalog is complete first, then what it published up to
	// then: once it says so, every record it holds is in d.sub. The other
	// way round, a repair just after a start could find the catalog
	// complete while its records are still queued here, and delete their
	// entries until they are applied.
	complete := d.cat.Synced()
	d.apply(d.sub.Take())
	d.mu.Lock()
	jobs := make([]job, 0, len(d.networks))
	changed := false
	passed := make(map[uint32]bool, len(d.networks))
	flood := make(map[uint32][]string, len(d.networks))
	quiet := false
	for _, n := range d.networks {
		before := n.MTU
		seg := d.segmentLocked(n)
		if seg.MTU != before {
			changed = true
			d.log.Info("network MTU follows the underlay", "network", short(n.ID), "vni", n.VNI, "from", before, "to", seg.MTU)
		}
		var want []dataplane.RemoteEndpoint
		if s := d.remotes[n.VNI]; s != nil {
			want = slices.DeleteFunc(s.list(), func(r dataplane.RemoteEndpoint) bool { return admit(n, r) != nil })
		}
		jobs = append(jobs, job{seg: seg, want: want, flood: d.floodWantLocked(n), first: !d.passed[n.VNI]})
		if f := jobs[len(jobs)-1].flood; len(f) > 0 {
			flood[n.VNI] = f
		}
		quiet = quiet || !d.passed[n.VNI]
		// Until the catalog is complete a pass only adds: the first
		// complete one may still remove what the last run left.
		passed[n.VNI] = d.passed[n.VNI] || complete
	}
	d.passed = passed
	d.flood = flood
	d.syncSourcesLocked(complete, quiet)
	if changed {
		if err := d.saveLocked(); err != nil {
			d.log.Error("persist state", "err", err)
		}
	}
	d.mu.Unlock()
	if periodic {
		d.metrics.pass()
	}
	for _, j := range jobs {
		if err := d.dp.EnsureSegment(j.seg); err != nil {
			d.log.Error("ensure network device", "vni", j.seg.VNI, "err", err)
			d.metrics.failed()
			continue
		}
		want := j.want
		if !complete {
			have, err := d.dp.Remotes(j.seg.VNI)
			if err != nil {
				d.log.Error("read programmed entries", "vni", j.seg.VNI, "err", err)
				continue
			}
			want = unionRemotes(have, want)
		}
		rep, err := d.dp.SetRemotes(j.seg.VNI, want)
		if err != nil {
			d.log.Error("program entries", "vni", j.seg.VNI, "err", err)
			d.metrics.failed()
		}
		d.repairFlood(j.seg.VNI, j.flood, complete, j.first)
		if j.first {
			continue
		}
		d.metrics.repaired(rep, time.Now())
		if rep != (dataplane.Repair{}) {
			d.log.Warn("kernel entries drifted from the catalog; repaired", "vni", j.seg.VNI,
				"fdb_added", rep.FDBAdded, "fdb_removed", rep.FDBRemoved, "neigh_added", rep.NeighAdded, "neigh_removed", rep.NeighRemoved)
		}
	}
}

// unionRemotes returns the endpoints of have and want, want's winning for
// an address both hold, in want's order after have's.
func unionRemotes(have, want []dataplane.RemoteEndpoint) []dataplane.RemoteEndpoint {
	wanted := map[string]bool{}
	for _, r := range want {
		wanted[r.IP.String()] = true
	}
	out := make([]dataplane.RemoteEndpoint, 0, len(have)+len(want))
	for _, r := range have {
		if !wanted[r.IP.String()] {
			out = append(out, r)
		}
	}
	return append(out, want...)
}

// networkLocked returns this host's network of vni, or nil.
func (d *Driver) networkLocked(vni uint32) *Network {
	for _, n := range d.networks {
		if n.VNI == vni {
			return n
		}
	}
	return nil
}

// admit says why a remote endpoint must not be programmed on network n,
// or nil: its address must be inside the network's subnet, not its
// gateway, and not one of this host's own endpoints' (whose traffic
// stays on the macvlan; an entry on the VXLAN device would answer ARP
// for it).
func admit(n *Network, r dataplane.RemoteEndpoint) error {
	ip, ok := netip.AddrFromSlice(r.IP)
	if !ok {
		return fmt.Errorf("address %v is not valid", r.IP)
	}
	ip = ip.Unmap()
	if p, err := netip.ParsePrefix(n.Subnet); err == nil && !p.Contains(ip) {
		return fmt.Errorf("address %s is outside the network's subnet %s", ip, p)
	}
	if gw, err := netip.ParseAddr(n.Gateway); err == nil && gw == ip {
		return fmt.Errorf("address %s is the network's gateway", ip)
	}
	for _, ep := range n.Endpoints {
		if p, err := netip.ParsePrefix(ep.Address); err == nil && p.Addr() == ip {
			return fmt.Errorf("address %s is this host's endpoint %s", ip, short(ep.ID))
		}
	}
	return admit6(n, r)
}

// refusedLocked logs a record that is not programmed, once a minute per
// host at most.
func (d *Driver) refusedLocked(r catalog.Record, err error) {
	now := time.Now()
	if last, ok := d.refused[r.Host]; ok && now.Sub(last) < time.Minute {
		return
	}
	d.refused[r.Host] = now
	d.log.Warn("endpoint record not programmed", "peer", r.Host, "network", short(r.Network), "endpoint", short(r.Endpoint), "err", err)
}
