package driver

import (
	"net"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/dataplane"
)

// Broadcast and multicast, opt-in per network (-o weft.multicast=true):
// the device of such a network floods group-addressed frames to every
// other host with an endpoint on it, by head-end replication (one flood
// entry per VTEP, dataplane/flood_linux.go). The flood list of a VNI is
// the VTEPs of the claims that hold its addresses (remoteSet, the same
// ones the kernel's entries are programmed from), kept in step with the
// catalog the same two ways: per change (a VTEP added when its first
// endpoint on the network is programmed, removed with its last), and
// whole in each repair pass. The table of sources lets such frames
// through on these networks only (antispoof, Sources.Flood).

// Flooder writes the flood lists of the devices; *dataplane.Kernel
// implements it.
type Flooder interface {
	// AddFlood and DeleteFlood add and remove one VTEP of a device's
	// flood list; both are idempotent.
	AddFlood(vni uint32, vtep net.IP) error
	DeleteFlood(vni uint32, vtep net.IP) error
	// SetFlood makes a device's flood list exactly vteps.
	SetFlood(vni uint32, vteps []net.IP) (dataplane.FloodRepair, error)
	// Flood returns a device's flood list.
	Flood(vni uint32) ([]net.IP, error)
}

// floodOp is one flood entry write decided under mu and done after it.
type floodOp struct {
	vni  uint32
	add  bool
	vtep net.IP
}

// multicast reports whether network n carries broadcast and multicast.
func multicast(n *Network) bool {
	o, err := parseOptions(n.Options)
	return err == nil && o.Multicast
}

// floodWantLocked returns the flood list network n should have: the VTEPs
// holding its admitted remote endpoints, sorted; nil when n does not
// carry broadcast and multicast.
func (d *Driver) floodWantLocked(n *Network) []string {
	if !multicast(n) {
		return nil
	}
	set := d.remotes[n.VNI]
	if set == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, r := range set.list() {
		if admit(n, r) == nil {
			seen[r.VTEP.String()] = true
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// floodOpsLocked returns the writes that take the flood lists of vnis from
// what was last written to what they should be now, adds first, and
// records the new lists.
func (d *Driver) floodOpsLocked(vnis map[uint32]bool) []floodOp {
	var adds, dels []floodOp
	for vni := range vnis {
		n := d.networkLocked(vni)
		if n == nil {
			continue
		}
		want := d.floodWantLocked(n)
		have := d.flood[vni]
		for _, v := range want {
			if !slices.Contains(have, v) {
				adds = append(adds, floodOp{vni: vni, add: true, vtep: vtepIP(v)})
			}
		}
		for _, v := range have {
			if !slices.Contains(want, v) {
				dels = append(dels, floodOp{vni: vni, vtep: vtepIP(v)})
			}
		}
		if len(want) == 0 {
			delete(d.flood, vni)
		} else {
			d.flood[vni] = want
		}
	}
	return append(adds, dels...)
}

// writeFlood does the flood writes decided under mu.
func (d *Driver) writeFlood(ops []floodOp) {
	for _, op := range ops {
		var err error
		if op.add {
			err = d.dp.AddFlood(op.vni, op.vtep)
		} else {
			err = d.dp.DeleteFlood(op.vni, op.vtep)
		}
		if err != nil {
			// The repair pass puts right what failed.
			d.log.Debug("flood entry write failed", "vni", op.vni, "vtep", op.vtep.String(), "add", op.add, "err", err)
		}
	}
}

// repairFlood makes the flood list of a device want in the repair pass;
// until the catalog is complete it only adds. first marks a network's
// first pass (programming, not drift).
func (d *Driver) repairFlood(vni uint32, want []string, complete, first bool) {
	vteps := make([]net.IP, 0, len(want))
	for _, v := range want {
		vteps = append(vteps, vtepIP(v))
	}
	if !complete {
		have, err := d.dp.Flood(vni)
		if err != nil {
			d.log.Error("read flood entries", "vni", vni, "err", err)
			return
		}
		for _, h := range have {
			if !slices.ContainsFunc(vteps, h.Equal) {
				vteps = append(vteps, h)
			}
		}
	}
	rep, err := d.dp.SetFlood(vni, vteps)
	if err != nil {
		d.log.Error("program flood entries", "vni", vni, "err", err)
		d.metrics.failed()
	}
	if !first && rep != (dataplane.FloodRepair{}) {
		d.log.Warn("flood entries drifted from the catalog; repaired", "vni", vni, "added", rep.Added, "removed", rep.Removed)
	}
}

func vtepIP(s string) net.IP {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil
	}
	return net.IP(a.AsSlice())
}
