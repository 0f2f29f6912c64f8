package driver

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/engine"
)

// EngineNetwork is a weft network as the engine has it on this host.
type EngineNetwork struct {
	ID      string
	Options map[string]string
	Subnet  string // CIDR
	Gateway string // address, may be empty
	// Subnet6 and Gateway6: a dual-stack network's IPv6 pool.
	Subnet6, Gateway6 string
	Endpoints         []EngineEndpoint
}

// EngineEndpoint is an endpoint the engine has on this host.
type EngineEndpoint struct {
	ID       string
	Address  string // CIDR
	Address6 string // CIDR, on a dual-stack network
	MAC      string
}

// SyncEngine makes the local networks and endpoints agree with the
// engine's, which is the truth about what runs here. Networks and
// endpoints the engine has but the driver does not (a state directory lost
// or corrupt) are adopted and published; endpoints the driver holds that
// the engine no longer has, and that are older than grace (so that an
// endpoint being created is not taken for a stale one), are deleted and
// withdrawn: an engine that crashed never calls DeleteEndpoint for the
// containers that died with it. Networks the driver holds that the engine
// has not listed in two passes at least grace apart go with their
// endpoints (Docker removed them while the plugin was down), and so do
// devices of networks the driver does not have. It returns what it
// changed.
func (d *Driver) SyncEngine(nets []EngineNetwork, grace time.Duration) (adoptedNets, adoptedEps, dropped int) {
	droppedNets := 0
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	changed := false
	listed := map[string]bool{}
	for _, en := range nets {
		listed[en.ID] = true
		n, ok := d.networks[en.ID]
		if !ok && len(en.Endpoints) == 0 {
			// Not in use here: a swarm manager lists every swarm network,
			// and Docker creates one on a host only with its first
			// endpoint (and deletes it with its last).
			continue
		}
		if !ok {
			var err error
			n, err = d.adoptLocked(en.ID, en.Options, pool{Subnet: en.Subnet, Gateway: en.Gateway, Subnet6: en.Subnet6, Gateway6: en.Gateway6})
			if err != nil {
				d.log.Error("engine network not adopted", "network", short(en.ID), "err", err)
				continue
			}
			adoptedNets++
			changed = true
		}
		have := map[string]bool{}
		for _, ee := range en.Endpoints {
			have[ee.ID] = true
			if _, ok := n.Endpoints[ee.ID]; ok {
				continue
			}
			if _, err := netip.ParsePrefix(ee.Address); err != nil {
				continue
			}
			if mac, err := net.ParseMAC(ee.MAC); err != nil || len(mac) != 6 {
				continue
			}
			ep := &Endpoint{ID: ee.ID, Address: ee.Address, MAC: ee.MAC, IfName: ifName(ee.ID), Joined: true, seen: now}
			if endpointAddr6(n, ee.Address6) == nil {
				ep.Address6 = ee.Address6
			}
			n.Endpoints[ep.ID] = ep
			d.publishLocked(n, ep)
			d.changeSourcesLocked(n, []*Endpoint{ep}, nil)
			adoptedEps++
			changed = true
		}
		for id, ep := range n.Endpoints {
			if have[id] || now.Sub(ep.seen) < grace {
				continue
			}
			d.cat.RemoveLocal(id)
			if err := d.dp.DeleteInterface(ep.IfName); err != nil {
				d.log.Warn("delete interface", "endpoint", short(id), "err", err)
			}
			delete(n.Endpoints, id)
			d.changeSourcesLocked(n, nil, []*Endpoint{ep})
			dropped++
			changed = true
		}
	}
	// Networks the engine no longer has here went while the plugin could
	// not hear of it (Docker removed their last container, then the
	// network, while the plugin was down): their endpoints and device go
	// once two passes at least grace apart found them unlisted.
	for id, n := range d.networks {
		if listed[id] {
			n.unlisted = time.Time{}
			continue
		}
		// Unlisted since an earlier pass at least grace ago: an engine
		// that has just restarted lists a swarm network again only once
		// its node re-attaches it (seconds), and must not lose it meanwhile.
		if n.unlisted.IsZero() {
			n.unlisted = now
		}
		if now.Sub(n.seen) < grace || now.Sub(n.unlisted) < grace || n.unlisted.Equal(now) {
			continue
		}
		for _, ep := range n.Endpoints {
			d.cat.RemoveLocal(ep.ID)
			if err := d.dp.DeleteInterface(ep.IfName); err != nil {
				d.log.Warn("delete interface", "endpoint", short(ep.ID), "err", err)
			}
			dropped++
		}
		d.changeSourcesLocked(n, nil, slices.Collect(maps.Values(n.Endpoints)))
		if err := d.dp.DeleteSegment(n.VNI); err != nil {
			d.log.Warn("delete the device of a network the engine no longer has", "network", short(id), "vni", n.VNI, "err", err)
		}
		d.dropNetworkLocked(n)
		droppedNets++
		changed = true
	}
	// Devices of networks the driver does not have (deleted while it had
	// lost them) go, now that its view is complete.
	if vnis, err := d.dp.Segments(); err == nil {
		for _, vni := range vnis {
			if d.vniOwnerLocked(vni, "") != "" {
				continue
			}
			if err := d.dp.DeleteSegment(vni); err != nil {
				d.log.Warn("delete orphaned network device", "vni", vni, "err", err)
				continue
			}
			d.log.Warn("deleted orphaned network device", "vni", vni)
		}
	}
	if changed {
		if err := d.saveLocked(); err != nil {
			d.log.Error("persist state", "err", err)
		}
		d.log.Warn(fmt.Sprintf("state repaired from the engine: adopted %d networks and %d endpoints weft had lost, dropped %d networks and %d endpoints the engine no longer has", adoptedNets, adoptedEps, droppedNets, dropped))
	}
	return adoptedNets, adoptedEps, dropped
}

