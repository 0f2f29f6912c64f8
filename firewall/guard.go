// Package firewall keeps weft's ports to the cluster's members: weft's own
// nftables table in the host's network namespace ("table ip weft") drops
// packets to weft's VXLAN port and to its mesh port (TCP and UDP) from
// every address that is not a member's. The package owns that table and
// the policy of who is let in; nftables_linux.go writes it.
//
// Design notes:
//
//   - Who is let in: the addresses of the mesh's members (in every state
//     the mesh still lists, so that a member that died comes back through
//     the same door), the addresses that proved swarm membership to the key
//     service (so that a joining host reaches the mesh before it is a
//     member: it must authenticate first), the configured peers (local
//     mode), and this host. An address stays in for Hold after it is no
//     longer listed, and what the kernel's set holds when the plugin starts
//     is kept as long: a restarting plugin cuts no one off.
//   - What is not touched: the key service's port (TLS decides who is
//     served there), every other port, every table but weft's (Docker's
//     iptables-nft rules live beside it). The chain's policy is accept: the
//     table only ever removes reachability.
//   - When: the table exists while this host has a weft network (a VXLAN
//     device listens only then): it is made with the first network and
//     removed once the host has had none for Hold (so that a plugin whose
//     state directory was lost, and which learns its networks again from
//     the engine, does not open the ports meanwhile). It is not removed
//     when the plugin stops: the VXLAN devices outlive the plugin
//     (restart, upgrade, crash), so what guards them must too; it keeps its
//     last members until the plugin is back. Removing the plugin for good
//     while networks remain leaves it, as it leaves the devices (`nft
//     delete table ip weft` removes it).
//   - Its limit: it filters by source address. A machine on the same link
//     that sends with a member's address gets through into a plain
//     network; only encrypting the VXLAN traffic stops that.
//   - Why not in dataplane: dataplane writes per-network devices and
//     entries over rtnetlink for the driver; this is one host-wide table
//     over nf_tables (another netlink family, another library), with a
//     life and a policy of its own (the members come from the mesh and the
//     key service, not from the catalog). Apart, each keeps a small
//     interface and tests of its own.
package firewall

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

// Rules is what the table says.
type Rules struct {
	VXLANPort int          // UDP
	MeshPort  int          // TCP and UDP
	WGPort    int          // UDP, the encrypted networks' WireGuard, it and the one after; 0: none
	Members   []netip.Addr // the only sources those ports accept
}

// Table is weft's table in the kernel: *NFTable.
type Table interface {
	// Apply makes the table say r; the same r again writes nothing.
	Apply(r Rules) error
	// Remove deletes the table; a missing table is fine.
	Remove() error
	// Members returns the addresses the table lets in; an error when
	// there is no table.
	Members() ([]netip.Addr, error)
}

// Config configures a Guard.
type Config struct {
	// Table is the kernel's table. Required.
	Table Table
	// VXLANPort and MeshPort are weft's ports; WGPort is its WireGuard
	// port when encrypted networks are on (0: none): it and the one after
	// it (the tunnel's second interface, during a key rotation).
	VXLANPort, MeshPort, WGPort int
	// Networks streams this host's weft networks. Required.
	Networks *feed.Sub[driver.NetworkEvent]
	// MemberEvents wakes the guard when the mesh's membership changes
	// (only its member events are read). Required.
	MemberEvents *feed.Sub[mesh.Event]
	// Members returns the mesh members' addresses. Required.
	Members func() []netip.Addr
	// With returns the addresses let in with a member's (its tunnel
	// address, while encrypted networks are on); nil: none.
	With func(member netip.Addr) []netip.Addr
	// Synced reports whether the mesh has merged a full state exchange
	// since it started, so that Members lists every member another one
	// knows; nil counts as synced. See Settle.
	Synced func() bool
	// Authenticated returns the addresses that proved membership to the
	// key service; AuthChanged says when they may have changed. Both may
	// be nil.
	Authenticated func() []netip.Addr
	AuthChanged   <-chan struct{}
	// Fixed are always let in (the configured peers).
	Fixed []netip.Addr
	// Self returns this host's underlay address (invalid while unknown).
	Self func() netip.Addr
	// Hold is how long an address stays let in after it is no longer
	// listed, and how long the table stays after the last network
	// (default 1 min).
	Hold time.Duration
	// Repair is how often the table is checked against what it should
	// say, in case someone changed it (default 30 s).
	Repair time.Duration
	// Settle is how long a guard that finds no table waits for another
	// member to be known, and for the mesh's first full exchange with one
	// (Synced), before it makes one (default 10 s): a table made before
	// the mesh has met everyone would drop the VXLAN traffic of containers
	// already running on the hosts it has not met yet (a first start of
	// this build on a host with live containers, as in an upgrade from
	// 0.1.0; one member known of two cost the third's traffic 5 ms).
	Settle time.Duration
	// Logger receives the guard's log; nil discards it.
	Logger *slog.Logger
}

// Guard keeps the table in step with the networks and the members.
type Guard struct {
	cfg Config
	log *slog.Logger

	// Owned by Run's goroutine.
	networks map[string]bool
	seen     map[netip.Addr]time.Time
	present  bool
	applied  []netip.Addr
	// emptySince is when the host was last seen without a network.
	emptySince time.Time
	// started is when Run began (see Config.Settle).
	started time.Time
}

