package plugin

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/weftnet/weft/dns"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/engine"
)

// Swarm's labels on task containers.
const (
	labelService = "com.docker.swarm.service.name"
	labelTask    = "com.docker.swarm.task.name" // <service>.<slot or node ID>.<task ID>
)

// nameResync is how often every running container's names are read
// again, repairing whatever an event stream that broke may have missed.
const nameResync = 30 * time.Second

// nameWatcher learns the DNS names of local endpoints from the engine's
// API, lazily: network connect events, plus a full pass whenever the event
// stream (re)starts and on a timer. Nothing waits on it.
type nameWatcher struct {
	log    *slog.Logger
	engine *engine.Client
	drv    *driver.Driver
}

func (w *nameWatcher) run(ctx context.Context) {
	backoff := time.Second
	go func() {
		t := time.NewTicker(nameResync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.resync(ctx)
			}
		}
	}()
	for ctx.Err() == nil {
		err := w.engine.Events(ctx, func() {
			backoff = time.Second
			w.resync(ctx)
		}, func(ev engine.Event) {
			if ev.Type == "network" && ev.Action == "connect" {
				w.learn(ctx, ev.Actor.Attributes["container"])
			}
		})
		if ctx.Err() != nil {
			return
		}
		w.log.Debug("engine event stream ended; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// resync makes the driver's networks and endpoints agree with the
// engine's, then reads the names of every running container.
func (w *nameWatcher) resync(ctx context.Context) {
	w.syncEngine(ctx)
	cs, err := w.engine.Containers(ctx)
	if err != nil {
		w.log.Debug("list containers", "err", err)
		return
	}
	for _, c := range cs {
		w.learn(ctx, c.ID)
	}
}

// learn reads one container's names and gives them to the driver for each
// weft network it is on.
func (w *nameWatcher) learn(ctx context.Context, id string) {
	if id == "" {
		return
	}
	c, err := w.engine.Inspect(ctx, id)
	if err != nil {
		w.log.Debug("inspect container", "container", id, "err", err)
		return
	}
	for _, es := range c.NetworkSettings.Networks {
		if es.EndpointID == "" {
			continue
		}
		w.drv.SetNames(es.NetworkID, es.EndpointID, containerNames(c, es))
	}
}

// containerNames lists the names a container answers to on one network,
// most specific first: hostname, container name, aliases, then for swarm
// tasks <service>.<slot>, the service name and tasks.<service>.
func containerNames(c engine.Container, es engine.EndpointSettings) []string {
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if dns.ValidName(n) && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	add(c.Config.Hostname)
	add(strings.TrimPrefix(c.Name, "/"))
	for _, a := range es.Aliases {
		add(a)
	}
	if svc := c.Config.Labels[labelService]; svc != "" {
		if parts := strings.Split(c.Config.Labels[labelTask], "."); len(parts) == 3 && parts[0] == svc {
			add(svc + "." + parts[1])
		}
		add(svc)
		add("tasks." + svc)
	}
	return names
}
