package dns

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/weftnet/weft/engine"
)

// Swarm's labels on task containers.
const (
	labelService = "com.docker.swarm.service.name"
	labelTask    = "com.docker.swarm.task.name" // <service>.<slot or node ID>.<task ID>
)

// learnResync is how often every running container's names are read
// again, repairing whatever an event stream that broke may have missed.
const learnResync = 30 * time.Second

// Names is where the learner puts what it learns: *catalog.Catalog.
type Names interface {
	// SetNames sets the names of one of this host's endpoints; it reports
	// whether the endpoint is known.
	SetNames(endpointID string, names []string) bool
	// NamesReady says a full pass over the engine's containers is done.
	NamesReady()
}

// Learner learns the DNS names of this host's endpoints from the engine's
// API: network connect events, plus a full pass whenever the event stream
// (re)starts and on a timer. Nothing waits on it.
type Learner struct {
	engine *engine.Client
	names  Names
	log    *slog.Logger
}

// NewLearner returns a learner reading eng and writing to names.
func NewLearner(eng *engine.Client, names Names, log *slog.Logger) *Learner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Learner{engine: eng, names: names, log: log}
}

// Run learns until ctx ends.
func (l *Learner) Run(ctx context.Context) {
	l.engine.Follow(ctx, engine.Follower{
		Filters:  map[string][]string{"type": {"network"}, "event": {"connect"}},
		Interval: learnResync,
		Logger:   l.log,
		Resync:   l.resync,
		Handle: func(ev engine.Event) {
			l.learn(ctx, ev.Actor.Attributes["container"])
		},
	})
}

// resync reads the names of every running container.
func (l *Learner) resync(ctx context.Context) {
	cs, err := l.engine.Containers(ctx)
	if err != nil {
		l.log.Debug("list containers", "err", err)
		return
	}
	for _, c := range cs {
		l.learn(ctx, c.ID)
	}
	l.names.NamesReady()
}

// learn reads one container's names and sets them for each of its
// endpoints.
func (l *Learner) learn(ctx context.Context, id string) {
	if id == "" {
		return
	}
	c, err := l.engine.Inspect(ctx, id)
	if err != nil {
		l.log.Debug("inspect container", "container", id, "err", err)
		return
	}
	for _, es := range c.NetworkSettings.Networks {
		if es.EndpointID != "" && l.names.SetNames(es.EndpointID, ContainerNames(c, es)) {
			l.log.Debug("endpoint names", "endpoint", es.EndpointID, "container", c.Name)
		}
	}
}

// ContainerNames lists the names a container answers to on one network,
// most specific first: hostname, container name, aliases, then for swarm
// tasks <service>.<slot>, the service name and tasks.<service>.
func ContainerNames(c engine.Container, es engine.EndpointSettings) []string {
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if ValidName(n) && !seen[n] {
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
