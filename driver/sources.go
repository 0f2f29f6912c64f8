package driver

import (
	"errors"
	"net"
	"net/netip"

	"github.com/weftnet/weft/antispoof"
	"github.com/weftnet/weft/dataplane"
)

// The table of sources (Config.Sources) follows the same two paths as the
// kernel entries. Per change: a local endpoint's source is added when
// Docker creates the endpoint (before its container can send) and removed
// when it is deleted, under mu; a remote endpoint's is added and removed
// with the entries of the claim that holds its address (changeLocked), in
// Run's goroutine. The repair pass writes the whole table under mu, so
// that a local change made meanwhile is never pruned by a stale view; until
// the catalog is complete it only adds, like the entries. A per-change
// write that fails (the table not made yet, or changed behind weft's back)
// asks for a repair.

// sourceChange collects the sources a batch of changes adds and removes.
type sourceChange struct {
	add, del antispoof.Sources
}

func (c *sourceChange) empty() bool {
	return len(c.add.Local)+len(c.add.Remote)+len(c.del.Local)+len(c.del.Remote) == 0
}

// localSource returns the source of a local endpoint of n.
func localSource(n *Network, ep *Endpoint) (antispoof.Entry, bool) {
	p, err := netip.ParsePrefix(ep.Address)
	if err != nil {
		return antispoof.Entry{}, false
	}
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil || len(mac) != 6 {
		return antispoof.Entry{}, false
	}
	return antispoof.Entry{VNI: n.VNI, MAC: mac, IP: p.Addr()}, true
}

// localSources returns the sources of a local endpoint of n: its IPv4
// one, and its IPv6 one on a dual-stack network.
func localSources(n *Network, ep *Endpoint) []antispoof.Entry {
	var out []antispoof.Entry
	if e, ok := localSource(n, ep); ok {
		out = append(out, e)
	}
	if e, ok := localSource6(n, ep); ok {
		out = append(out, e)
	}
	return out
}

// remoteSource returns the IPv4 source of a remote endpoint on vni.
func remoteSource(vni uint32, r dataplane.RemoteEndpoint) antispoof.Entry {
	ip, _ := netip.AddrFromSlice(r.IP.To4())
	vtep, _ := netip.AddrFromSlice(r.VTEP.To4())
	return antispoof.Entry{VNI: vni, MAC: r.MAC, IP: ip, VTEP: vtep}
}

// changeSourcesLocked writes the local sources of endpoints added and
// removed; called under mu.
func (d *Driver) changeSourcesLocked(n *Network, add, del []*Endpoint) {
	if d.cfg.Sources == nil {
		return
	}
	var c sourceChange
	for _, ep := range add {
		c.add.Local = append(c.add.Local, localSources(n, ep)...)
	}
	for _, ep := range del {
		c.del.Local = append(c.del.Local, localSources(n, ep)...)
	}
	d.writeSources(c)
}

// writeSources applies a change to the table; a failure asks for a repair.
func (d *Driver) writeSources(c sourceChange) {
	if d.cfg.Sources == nil || c.empty() {
		return
	}
	if err := d.cfg.Sources.Change(c.add, c.del); err != nil {
		if !errors.Is(err, antispoof.ErrNotBuilt) {
			d.log.Warn("source filter change failed; repairing", "err", err)
		}
		d.Kick()
	}
}

// syncSourcesLocked writes the whole table of sources of the networks
// here: every local endpoint's, and the holders of every remote address
// of those networks. With no network, the table goes. Called under mu by
// the repair pass; quiet when a network is in its first pass (its remote
// sources are programmed then, not repaired).
func (d *Driver) syncSourcesLocked(complete, quiet bool) {
	s := d.cfg.Sources
	if s == nil {
		return
	}
	if len(d.networks) == 0 {
		if d.sourcesOn {
			if err := s.Remove(); err != nil {
				d.log.Error("remove the source filter", "err", err)
				return
			}
			d.sourcesOn = false
		}
		return
	}
	var want antispoof.Sources
	for _, n := range d.networks {
		for _, ep := range n.Endpoints {
			want.Local = append(want.Local, localSources(n, ep)...)
		}
		if set := d.remotes[n.VNI]; set != nil {
			for _, r := range set.list() {
				want.Remote = append(want.Remote, remoteSources(n.VNI, r)...)
			}
		}
		if multicast(n) {
			want.Flood = append(want.Flood, n.VNI)
		}
	}
	diff, err := s.Sync(want, complete)
	if errors.Is(err, antispoof.ErrNotBuilt) {
		// Not built before the catalog is complete (see Table.Sync).
		return
	}
	if err != nil {
		d.log.Error("write the source filter", "err", err)
		d.metrics.failed()
	}
	if d.sourcesOn && !quiet && diff != (antispoof.Diff{}) {
		d.log.Warn("source filter drifted from the endpoints; repaired",
			"local_added", diff.LocalAdded, "local_removed", diff.LocalRemoved,
			"remote_added", diff.RemoteAdded, "remote_removed", diff.RemoteRemoved)
	}
	d.sourcesOn = err == nil || d.sourcesOn
}
