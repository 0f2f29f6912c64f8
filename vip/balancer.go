package vip

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/engine"
	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

// Store is the mesh, where the claims travel (as the catalog's records
// do); *mesh.Mesh implements it.
type Store = catalog.Store

// Config configures a Balancer.
type Config struct {
	// Engine is this host's engine. Required.
	Engine Engine
	// Entrypoint is the plugin's binary in its rootfs ("/weft"), by
	// which the engine's plugin list names weft. Required.
	Entrypoint string
	// Store is the mesh. Required.
	Store Store
	// Catalog streams the endpoint records of every host. Required.
	Catalog *feed.Sub[catalog.Event]
	// Kernel writes the sandboxes' tables. Required.
	Kernel Kernel
	// Resync is how often the engine is read in full without an event
	// (default 10 s).
	Resync time.Duration
	// Repair is how often every sandbox's table is checked against what
	// it should say, and its stale flows swept (default 30 s).
	Repair time.Duration
	// SyncWait bounds how long after its start the balancer waits for the
	// mesh's first state exchange before it writes (default 30 s).
	SyncWait time.Duration
	// MountWait bounds how long a starting container's namespace is
	// waited for (default 10 s).
	MountWait time.Duration
	// Logger receives the balancer's log; nil discards it.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with the defaults and no parts.
func DefaultConfig() Config {
	return Config{
		Entrypoint: "/weft",
		Resync:     10 * time.Second,
		Repair:     30 * time.Second,
		SyncWait:   30 * time.Second,
		MountWait:  10 * time.Second,
	}
}

// Balancer balances the VIPs of weft's networks in every sandbox of this
// host (see the package's documentation). Run does the work; the engine is
// read from goroutines of its own, which hand what they read to Run's
// goroutine through a queue; Run alone writes the kernel and the mesh.
type Balancer struct {
	cfg     Config
	log     *slog.Logger
	reader  *reader
	updates feed.Feed[update]
	self    string

	// wg counts the engine goroutines, which end with Run's context.
	wg sync.WaitGroup
	// watchMu guards the containers whose namespace is being waited for.
	watchMu  sync.Mutex
	watching map[string]bool
	// keysMu guards keysDir, the sandbox keys' directory being watched
	// (early_linux.go), and stopKeys, which ends that watch.
	keysMu   sync.Mutex
	keysDir  string
	stopKeys context.CancelFunc
	// macMu guards macs: this host's endpoints' networks by MAC.
	macMu sync.Mutex
	macs  map[string]string

	// Owned by Run's goroutine.
	model     *model
	local     map[string]bool // this host's endpoint IDs
	last      *view           // the engine's last full read
	subnets   map[string]netip.Prefix
	sandboxes map[string]*sandbox
	published map[string]string // this host's claims in the mesh, by key
	read      bool              // a full read of the engine arrived
	ready     bool              // writes allowed
	started   time.Time
	warned    map[string]time.Time
}

// sandbox is a Sandbox and what was last written to it.
type sandbox struct {
	Sandbox
	seen time.Time
	// applied is what this process knows the table says (nil: unknown,
	// the table is read at the next write).
	applied *Spec
	// clean is set once this process has swept the sandbox's flows
	// against applied.
	clean  bool
	failed string // last error, logged once
}

// update is what an engine goroutine hands to Run: a full read, a
// container's sandbox found, or a container gone.
type update struct {
	view    *view
	sandbox *Sandbox
	seen    time.Time
	gone    string
}

// New returns a balancer; Run balances.
func New(cfg Config) *Balancer {
	d := DefaultConfig()
	if cfg.Resync == 0 {
		cfg.Resync = d.Resync
	}
	if cfg.Repair == 0 {
		cfg.Repair = d.Repair
	}
	if cfg.SyncWait == 0 {
		cfg.SyncWait = d.SyncWait
	}
	if cfg.MountWait == 0 {
		cfg.MountWait = d.MountWait
	}
	if cfg.Entrypoint == "" {
		cfg.Entrypoint = d.Entrypoint
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Balancer{
		cfg:       cfg,
		log:       log,
		reader:    newReader(cfg.Engine, cfg.Entrypoint),
		self:      cfg.Store.LocalNode(),
		watching:  map[string]bool{},
		macs:      map[string]string{},
		model:     newModel(),
		local:     map[string]bool{},
		subnets:   map[string]netip.Prefix{},
		sandboxes: map[string]*sandbox{},
		published: map[string]string{},
		warned:    map[string]time.Time{},
	}
}

// Run balances until ctx ends. It leaves every table in place: they hold
// while the plugin is away.
func (b *Balancer) Run(ctx context.Context) {
	b.started = time.Now()
	claims := b.cfg.Store.Watch(Table, false)
	defer claims.Close()
	defer b.cfg.Catalog.Close()
	ups := b.updates.Subscribe()
	defer ups.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer b.wg.Wait()
	defer cancel()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.followEngine(ctx)
	}()

	repair := time.NewTicker(b.cfg.Repair)
	defer repair.Stop()
	wait := time.NewTicker(time.Second)
	defer wait.Stop()
	for {
		dirty := map[string]bool{}
		select {
		case <-ctx.Done():
			return
		case <-b.cfg.Catalog.Ready():
			localChanged := false
			for _, ev := range b.cfg.Catalog.Take() {
				if ev.Local {
					if ev.Kind == catalog.Updated && ev.Old.MAC != ev.Record.MAC {
						b.setMAC(ev.Old.MAC, "", false)
					}
					b.setMAC(ev.Record.MAC, ev.Record.Network, ev.Kind != catalog.Removed)
				}
				if ev.Local && (ev.Kind == catalog.Removed) == b.local[ev.Record.Endpoint] {
					if ev.Kind == catalog.Removed {
						delete(b.local, ev.Record.Endpoint)
					} else {
						b.local[ev.Record.Endpoint] = true
					}
					localChanged = true
				}
				dirty[b.model.record(ev)] = true
			}
			if localChanged && b.last != nil {
				b.setOwn(b.ownClaims(b.last), dirty)
			}
		case <-claims.Ready():
			for _, ev := range claims.Take() {
				b.claim(ev, dirty)
			}
		case <-ups.Ready():
			for _, u := range ups.Take() {
				b.apply(u, dirty)
			}
		case <-wait.C:
			if b.ready {
				wait.Stop()
			}
		case <-repair.C:
			if b.ready {
				b.repair()
			}
			continue
		}
		if !b.ready {
			if !b.read || (!b.cfg.Store.Synced() && time.Since(b.started) < b.cfg.SyncWait) {
				continue
			}
			b.ready = true
			b.log.Info("VIP balancing ready", "sandboxes", len(b.sandboxes), "after", time.Since(b.started).Round(time.Millisecond))
			b.repair()
			continue
		}
		b.write(dirty)
	}
}

// claim folds a mesh event of the claims table into the model.
func (b *Balancer) claim(ev mesh.Event, dirty map[string]bool) {
	e := ev.Entry
	if e.Owner == b.self {
		return // this host's claims are b.model.own
	}
	if old, ok := b.model.claims[e.Key]; ok {
		dirty[old.Network] = true
		delete(b.model.claims, e.Key)
	}
	if ev.Kind != mesh.EntryPut {
		return
	}
	var c Claim
	if err := json.Unmarshal(e.Value, &c); err != nil || c.Network == "" || c.Service == "" {
		b.warn(e.Owner, "ignoring a malformed VIP claim", "peer", e.Owner, "key", e.Key, "err", err)
		return
	}
	b.model.claims[e.Key] = heldClaim{Claim: c, clock: e.Clock}
	dirty[c.Network] = true
}

// apply folds what the engine goroutines read into the state.
func (b *Balancer) apply(u update, dirty map[string]bool) {
	switch {
	case u.view != nil:
		b.applyView(u.view, dirty)
	case u.sandbox != nil:
		key, early := u.sandbox.Container, "early:"+u.sandbox.Path
		if key == "" {
			// Found by its key before its start is over (early_linux.go).
			if slices.ContainsFunc(b.sortedSandboxes(), func(sb *sandbox) bool { return sb.Path == u.sandbox.Path }) {
				return
			}
			key = early
		}
		sb := b.sandboxes[key]
		if sb == nil {
			sb = &sandbox{}
			if e := b.sandboxes[early]; e != nil && key != early {
				*sb = *e // the same namespace, found early
				delete(b.sandboxes, early)
			}
			b.sandboxes[key] = sb
		}
		if sb.Path != u.sandbox.Path {
			sb.applied, sb.clean = nil, false // another namespace
		}
		sb.Sandbox, sb.seen = *u.sandbox, u.seen
		if b.ready && b.writeSandbox(sb, false) {
			b.sweep(sb)
		}
		if len(sb.Networks) == 0 {
			delete(b.sandboxes, key) // its table is gone with its last weft network
		}
	case u.gone != "":
		delete(b.sandboxes, u.gone)
	}
}

func (b *Balancer) applyView(v *view, dirty map[string]bool) {
	b.read = true
	for n := range v.subnets {
		if b.subnets[n] != v.subnets[n] {
			dirty[n] = true
		}
	}
	b.subnets = v.subnets

	tasks := map[string]map[string]string{}
	for n, svcs := range v.services {
		tasks[n] = map[string]string{}
		for name, s := range svcs {
			for _, t := range s.Tasks {
				tasks[n][t.EndpointID] = name
			}
		}
		if !maps.Equal(tasks[n], b.model.tasks[n]) {
			dirty[n] = true
		}
	}
	for n := range b.model.tasks {
		if tasks[n] == nil {
			dirty[n] = true
		}
	}
	b.model.tasks = tasks

	b.last = v
	b.setOwn(b.ownClaims(v), dirty)

	for id, sb := range v.sandboxes {
		cur := b.sandboxes[id]
		if cur == nil {
			cur = &sandbox{}
			if e := b.sandboxes["early:"+sb.Path]; e != nil {
				*cur = *e // the same namespace, found early
				delete(b.sandboxes, "early:"+sb.Path)
			}
			b.sandboxes[id] = cur
		}
		if cur.Path != sb.Path {
			cur.applied, cur.clean = nil, false // another namespace
		}
		if cur.applied == nil || !slices.Equal(cur.Networks, sb.Networks) {
			for _, n := range sb.Networks {
				dirty[n] = true
			}
		}
		cur.Sandbox, cur.seen = sb, v.started
	}
	for id, sb := range b.sandboxes {
		if _, ok := v.sandboxes[id]; !ok && sb.seen.Before(v.started) {
			delete(b.sandboxes, id)
		}
	}
}

// ownClaims are this host's claims as its engine says: the VIP of every
// service with a task here (on a manager, of every service) and, on a
// manager, the addresses of the tasks being stopped.
func (b *Balancer) ownClaims(v *view) map[string]Claim {
	out := map[string]Claim{}
	get := func(n, svc string) *Claim {
		k := claimKey(b.self, n, svc)
		c, ok := out[k]
		if !ok {
			c = Claim{Network: n, Service: svc}
		}
		out[k] = c
		return &c
	}
	set := func(c *Claim) { out[claimKey(b.self, c.Network, c.Service)] = *c }
	for n, svcs := range v.services {
		for name, s := range svcs {
			a, err := netip.ParseAddr(s.VIP)
			if name == "" || err != nil || !a.Is4() {
				continue
			}
			if !slices.ContainsFunc(s.Tasks, func(t engine.NetworkTask) bool { return b.local[t.EndpointID] }) {
				continue
			}
			c := get(n, name)
			c.VIP = a.String()
			set(c)
		}
	}
	for n, svcs := range v.vips {
		for name, a := range svcs {
			c := get(n, name)
			c.VIP = a.String()
			set(c)
		}
	}
	for n, svcs := range v.drains {
		for name, as := range svcs {
			c := get(n, name)
			for _, a := range as {
				c.Drain = append(c.Drain, a.String())
			}
			slices.Sort(c.Drain)
			c.Drain = slices.Compact(c.Drain)
			set(c)
		}
	}
	return out
}

// setOwn makes own this host's claims, in the model and in the mesh.
func (b *Balancer) setOwn(own map[string]Claim, dirty map[string]bool) {
	for k, c := range own {
		if old, ok := b.model.own[k]; !ok || !equalClaims(old, c) {
			dirty[c.Network] = true
		}
	}
	for k, c := range b.model.own {
		if _, ok := own[k]; !ok {
			dirty[c.Network] = true
		}
	}
	b.model.own = own
	b.publish(own)
}

func equalClaims(a, b Claim) bool {
	return a.Network == b.Network && a.Service == b.Service && a.VIP == b.VIP && slices.Equal(a.Drain, b.Drain)
}

// publish makes this host's claims in the mesh say own.
func (b *Balancer) publish(own map[string]Claim) {
	for k, c := range own {
		val, err := json.Marshal(c)
		if err != nil {
			continue
		}
		if b.published[k] != string(val) {
			b.cfg.Store.Put(Table, k, val)
			b.published[k] = string(val)
		}
	}
	for k := range b.published {
		if _, ok := own[k]; !ok {
			b.cfg.Store.Delete(Table, k)
			delete(b.published, k)
		}
	}
}

// write brings the sandboxes attached to a dirty network in line: every
// table first, so that no new connection anywhere goes where it should
// not, then the flows that must end.
func (b *Balancer) write(dirty map[string]bool) {
	if len(dirty) == 0 {
		return
	}
	var sweeps []*sandbox
	for _, sb := range b.sortedSandboxes() {
		if slices.ContainsFunc(sb.Networks, func(n string) bool { return dirty[n] }) && b.writeSandbox(sb, false) {
			sweeps = append(sweeps, sb)
		}
	}
	for _, sb := range sweeps {
		b.sweep(sb)
	}
}

// repair checks every sandbox's table against what it should say
// (rewriting any that drifted), then sweeps the flows of those whose
// history this process does not know or whose table drifted.
func (b *Balancer) repair() {
	var sweeps []*sandbox
	for _, sb := range b.sortedSandboxes() {
		if b.writeSandbox(sb, true) {
			sweeps = append(sweeps, sb)
		}
	}
	for _, sb := range sweeps {
		b.sweep(sb)
	}
}

// writeSandbox brings one sandbox's table in line: unless it already says
// its spec as far as this process knows, or always when check is set. It
// reports whether the sandbox's flows must be swept: its history is not
// known (never swept by this process), or its table dropped a VIP or a
// backend, or a check found it drifted.
func (b *Balancer) writeSandbox(sb *sandbox, check bool) bool {
	spec := b.model.spec(sb.Networks, b.subnets)
	if !check && sb.applied != nil && sb.applied.Marker() == spec.Marker() {
		return false
	}
	start := time.Now()
	wrote, err := b.cfg.Kernel.Apply(sb.Path, spec)
	if err != nil {
		b.failed(sb, err)
		return false
	}
	need := !sb.clean || wrote && (sb.applied == nil || check || sb.applied.drops(spec))
	sb.applied, sb.failed = &spec, ""
	if wrote {
		b.log.Debug("VIP table written", "container", engine.ShortID(sb.Container), "sandbox", sb.Path, "vips", len(spec.VIPs),
			"took", time.Since(start).Round(time.Microsecond))
	}
	return need
}

// sweep ends the sandbox's flows its table no longer allows.
func (b *Balancer) sweep(sb *sandbox) {
	if b.sandboxes[sb.Container] != sb && b.sandboxes["early:"+sb.Path] != sb {
		return // gone meanwhile
	}
	start := time.Now()
	n, err := b.cfg.Kernel.Sweep(sb.Path, *sb.applied)
	if err != nil {
		b.failed(sb, err)
		return
	}
	sb.clean = true
	if n > 0 {
		b.log.Debug("VIP flows swept", "container", engine.ShortID(sb.Container), "sandbox", sb.Path, "flows", n,
			"took", time.Since(start).Round(time.Microsecond))
	}
}

// failed handles a sandbox the kernel could not write or sweep: one whose
// namespace is gone is forgotten; another is tried again at the next
// change or repair (the error logged once).
func (b *Balancer) failed(sb *sandbox, err error) {
	if errors.Is(err, ErrGone) {
		for k, s := range b.sandboxes {
			if s == sb {
				delete(b.sandboxes, k)
			}
		}
		return
	}
	sb.applied = nil
	if msg := err.Error(); msg != sb.failed {
		sb.failed = msg
		b.log.Warn("VIP table not written; tried again at the next change or repair", "container", engine.ShortID(sb.Container), "sandbox", sb.Path, "err", err)
	}
}

func (b *Balancer) sortedSandboxes() []*sandbox {
	out := slices.Collect(maps.Values(b.sandboxes))
	slices.SortFunc(out, func(x, y *sandbox) int { return strings.Compare(x.Container, y.Container) })
	return out
}

// warn logs at most once a minute per subject.
func (b *Balancer) warn(subject, msg string, args ...any) {
	now := time.Now()
	if last, ok := b.warned[subject]; ok && now.Sub(last) < time.Minute {
		return
	}
	b.warned[subject] = now
	b.log.Warn(msg, args...)
}
