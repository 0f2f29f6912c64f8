// Package plugin wires weft together inside the managed plugin's process:
// it builds each part from the settings, connects them, starts their loops
// and serves the sockets Docker and the user talk to. It holds no state of
// its own and makes no policy; each part's package says what it owns.
//
// Start-up never waits on the engine's API (the engine starts plugins
// before it answers): the plugin socket is served at once; the mesh exists
// from the start (what is written to it waits there) and goes on the
// network as soon as this host's underlay address is known.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/antispoof"
	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dns"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/engine"
	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/keyservice"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/metrics"
	"github.com/weftnet/weft/probe"
	"github.com/weftnet/weft/status"
	"github.com/weftnet/weft/underlay"
	"github.com/weftnet/weft/vip"
	"github.com/weftnet/weft/wg"
)

// Version is reported in the status and to the mesh; set by the main
// package.
var Version = "dev"

// entrypoint is the plugin's binary in its rootfs (config.json), by which
// the engine's plugin list names weft.
const entrypoint = "/weft"

// parts are weft's components, built and connected.
type parts struct {
	kernel   *dataplane.Kernel
	mesh     *mesh.Mesh
	keys     *mesh.Keyring       // nil: the mesh runs open (WEFT_MESH_INSECURE)
	keysvc   *keyservice.Service // swarm mode: fills and rotates keys
	guard    *firewall.Guard     // nil: WEFT_FIREWALL=false
	catalog  *catalog.Catalog
	underlay *underlay.Underlay
	driver   *driver.Driver
	names    *dns.Service
	learner  *dns.Learner
	table    *ipam.MeshTable
	ipam     *ipam.Allocator
	vips     *vip.Balancer
	engine   *engine.Client
	probe    *probe.Prober
	tunnel   *wg.Tunnel // nil: WEFT_WG_PORT=0
	registry *prometheus.Registry
	// meshOff keeps the mesh off the network (an unusable keyring).
	meshOff bool
}

// Run serves the plugin until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	p, err := build(cfg, log)
	if err != nil {
		return err
	}
	defer p.kernel.Close()
	defer p.mesh.Close() // no Leave: see joinMesh

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	run(p.underlay.Run)
	run(p.catalog.Run)
	run(p.driver.Run)
	run(p.names.Run)
	run(p.learner.Run)
	run(p.table.Run)
	run(p.ipam.Run)
	run(p.probe.Run)
	run(func(ctx context.Context) { serveMetrics(ctx, cfg, p, log.With("component", "metrics")) })
	run(p.vips.Run)
	run(func(ctx context.Context) {
		p.driver.FollowEngine(ctx, p.engine, entrypoint, log.With("component", "engine"))
	})
	if p.tunnel != nil {
		run(p.tunnel.Run)
	}
	if p.keysvc != nil {
		run(p.keysvc.Run)
	}
	if p.guard != nil {
		run(p.guard.Run)
	}
	if !p.meshOff {
		run(func(ctx context.Context) { joinMesh(ctx, cfg, p, log.With("component", "mesh")) })
	}
	return serve(ctx, cfg, p, log)
}

