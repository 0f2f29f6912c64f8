package driver

import (
	"fmt"
	"net"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/dataplane"
)

// EngineNetwork is a weft network as the engine has it on this host.
type EngineNetwork struct {
	ID        string
	Options   map[string]string
	Subnet    string // CIDR
	Gateway   string // address, may be empty
	Endpoints []EngineEndpoint
}

// EngineEndpoint is an endpoint the engine has on this host.
type EngineEndpoint struct {
	ID      string
	Address string // CIDR
	MAC     string
}

// SyncEngine makes the local networks and endpoints agree with the
// engine's, which is the truth about what runs here. Networks and
// endpoints the engine has but the driver does not (a state directory lost
// or corrupt) are adopted and published; endpoints the driver holds that
// the engine no longer has, and that are older than grace (so that an
// endpoint being created is not taken for a stale one), are deleted and
// withdrawn: an engine that crashed never calls DeleteEndpoint for the
// containers that died with it. Networks are only removed by
// DeleteNetwork. It returns what it changed.
func (d *Driver) SyncEngine(nets []EngineNetwork, grace time.Duration) (adoptedNets, adoptedEps, dropped int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	changed := false
	for _, en := range nets {
		n, ok := d.networks[en.ID]
		if !ok && len(en.Endpoints) == 0 {
			// Not in use here: a swarm manager lists every swarm network,
			// and Docker creates one on a host only with its first
			// endpoint (and deletes it with its last).
			continue
		}
		if !ok {
			opts, err := parseOptions(en.Options)
			if err != nil {
				d.log.Warn("engine network with options weft refuses; not adopted", "network", short(en.ID), "err", err)
				continue
			}
			switch {
			case opts.VNI != 0:
			case d.cfg.Scope == network.LocalScope:
				// As CreateNetwork does: every engine shares the subnet.
				opts.VNI = subnetVNI(en.Subnet)
			default:
				opts.VNI, err = autoVNI(en.ID, func(v uint32) bool { return d.vniOwnerLocked(v, en.ID) != "" })
				if err != nil {
					continue
				}
			}
			if other := d.vniOwnerLocked(opts.VNI, en.ID); other != "" {
				d.log.Error("engine network's VNI is taken; not adopted", "network", short(en.ID), "vni", opts.VNI, "other", short(other))
				continue
			}
			mtu := opts.MTU
			if mtu == 0 {
				mtu = d.cfg.UnderlayMTU() - dataplane.Overhead
			}
			n = &Network{ID: en.ID, VNI: opts.VNI, MTU: mtu, Subnet: en.Subnet, Gateway: en.Gateway,
				Options: en.Options, Endpoints: map[string]*Endpoint{}}
			if err := d.dp.EnsureSegment(d.spec(n)); err != nil {
				d.log.Error("adopt network device", "network", short(n.ID), "err", err)
				continue
			}
			d.networks[n.ID] = n
			adoptedNets++
			changed = true
		}
		have := map[string]bool{}
		for _, ee := range en.Endpoints {
			have[ee.ID] = true
			if _, ok := n.Endpoints[ee.ID]; ok {
				continue
			}
			if _, _, err := net.ParseCIDR(ee.Address); err != nil {
				continue
			}
			if _, err := net.ParseMAC(ee.MAC); err != nil {
				continue
			}
			ep := &Endpoint{ID: ee.ID, Address: ee.Address, MAC: ee.MAC, IfName: ifName(ee.ID), Joined: true, seen: now}
			n.Endpoints[ep.ID] = ep
			d.publishLocked(n, ep)
			adoptedEps++
			changed = true
		}
		for id, ep := range n.Endpoints {
			if have[id] || now.Sub(ep.seen) < grace {
				continue
			}
			d.peers.Withdraw(id)
			if err := d.dp.DeleteInterface(ep.IfName); err != nil {
				d.log.Warn("delete interface", "endpoint", short(id), "err", err)
			}
			delete(n.Endpoints, id)
			dropped++
			changed = true
		}
	}
	// Devices of networks the driver does not have (deleted while it had
	// lost them) go, now that its view is complete.
	if k, ok := d.dp.(interface{ Segments() ([]uint32, error) }); ok {
		if vnis, err := k.Segments(); err == nil {
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
	}
	if changed {
		if err := d.saveLocked(); err != nil {
			d.log.Error("persist state", "err", err)
		}
		d.log.Warn(fmt.Sprintf("state repaired from the engine: adopted %d networks and %d endpoints weft had lost, dropped %d endpoints the engine no longer has", adoptedNets, adoptedEps, dropped))
		d.trigger()
	}
	return adoptedNets, adoptedEps, dropped
}