// engineGrace is how old an endpoint the engine does not list must be
// before it is taken for one whose container died with a crashed engine.
const engineGrace = 10 * time.Second

// engineResync is how often the engine's view is read again without a
// restart of its event stream.
const engineResync = 30 * time.Second

// FollowEngine repairs the driver's state from the engine's view whenever
// the engine's event stream (re)starts (after the plugin's start, or the
// engine's) and every 30 s, until ctx ends. entrypoint names the plugin's
// binary inside its rootfs ("/weft"), to find the plugin's names.
func (d *Driver) FollowEngine(ctx context.Context, eng *engine.Client, entrypoint string, log *slog.Logger) {
	eng.Follow(ctx, engine.Follower{
		Interval: engineResync,
		Logger:   log,
		Resync: func(ctx context.Context) {
			view, err := engineView(ctx, eng, entrypoint)
			if err != nil {
				log.Debug("engine view unavailable", "err", err)
				return
			}
			if view != nil {
				d.SyncEngine(view, engineGrace)
			}
		},
	})
}

// engineView reads weft's networks as the engine has them on this host;
// nil when the engine does not list weft's plugin yet.
func engineView(ctx context.Context, eng *engine.Client, entrypoint string) ([]EngineNetwork, error) {
	names, err := eng.PluginNames(ctx, entrypoint)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	nets, err := eng.Networks(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	view := []EngineNetwork{}
	for _, n := range nets {
		en := EngineNetwork{ID: n.ID, Options: n.Options}
		for _, c := range n.IPAM.Config {
			p, err := netip.ParsePrefix(c.Subnet)
			switch {
			case err != nil:
			case p.Addr().Is4() && en.Subnet == "":
				en.Subnet, en.Gateway = c.Subnet, c.Gateway
			case p.Addr().Is6() && en.Subnet6 == "":
				en.Subnet6, en.Gateway6 = c.Subnet, c.Gateway
			}
		}
		if en.Subnet == "" {
			continue
		}
		for _, c := range n.Containers {
			if c.EndpointID != "" {
				en.Endpoints = append(en.Endpoints, EngineEndpoint{ID: c.EndpointID, Address: c.IPv4Address, Address6: c.IPv6Address, MAC: c.MacAddress})
			}
		}
		view = append(view, en)
	}
	return view, nil
}