// build makes every part from the settings and connects them.
func build(cfg Config, log *slog.Logger) (*parts, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", cfg.StateDir, err)
	}
	node, err := mesh.LoadNode(cfg.StateDir)
	if err != nil {
		log.Warn("node identity", "err", err)
	}
	if err := mesh.UpdateNode(cfg.StateDir, func(n *mesh.Node) { n.Name = node.Name }); err != nil {
		log.Warn("save node identity", "err", err)
	}
	p := &parts{engine: engine.New(cfg.DockerSocket), registry: metrics.New(Version)}
	p.keys, p.meshOff = openKeyring(cfg, log)

	p.kernel, err = dataplane.NewKernel(log.With("component", "dataplane"))
	if err != nil {
		return nil, err
	}
	mcfg := mesh.DefaultConfig()
	mcfg.NodeName = node.Name
	mcfg.Port = cfg.MeshPort
	mcfg.Peers = slices.Clone(cfg.Peers)
	mcfg.StateDir = cfg.StateDir
	mcfg.Version = Version
	mcfg.Logger = log.With("component", "mesh")
	if p.keys != nil {
		mcfg.Keyring = p.keys
	}
	mcfg.KeyOwner = keyOwner
	mcfg.DownGrace = cfg.DownGrace
	if cfg.DownGrace == 0 {
		mcfg.DownGrace = -1 // none: the mesh's zero is its default
	}
	if p.mesh, err = mesh.New(mcfg); err != nil {
		p.kernel.Close()
		return nil, err
	}
	p.catalog = catalog.New(catalog.Config{Store: p.mesh, Logger: log.With("component", "catalog")})
	last, _ := netip.ParseAddr(node.Addr)
	p.underlay = underlay.New(underlay.Config{
		Advertise: cfg.AdvertiseAddr, Last: last, Scope: cfg.Scope, Peers: cfg.Peers, MeshPort: cfg.MeshPort,
		Engine: p.engine, Paths: p.kernel, Remotes: memberAddrs(p.mesh),
		Logger: log.With("component", "underlay"),
	})
	dcfg := driver.DefaultConfig()
	dcfg.Scope = cfg.Scope
	dcfg.StateDir = cfg.StateDir
	dcfg.VXLANPort = cfg.VXLANPort
	dcfg.Logger = log.With("component", "driver")
	dcfg.Registry = p.registry
	if cfg.SourceFilter {
		t, err := antispoof.New(antispoof.Config{VXLANPort: cfg.VXLANPort, ExemptVNI: dataplane.ProbeVNI, NetNSFd: -1})
		if err != nil {
			p.mesh.Close()
			p.kernel.Close()
			return nil, err
		}
		dcfg.Sources = t
	}
	if cfg.WGPort != 0 {
		dcfg.Tunnel = wgAddrs{cfg.WGSubnet} // the tunnel itself needs the driver's networks
	}
	if p.driver, err = driver.New(dcfg, p.kernel, p.catalog, p.underlay); err != nil {
		p.mesh.Close()
		p.kernel.Close()
		return nil, err
	}
	if p.tunnel, err = buildTunnel(cfg, p, log.With("component", "tunnel")); err != nil {
		p.mesh.Close()
		p.kernel.Close()
		return nil, err
	}
	scfg := dns.DefaultConfig()
	scfg.Domain = cfg.DNSDomain
	scfg.Upstreams = cfg.DNSUpstreams
	scfg.Registry = p.registry
	p.names = dns.NewService(dns.ServiceConfig{
		Server: scfg, Open: dns.KernelGateways(p.kernel),
		Catalog: p.catalog.Subscribe(), Networks: p.driver.SubscribeNetworks(),
		Logger: log.With("component", "dns"),
	})
	p.learner = dns.NewLearner(p.engine, p.catalog, log.With("component", "names"))
	p.table = ipam.NewMeshTable(p.mesh)
	icfg := ipam.DefaultConfig()
	icfg.StateDir = cfg.StateDir
	icfg.Logger = log.With("component", "ipam")
	icfg.Table = p.table
	icfg.ExpectedHosts = ipam.ExpectedHosts(cfg.Peers, node.Addr)
	if cfg.IPAMBlock != 0 {
		icfg.BlockBits = cfg.IPAMBlock
	}
	if cfg.IPAMReclaim != 0 {
		icfg.Reclaim = cfg.IPAMReclaim
	}
	if p.ipam, err = ipam.New(icfg); err != nil {
		p.mesh.Close()
		p.kernel.Close()
		return nil, err
	}
	observe(cfg, p, log)
	vcfg := vip.DefaultConfig()
	vcfg.Engine, vcfg.Entrypoint, vcfg.Store = p.engine, entrypoint, p.mesh
	vcfg.Catalog, vcfg.Kernel = p.catalog.Subscribe(), vip.NetfilterKernel{}
	vcfg.Logger = log.With("component", "vip")
	p.vips = vip.New(vcfg)
	if cfg.Scope != network.LocalScope && p.keys != nil && !p.meshOff {
		p.keysvc, err = keyservice.New(keyservice.Config{
			SwarmDir: cfg.SwarmDir, Port: cfg.KeyPort, Keyring: p.keys, Mesh: p.mesh,
			Underlay: func() (netip.Addr, []netip.Addr) {
				st := p.underlay.State()
				return st.Addr, hostAddrs(st.Managers)
			},
			Nodes: p.engine, RotateEvery: cfg.KeyRotation,
			Logger: log.With("component", "keys"),
		})
		if err != nil {
			p.mesh.Close()
			p.kernel.Close()
			return nil, err
		}
	}
	if cfg.Firewall {
		fcfg := firewall.Config{
			Table: firewall.NewNFTable(-1), VXLANPort: cfg.VXLANPort, MeshPort: cfg.MeshPort,
			Networks: p.driver.SubscribeNetworks(), MemberEvents: p.mesh.Watch("", true),
			Members: knownAddrs(p.mesh), With: tunnelOf(p.tunnel), Synced: p.mesh.Synced, Fixed: hostAddrs(cfg.Peers),
			Self:   func() netip.Addr { return p.underlay.State().Addr },
			Logger: log.With("component", "firewall"),
		}
		if p.tunnel != nil {
			fcfg.WGPort = cfg.WGPort
		}
		if p.keysvc != nil {
			fcfg.Authenticated, fcfg.AuthChanged = p.keysvc.Authenticated, p.keysvc.Changed()
		}
		p.guard = firewall.New(fcfg)
	}
	return p, nil
}

