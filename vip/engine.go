package vip

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/engine"
)

// Engine is the part of the engine's API the balancer reads;
// *engine.Client implements it.
type Engine interface {
	Follow(ctx context.Context, f engine.Follower)
	Info(ctx context.Context) (engine.Info, error)
	PluginNames(ctx context.Context, entrypoint string) ([]string, error)
	Networks(ctx context.Context, drivers []string) ([]engine.Network, error)
	NetworkServices(ctx context.Context, networkID string) (map[string]engine.NetworkService, error)
	Services(ctx context.Context) ([]engine.Service, error)
	Tasks(ctx context.Context, filters map[string][]string) ([]engine.Task, error)
	Containers(ctx context.Context) ([]engine.ContainerSummary, error)
	Inspect(ctx context.Context, id string) (engine.Container, error)
	PID(ctx context.Context) (int, error)
}

var _ Engine = (*engine.Client)(nil)

// Sandbox is a running container attached to weft networks on this host.
type Sandbox struct {
	// Container is the container's ID.
	Container string
	// Path is where this process opens the container's network namespace.
	Path string
	// Networks are the IDs of the container's weft networks, sorted.
	Networks []string
}

// view is one full read of the engine.
type view struct {
	// started is when the read began: sandboxes seen after it and
	// missing from it are not taken for gone.
	started time.Time
	// subnets of the weft networks the engine lists, by network ID.
	subnets map[string]netip.Prefix
	// services of each weft network, by network ID then service name
	// (verbose network inspect).
	services map[string]map[string]engine.NetworkService
	// manager: the engine is a swarm manager, and vips and drains hold
	// what its /services and /tasks say.
	manager bool
	// vips are the managers' service addresses, by network ID then
	// service name.
	vips map[string]map[string]netip.Addr
	// drains are the addresses of tasks being stopped, by network ID
	// then service name.
	drains map[string]map[string][]netip.Addr
	// sandboxes are the running containers on weft networks, by ID.
	sandboxes map[string]Sandbox
}

// reader reads the engine for the balancer. Its methods are safe for
// concurrent use.
type reader struct {
	eng        Engine
	entrypoint string

	// mu serialises full reads and guards the fields below.
	mu sync.Mutex
	// known caches the sandboxes of containers already inspected, by ID,
	// with the networks the container list gave for them.
	known map[string]Sandbox
	// weft are the IDs and drivers of weft's networks as last read.
	weft    map[string]bool
	drivers []string
	pid     int
}

func newReader(eng Engine, entrypoint string) *reader {
	return &reader{eng: eng, entrypoint: entrypoint, known: map[string]Sandbox{}, weft: map[string]bool{}}
}

// Tasks still running whose desired state is one of these are being
// stopped by the orchestrator.
var stopping = []string{"shutdown", "remove"}

// Task states in which a task's container may still answer.
var alive = []string{"assigned", "accepted", "preparing", "ready", "starting", "running"}