// New returns a guard; Run runs it.
func New(cfg Config) *Guard {
	if cfg.Hold <= 0 {
		cfg.Hold = time.Minute
	}
	if cfg.Repair <= 0 {
		cfg.Repair = 30 * time.Second
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Guard{cfg: cfg, log: log, networks: map[string]bool{}, seen: map[netip.Addr]time.Time{}}
}

// Run keeps the table until ctx ends; it leaves the table as it is then.
func (g *Guard) Run(ctx context.Context) {
	defer g.cfg.Networks.Close()
	defer g.cfg.MemberEvents.Close()
	now := time.Now()
	g.started = now
	if have, err := g.cfg.Table.Members(); err == nil {
		g.present = true
		for _, a := range have {
			g.seen[a] = now // kept for Hold: the plugin may just have restarted
		}
	}
	g.takeNetworks() // those there at the start: never remove a table in use
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.cfg.Networks.Ready():
			g.takeNetworks()
		case <-g.cfg.MemberEvents.Ready():
			g.cfg.MemberEvents.Take()
		case <-g.cfg.AuthChanged:
		case <-timer.C:
		}
		timer.Reset(g.reconcile(time.Now()))
	}
}

func (g *Guard) takeNetworks() {
	for _, ev := range g.cfg.Networks.Take() {
		if ev.Up {
			g.networks[ev.ID] = true
		} else {
			delete(g.networks, ev.ID)
		}
	}
}

// reconcile brings the table in line and returns when to look again.
func (g *Guard) reconcile(now time.Time) time.Duration {
	if len(g.networks) == 0 {
		if g.emptySince.IsZero() {
			g.emptySince = now
		}
		if !g.present {
			return g.cfg.Repair
		}
		if wait := g.emptySince.Add(g.cfg.Hold).Sub(now); wait > 0 {
			return wait + 10*time.Millisecond
		}
		if err := g.cfg.Table.Remove(); err != nil {
			g.log.Error("remove weft's nftables table", "err", err)
			return 5 * time.Second
		}
		g.log.Info("nftables table removed: no weft network on this host", "table", TableName)
		g.present, g.applied = false, nil
		return g.cfg.Repair
	}
	g.emptySince = time.Time{}
	if !g.present && now.Sub(g.started) < g.cfg.Settle && !(g.othersKnown() && g.synced()) {
		// Member events wake the guard as soon as the mesh meets one, and
		// once its first exchange is merged.
		return min(time.Second, g.cfg.Settle)
	}
	allowed := g.allowed(now)
	err := g.cfg.Table.Apply(Rules{VXLANPort: g.cfg.VXLANPort, MeshPort: g.cfg.MeshPort, WGPort: g.cfg.WGPort, Members: allowed})
	if err != nil {
		g.log.Error("weft's nftables table not applied; retrying", "err", err)
		return 5 * time.Second
	}
	if !g.present {
		g.log.Info("nftables table in place: weft's ports accept members only", "table", TableName,
			"vxlan_port", g.cfg.VXLANPort, "mesh_port", g.cfg.MeshPort, "wg_port", g.cfg.WGPort, "members", len(allowed))
	} else if !slices.Equal(allowed, g.applied) {
		g.log.Debug("nftables members", "members", addrStrings(allowed))
	}
	g.present, g.applied = true, allowed
	// Look again when the next held address expires, or to repair.
	next := g.cfg.Repair
	for _, at := range g.seen {
		if d := at.Add(g.cfg.Hold).Sub(now); d > 0 && d < next {
			next = d + 10*time.Millisecond
		}
	}
	return next
}

// synced reports whether the mesh's members are complete (Config.Synced).
func (g *Guard) synced() bool {
	return g.cfg.Synced == nil || g.cfg.Synced()
}

// othersKnown reports whether a member other than this host is known.
func (g *Guard) othersKnown() bool {
	var self netip.Addr
	if g.cfg.Self != nil {
		self = g.cfg.Self()
	}
	for _, a := range g.cfg.Members() {
		if a.Unmap() != self {
			return true
		}
	}
	return false
}

// allowed returns the addresses let in now, sorted.
func (g *Guard) allowed(now time.Time) []netip.Addr {
	members := g.cfg.Members()
	listed := slices.Concat(members, g.cfg.Fixed)
	if g.cfg.With != nil {
		for _, a := range members {
			listed = append(listed, g.cfg.With(a.Unmap())...)
		}
	}
	if g.cfg.Authenticated != nil {
		listed = append(listed, g.cfg.Authenticated()...)
	}
	if g.cfg.Self != nil {
		if a := g.cfg.Self(); a.IsValid() {
			listed = append(listed, a)
		}
	}
	for _, a := range listed {
		if a = a.Unmap(); a.Is4() {
			g.seen[a] = now
		}
	}
	var out []netip.Addr
	for a, at := range g.seen {
		if now.Sub(at) < g.cfg.Hold {
			out = append(out, a)
		} else {
			delete(g.seen, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}