// openKeyring reads the mesh's keyring and says how the mesh may run:
// keyed (keys; while they are empty, the mesh waits for a key: from the
// swarm's managers in swarm mode, from `weft key install` in local mode),
// open (nil keys: local mode with WEFT_MESH_INSECURE on a host that never
// had a key), or off (an unusable keyring: this host serves its own
// containers only) — never open by accident.
func openKeyring(cfg Config, log *slog.Logger) (keys *mesh.Keyring, off bool) {
	keys, note, err := mesh.LoadKeyring(cfg.StateDir, cfg.MeshKey)
	if note != "" {
		log.Warn(note)
	}
	if err != nil {
		log.Error("mesh keyring unusable; the mesh stays off until it is fixed", "err", err)
		return nil, true
	}
	if !keys.Empty() || cfg.Scope != network.LocalScope {
		return keys, false
	}
	switch had := keys.HadKey(); {
	case had != "":
		log.Error("THIS HOST HAD A MESH KEY AND HAS NONE NOW: the mesh stays off rather than run open ("+had+"). "+
			"Write the cluster's key to "+mesh.KeyFile+" in the state directory and restart the plugin, or pipe it to `weft key install`; "+
			"WEFT_MESH_INSECURE does not reopen a host that had a key (remove \"keyed\" from "+mesh.NodeFile+" by hand to do so)", "state", cfg.StateDir)
	case cfg.MeshInsecure:
		log.Warn("THE MESH RUNS OPEN (WEFT_MESH_INSECURE=true): anyone who reaches its port can join and steer traffic")
		return nil, false
	default:
		log.Error("local mode needs a mesh key: the mesh stays off until one is installed. Write it to "+mesh.KeyFile+
			" in the state directory (weft key generate makes one), set WEFT_MESH_KEY, or pipe it to `weft key install`; "+
			"WEFT_MESH_INSECURE=true runs the mesh open instead", "state", cfg.StateDir)
	}
	return keys, false
}