// full reads everything the balancer needs. It returns nil, nil when the
// engine does not list weft's plugin yet.
func (r *reader) full(ctx context.Context) (*view, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := &view{
		started:   time.Now(),
		subnets:   map[string]netip.Prefix{},
		services:  map[string]map[string]engine.NetworkService{},
		vips:      map[string]map[string]netip.Addr{},
		drains:    map[string]map[string][]netip.Addr{},
		sandboxes: map[string]Sandbox{},
	}
	names, err := r.eng.PluginNames(ctx, r.entrypoint)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	r.drivers = names
	nets, err := r.eng.Networks(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	weft := map[string]bool{}
	for _, n := range nets {
		weft[n.ID] = true
		if len(n.IPAM.Config) > 0 {
			if p, err := netip.ParsePrefix(n.IPAM.Config[0].Subnet); err == nil && p.Addr().Is4() {
				v.subnets[n.ID] = p.Masked()
			}
		}
		svcs, err := r.eng.NetworkServices(ctx, n.ID)
		if err != nil {
			return nil, fmt.Errorf("inspect network %s: %w", engine.ShortID(n.ID), err)
		}
		if len(svcs) > 0 {
			v.services[n.ID] = svcs
		}
	}
	r.weft = weft
	if pid, err := r.eng.PID(ctx); err == nil {
		r.pid = pid
	}
	info, err := r.eng.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.Swarm.ControlAvailable {
		if err := r.readManager(ctx, v, weft); err != nil {
			return nil, err
		}
	}
	if err := r.readSandboxes(ctx, v, weft); err != nil {
		return nil, err
	}
	return v, nil
}

// readManager reads the swarm's service addresses and the tasks being
// stopped from a manager.
func (r *reader) readManager(ctx context.Context, v *view, weft map[string]bool) error {
	svcs, err := r.eng.Services(ctx)
	if err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	v.manager = true
	names := map[string]string{}
	for _, s := range svcs {
		names[s.ID] = s.Spec.Name
		for _, vip := range s.Endpoint.VirtualIPs {
			p, err := netip.ParsePrefix(vip.Addr)
			if err != nil || !weft[vip.NetworkID] {
				continue
			}
			if v.vips[vip.NetworkID] == nil {
				v.vips[vip.NetworkID] = map[string]netip.Addr{}
			}
			v.vips[vip.NetworkID][s.Spec.Name] = p.Addr()
		}
	}
	tasks, err := r.eng.Tasks(ctx, map[string][]string{"desired-state": stopping})
	if err != nil {
		return fmt.Errorf("list tasks: %w", err)
	}
	for _, t := range tasks {
		svc := names[t.ServiceID]
		if svc == "" || !slices.Contains(stopping, t.DesiredState) || !slices.Contains(alive, t.Status.State) {
			continue
		}
		for _, a := range t.NetworksAttachments {
			if !weft[a.Network.ID] {
				continue
			}
			for _, addr := range a.Addresses {
				if p, err := netip.ParsePrefix(addr); err == nil {
					if v.drains[a.Network.ID] == nil {
						v.drains[a.Network.ID] = map[string][]netip.Addr{}
					}
					v.drains[a.Network.ID][svc] = append(v.drains[a.Network.ID][svc], p.Addr())
				}
			}
		}
	}
	return nil
}

// readSandboxes lists the running containers on weft networks, inspecting
// those not seen before.
func (r *reader) readSandboxes(ctx context.Context, v *view, weft map[string]bool) error {
	cs, err := r.eng.Containers(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	known := map[string]Sandbox{}
	for _, c := range cs {
		var nets []string
		for _, es := range c.NetworkSettings.Networks {
			if weft[es.NetworkID] {
				nets = append(nets, es.NetworkID)
			}
		}
		if len(nets) == 0 {
			continue
		}
		slices.Sort(nets)
		sb, ok := r.known[c.ID]
		if !ok || !slices.Equal(sb.Networks, nets) {
			var found bool
			sb, found, err = r.inspectLocked(ctx, c.ID)
			if err != nil || !found || len(sb.Networks) == 0 {
				continue // gone meanwhile, or not yet plumbed: events bring it
			}
		}
		known[c.ID] = sb
		v.sandboxes[c.ID] = sb
	}
	r.known = known
	return nil
}

// sandbox inspects one container: its sandbox (with no networks if it is
// attached to none of weft's), and whether it is running with a network
// namespace.
func (r *reader) sandbox(ctx context.Context, id string) (Sandbox, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inspectLocked(ctx, id)
}

func (r *reader) inspectLocked(ctx context.Context, id string) (Sandbox, bool, error) {
	c, err := r.eng.Inspect(ctx, id)
	if err != nil {
		return Sandbox{}, false, err
	}
	sb := Sandbox{Container: c.ID}
	for _, es := range c.NetworkSettings.Networks {
		if r.weft[es.NetworkID] {
			sb.Networks = append(sb.Networks, es.NetworkID)
		}
	}
	slices.Sort(sb.Networks)
	if !c.State.Running || c.NetworkSettings.SandboxKey == "" {
		return sb, false, nil
	}
	sb.Path = r.nsPath(c.NetworkSettings.SandboxKey)
	return sb, true, nil
}

// nsPath is where this process opens a namespace the engine mounted at
// key: through the engine's root when the engine's process is visible
// (the plugin shares the host's PID namespace), so that the engine's own
// mounts are found whatever this process's mount namespace holds.
func (r *reader) nsPath(key string) string {
	if r.pid > 0 {
		return filepath.Join("/proc", strconv.Itoa(r.pid), "root", key)
	}
	return key
}

// isWeft reports whether the network of an event is one of weft's: known
// from the last read, or driven by weft's plugin.
func (r *reader) isWeft(id, driver string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.weft[id] {
		return true
	}
	for _, d := range r.drivers {
		if driver == d || strings.TrimSuffix(d, ":latest") == driver {
			r.weft[id] = true
			return true
		}
	}
	return false
}
