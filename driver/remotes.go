package driver

import (
	"cmp"
	"net"
	"slices"
	"time"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
)

// remoteSet is the desired remote endpoints of one VNI, as the catalog
// holds them, indexed so that a change touches only its own entries.
//
// Two records may claim one address for a moment (swarm gives a gone
// task's address to a new one while the old record is still around): the
// latest claim owns the address's neighbour entry, in the per-change path
// and in the repair alike, and removing one claim points the address at
// the latest claim left instead of deleting it.
type remoteSet struct {
	seq   uint64
	byKey map[string]claim // catalog key (host/endpoint)
	byIP  map[string]map[string]struct{}
}

// claim is one record's endpoint and when it was last set.
type claim struct {
	r   dataplane.RemoteEndpoint
	seq uint64
}

func newRemoteSet() *remoteSet {
	return &remoteSet{byKey: map[string]claim{}, byIP: map[string]map[string]struct{}{}}
}

func (s *remoteSet) add(key string, r dataplane.RemoteEndpoint) {
	s.seq++
	s.byKey[key] = claim{r: r, seq: s.seq}
	keys := s.byIP[r.IP.String()]
	if keys == nil {
		keys = map[string]struct{}{}
		s.byIP[r.IP.String()] = keys
	}
	keys[key] = struct{}{}
}

func (s *remoteSet) remove(key string) (dataplane.RemoteEndpoint, bool) {
	c, ok := s.byKey[key]
	if !ok {
		return c.r, false
	}
	delete(s.byKey, key)
	if keys := s.byIP[c.r.IP.String()]; keys != nil {
		delete(keys, key)
		if len(keys) == 0 {
			delete(s.byIP, c.r.IP.String())
		}
	}
	return c.r, true
}

// holder returns the latest claim left on ip, if any.
func (s *remoteSet) holder(ip net.IP) (dataplane.RemoteEndpoint, bool) {
	var best claim
	found := false
	for k := range s.byIP[ip.String()] {
		if c := s.byKey[k]; !found || c.seq > best.seq {
			best, found = c, true
		}
	}
	return best.r, found
}

// macHeld reports whether a desired endpoint still has mac behind vtep.
func (s *remoteSet) macHeld(r dataplane.RemoteEndpoint) bool {
	for _, c := range s.byKey {
		if c.r.VTEP.Equal(r.VTEP) && string(c.r.MAC) == string(r.MAC) {
			return true
		}
	}
	return false
}