// hostAddrs returns the IPv4 addresses of "ip" or "ip:port" strings.
func hostAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		host := s
		if h, _, err := net.SplitHostPort(s); err == nil {
			host = h
		}
		if a, err := netip.ParseAddr(host); err == nil && a.Unmap().Is4() {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// knownAddrs returns the addresses of every member the mesh lists, in any
// state: the hosts weft's ports let in.
func knownAddrs(m *mesh.Mesh) func() []netip.Addr {
	return func() []netip.Addr {
		var out []netip.Addr
		for _, mb := range m.Members() {
			if ap, err := netip.ParseAddrPort(mb.Addr); err == nil {
				out = append(out, ap.Addr().Unmap())
			}
		}
		return out
	}
}

// keyOwner is the mesh's Config.KeyOwner: the tables whose keys name
// the host that writes them, each by its own package's rule.
func keyOwner(table, key string) (string, bool) {
	switch table {
	case catalog.Table:
		return catalog.KeyOwner(key), true
	case ipam.MeshTableName:
		return ipam.KeyOwner(key), true
	case vip.Table:
		return vip.KeyOwner(key), true
	case wg.Table:
		return wg.KeyOwner(key), true
	}
	return "", false
}

// memberAddrs returns the mesh members' addresses: the other hosts' VTEPs.
func memberAddrs(m *mesh.Mesh) func() []netip.Addr {
	return func() []netip.Addr {
		var out []netip.Addr
		for _, mb := range m.Members() {
			if mb.Name == m.LocalNode() || (mb.State != mesh.StateAlive && mb.State != mesh.StateSuspect) {
				continue
			}
			if ap, err := netip.ParseAddrPort(mb.Addr); err == nil {
				out = append(out, ap.Addr())
			}
		}
		return out
	}
}

// joinMesh puts the mesh on the network once this host's underlay address
// is known, and keeps joining the swarm's managers as they change.
//
// The mesh is never left when the plugin stops (Run only closes it): a
// plugin that stops is nearly always restarted or upgraded at once, while
// its containers keep running; leaving would make every other host
// withdraw their entries until it is back. A host that does not come back
// is found dead by failure detection.
func joinMesh(ctx context.Context, cfg Config, p *parts, log *slog.Logger) {
	if p.keys != nil && p.keys.Empty() {
		select {
		case <-ctx.Done():
			return
		case <-p.keys.Ready():
			log.Info("mesh key in place", "keys", p.keys.List())
		}
	}
	changed := p.underlay.Changed()
	var started netip.Addr
	var joined []string
	for {
		st := p.underlay.State()
		if st.Addr.IsValid() && !started.IsValid() {
			if err := p.mesh.Start(st.Addr.String(), st.Managers); err != nil {
				log.Error("mesh did not start; this host serves its own containers only", "addr", st.Addr.String(), "err", err)
				return
			}
			started, joined = st.Addr, st.Managers
			p.catalog.SetVTEP(st.Addr.String())
			if err := mesh.UpdateNode(cfg.StateDir, func(n *mesh.Node) { n.Name, n.Addr = p.mesh.LocalNode(), st.Addr.String() }); err != nil {
				log.Warn("save node identity", "err", err)
			}
			log.Info("mesh started", "node", p.mesh.LocalNode(), "addr", st.Addr.String(), "port", cfg.MeshPort)
		}
		if started.IsValid() && st.Settled && st.Addr != started {
			log.Error("this host's underlay address changed; restart the plugin for the mesh to follow", "was", started.String(), "now", st.Addr.String())
		}
		if started.IsValid() && len(st.Managers) > 0 && !slices.Equal(st.Managers, joined) {
			if _, err := p.mesh.Join(st.Managers); err != nil {
				log.Debug("join swarm managers", "err", err)
			}
			joined = st.Managers
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// serve serves the plugin API, the status endpoint and the control socket
// until ctx ends.
func serve(ctx context.Context, cfg Config, p *parts, log *slog.Logger) error {
	var tun Tunnel
	if p.tunnel != nil {
		tun = p.tunnel
	}
	if err := serveControl(ctx, cfg.StateDir, p.keys, p.keysvc, tun, log.With("component", "control")); err != nil {
		log.Error("control socket unavailable", "err", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	_ = os.Remove(cfg.Socket)
	l, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Socket, err)
	}
	srv := &http.Server{Handler: NewHandler(p.driver, p.ipam, log.With("component", "api")), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()

	report := func() status.Report {
		return status.Collect(status.Sources{
			Version: Version, Scope: cfg.Scope, VTEP: p.underlay.State().Addr,
			Mesh: p.mesh, Driver: p.driver, Catalog: p.catalog,
			Probe: p.probe, VXLANPort: cfg.VXLANPort, MeshPort: cfg.MeshPort,
			Links: links(p.tunnel),
		})
	}
	if sl, err := net.Listen("tcp", cfg.StatusAddr); err != nil {
		log.Error("status endpoint unavailable", "addr", cfg.StatusAddr, "err", err)
	} else {
		mux := status.Handler(report)
		mux.Handle("/metrics", metrics.Handler(p.registry))
		ssrv := &http.Server{Handler: status.LocalOnly(mux), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = ssrv.Serve(sl) }()
		defer ssrv.Close()
	}
	log.Info("weft plugin serving", "socket", cfg.Socket, "scope", cfg.Scope, "node", p.mesh.LocalNode(),
		"vxlan_port", cfg.VXLANPort, "mesh_port", cfg.MeshPort, "status", cfg.StatusAddr)

	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve plugin API: %w", err)
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	return nil
}
