package plugin

import (
	"context"
	"time"

	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/engine"
)

// syncGrace is how old an endpoint the engine does not list must be before
// it is taken for one whose container died with a crashed engine.
const syncGrace = 10 * time.Second

// syncEngine hands the driver the engine's view of weft's networks on this
// host (see driver.SyncEngine).
func (w *nameWatcher) syncEngine(ctx context.Context) {
	plugins, err := w.engine.Plugins(ctx)
	if err != nil {
		w.log.Debug("list plugins", "err", err)
		return
	}
	var names []string
	for _, p := range plugins {
		// Not only enabled ones: while this process starts, the engine
		// has not yet marked its plugin enabled.
		if len(p.Config.Entrypoint) > 0 && p.Config.Entrypoint[0] == "/weft" {
			names = append(names, p.Name)
		}
	}
	if len(names) == 0 {
		return
	}
	nets, err := w.engine.Networks(ctx, names)
	if err != nil {
		w.log.Debug("list networks", "err", err)
		return
	}
	var view []driver.EngineNetwork
	for _, n := range nets {
		en := toDriver(n)
		if en.Subnet == "" {
			continue
		}
		view = append(view, en)
	}
	w.drv.SyncEngine(view, syncGrace)
}

func toDriver(n engine.Network) driver.EngineNetwork {
	en := driver.EngineNetwork{ID: n.ID, Options: n.Options}
	if len(n.IPAM.Config) > 0 {
		en.Subnet = n.IPAM.Config[0].Subnet
		en.Gateway = n.IPAM.Config[0].Gateway
	}
	for _, c := range n.Containers {
		if c.EndpointID != "" {
			en.Endpoints = append(en.Endpoints, driver.EngineEndpoint{ID: c.EndpointID, Address: c.IPv4Address, MAC: c.MacAddress})
		}
	}
	return en
}