// list returns the desired endpoints, oldest claim first: a whole-table
// write that lets the last endpoint of an address win gives it to the
// latest claim, as the per-change path does.
func (s *remoteSet) list() []dataplane.RemoteEndpoint {
	cs := make([]claim, 0, len(s.byKey))
	for _, c := range s.byKey {
		cs = append(cs, c)
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
	d.mu.Lock()
	local := map[uint32]bool{}
	for _, n := range d.networks {
		local[n.VNI] = true
	}
	for _, ev := range evs {
		if ev.Local {
			continue
		}
		key := catalog.Key(ev.Record.Host, ev.Record.Endpoint)
		switch ev.Kind {
		case catalog.Added, catalog.Updated:
			if ev.Kind == catalog.Updated && ev.Old.VNI != ev.Record.VNI {
				ops = append(ops, d.removeRemoteLocked(ev.Old.VNI, key, local[ev.Old.VNI])...)
			}
			r, err := toRemote(ev.Record)
			if err != nil {
				d.log.Warn("ignoring malformed endpoint record", "peer", ev.Record.Host, "err", err)
				ops = append(ops, d.removeRemoteLocked(ev.Record.VNI, key, local[ev.Record.VNI])...)
				continue
			}
			set := d.remotesLocked(ev.Record.VNI)
			old, had := set.remove(key)
			set.add(key, r)
			if !local[ev.Record.VNI] {
				continue
			}
			ops = append(ops, kernelOp{vni: ev.Record.VNI, set: true, r: r})
			if had && !sameRemote(old, r) {
				// Added before deleted: a moved endpoint is never
				// unreachable in between.
				ops = append(ops, d.releaseLocked(ev.Record.VNI, set, old, r)...)
			}
		case catalog.Removed:
			ops = append(ops, d.removeRemoteLocked(ev.Record.VNI, key, local[ev.Record.VNI])...)
		}
	}
	d.mu.Unlock()
	for _, op := range ops {
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
}

func (d *Driver) remotesLocked(vni uint32) *remoteSet {
	s := d.remotes[vni]
	if s == nil {
		s = newRemoteSet()
		d.remotes[vni] = s
	}
	return s
}

// removeRemoteLocked forgets one record and returns the kernel writes that
// follow when the network is here.
func (d *Driver) removeRemoteLocked(vni uint32, key string, here bool) []kernelOp {
	set := d.remotes[vni]
	if set == nil {
		return nil
	}
	old, ok := set.remove(key)
	if len(set.byKey) == 0 {
		delete(d.remotes, vni)
	}
	if !ok || !here {
		return nil
	}
	return d.releaseLocked(vni, set, old, dataplane.RemoteEndpoint{})
}

// releaseLocked returns the writes that remove old's entries, except what
// now (the endpoint's new version, if any) or another desired endpoint
// still needs: an address another record claims is pointed at that record
// instead of being deleted.
func (d *Driver) releaseLocked(vni uint32, set *remoteSet, old, now dataplane.RemoteEndpoint) []kernelOp {
	sameIP := now.IP.Equal(old.IP)
	if sameIP || set.macHeld(old) {
		// The neighbour entry is already rewritten, or the FDB entry is
		// still needed: only a stale FDB entry may remain, which the
		// repair pass removes.
		if sameIP && !set.macHeld(old) && (string(now.MAC) != string(old.MAC) || !now.VTEP.Equal(old.VTEP)) {
			return []kernelOp{{vni: vni, r: dataplane.RemoteEndpoint{MAC: old.MAC, VTEP: old.VTEP}}}
		}
		return nil
	}
	ops := []kernelOp{{vni: vni, r: old}}
	if other, ok := set.holder(old.IP); ok {
		ops = append(ops, kernelOp{vni: vni, set: true, r: other})
	}
	return ops
}

func sameRemote(a, b dataplane.RemoteEndpoint) bool {
	return a.IP.Equal(b.IP) && a.VTEP.Equal(b.VTEP) && string(a.MAC) == string(b.MAC)
}

// toRemote turns a catalog record into the kernel's view of it.
func toRemote(r catalog.Record) (dataplane.RemoteEndpoint, error) {
	ip, mac, vtep, err := r.Addrs()
	if err != nil {
		return dataplane.RemoteEndpoint{}, err
	}
	return dataplane.RemoteEndpoint{IP: net.IP(ip.AsSlice()), MAC: mac, VTEP: net.IP(vtep.AsSlice())}, nil
}

// repair brings every device of this host in line: its MTU with the
// underlay's, its entries with the catalog. Until the catalog is complete
// (just after a start, before the mesh has exchanged state), it only adds
// and updates entries, since deleting what the catalog does not hold yet
// would cut endpoints that are alive. Except in a network's first pass,
// which programs its entries, what a pass has to change is drift (entries
// changed behind weft's back, or writes that failed): logged and counted.
// periodic marks the timer's pass.
func (d *Driver) repair(periodic bool) {
	type job struct {
		seg  dataplane.Segment
		want []dataplane.RemoteEndpoint
		// first marks a network's first pass since it came here (or
		// since the start) with the catalog complete: it programs the
		// entries, it repairs nothing.
		first bool
	}
	complete := d.cat.Synced()
	d.mu.Lock()
	jobs := make([]job, 0, len(d.networks))
	changed := false
	passed := make(map[uint32]bool, len(d.networks))
	for _, n := range d.networks {
		before := n.MTU
		seg := d.segmentLocked(n)
		if seg.MTU != before {
			changed = true
			d.log.Info("network MTU follows the underlay", "network", short(n.ID), "vni", n.VNI, "from", before, "to", seg.MTU)
		}
		var want []dataplane.RemoteEndpoint
		if s := d.remotes[n.VNI]; s != nil {
			want = s.list()
		}
		jobs = append(jobs, job{seg: seg, want: want, first: !d.passed[n.VNI]})
		// Until the catalog is complete a pass only adds: the first
		// complete one may still remove what the last run left.
		passed[n.VNI] = d.passed[n.VNI] || complete
	}
	d.passed = passed
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
