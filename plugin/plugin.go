// Package plugin wires weft together inside the managed plugin's process:
// configuration from the environment, the logger, the kernel dataplane,
// the network and IPAM drivers, the mesh, and the servers Docker and the
// user talk to.
//
// Start-up never waits on the engine's API (the engine starts plugins
// before it answers): the plugin socket is served at once, and the mesh
// starts as soon as this host's underlay address is known, from the
// settings, from the last run, or from the engine's swarm info.
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
	"strconv"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/engine"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/status"
)

// Version is reported in the status; set by the main package.
var Version = "dev"

// enginePoll is how often the engine is asked for the swarm's managers.
const enginePoll = 15 * time.Second

// Run serves the plugin until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w", cfg.StateDir, err)
	}
	node, err := loadNode(cfg.StateDir)
	if err != nil {
		log.Warn("node identity", "err", err)
	}
	if a, err := localAdvertise(cfg); err != nil {
		log.Warn("cannot derive this host's underlay address from WEFT_PEERS; set WEFT_ADVERTISE_ADDR", "err", err)
	} else if a.IsValid() {
		cfg.AdvertiseAddr = a
	}
	if cfg.AdvertiseAddr.IsValid() {
		node.Addr = cfg.AdvertiseAddr.String()
	}
	if err := saveNode(cfg.StateDir, node); err != nil {
		log.Warn("save node identity", "err", err)
	}

	keys, keysNote, keysErr := loadKeyring(cfg.StateDir, cfg.MeshKey)
	if keysNote != "" {
		log.Warn(keysNote)
	}
	if keysErr != nil {
		// Never fall back to an open mesh: serve local containers only.
		log.Error("mesh keyring unusable; the mesh stays off until it is fixed", "err", keysErr)
	} else if keys == nil {
		log.Warn("the mesh is not encrypted: anyone who reaches its port can join; set WEFT_MESH_KEY or write mesh.key in the state directory")
	}

	kernel, err := dataplane.NewKernel(log.With("component", "dataplane"))
	if err != nil {
		return err
	}
	defer kernel.Close()

	peers := newMeshPeers(log.With("component", "peers"))
	names := newDNSManager(cfg, log.With("component", "dns"), kernel)
	defer names.close()
	dcfg := driver.DefaultConfig()
	dcfg.Scope = cfg.Scope
	dcfg.StateDir = cfg.StateDir
	dcfg.VXLANPort = cfg.VXLANPort
	var vtep net.IP
	if node.Addr != "" {
		vtep = net.ParseIP(node.Addr).To4()
	}
	dcfg.VTEP = vtep
	dcfg.UnderlayMTU = func() int {
		if mtu, ok := kernel.PathMTU(vtep, nil); ok {
			return mtu
		}
		return kernel.FallbackMTU()
	}
	dcfg.Logger = log.With("component", "driver")
	dcfg.Reconciled = names.update
	drv, err := driver.New(dcfg, kernel, peers)
	if err != nil {
		return err
	}
	names.drv = drv
	alloc, runIPAM, err := newIPAM(cfg, node, peers, log.With("component", "ipam"))
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go drv.Run(ctx)
	runIPAM(ctx)

	if err := serveControl(ctx, cfg.StateDir, keys, log.With("component", "control")); err != nil {
		log.Error("control socket unavailable", "err", err)
	}
	c := &controlPlane{cfg: cfg, log: log, node: node, drv: drv, peers: peers, engine: engine.New(cfg.DockerSocket), keys: keys, keysBroken: keysErr != nil}
	go c.run(ctx)
	w := &nameWatcher{log: log.With("component", "names"), engine: c.engine, drv: drv}
	go w.run(ctx)
	defer c.close()

	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	_ = os.Remove(cfg.Socket)
	l, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Socket, err)
	}
	srv := &http.Server{Handler: NewHandler(drv, alloc, log.With("component", "api")), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(l) }()

	sl, err := net.Listen("tcp", cfg.StatusAddr)
	if err != nil {
		log.Error("status endpoint unavailable", "addr", cfg.StatusAddr, "err", err)
	} else {
		ssrv := &http.Server{Handler: status.Handler(c.report), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = ssrv.Serve(sl) }()
		defer ssrv.Close()
	}
	log.Info("weft plugin serving", "socket", cfg.Socket, "scope", cfg.Scope, "node", node.Name,
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

// controlPlane starts the mesh once the underlay address is known and
// keeps feeding it the swarm's managers.
type controlPlane struct {
	cfg    Config
	log    *slog.Logger
	drv    *driver.Driver
	peers  *meshPeers
	engine *engine.Client

	// keys is the mesh's keyring (nil: unencrypted); keysBroken keeps the
	// mesh off when a configured keyring cannot be read.
	keys       *keyring
	keysBroken bool

	// node is written only by run before the mesh starts, then read.
	node nodeState
}

func (c *controlPlane) run(ctx context.Context) {
	swarmPeers := func() (string, []string) {
		info, err := c.engine.Info(ctx)
		if err != nil {
			c.log.Debug("engine API not answering yet", "err", err)
			return "", nil
		}
		var addrs []string
		for _, m := range info.Swarm.RemoteManagers {
			host, _, err := net.SplitHostPort(m.Addr)
			if err != nil {
				continue
			}
			addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(c.cfg.MeshPort)))
		}
		return info.Swarm.NodeAddr, addrs
	}

	// Wait for an underlay address: settings or last run first, else the
	// engine's swarm node address.
	var joinAddrs []string
	for c.node.Addr == "" {
		addr, managers := swarmPeers()
		if a, err := localAdvertise(c.cfg); err == nil && a.IsValid() {
			addr, managers = a.String(), nil
		}
		if a, err := netip.ParseAddr(addr); err == nil && a.Is4() {
			c.node.Addr = addr
			joinAddrs = managers
			if err := saveNode(c.cfg.StateDir, c.node); err != nil {
				c.log.Warn("save node identity", "err", err)
			}
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}

	if c.keysBroken {
		return
	}
	mcfg := mesh.DefaultConfig()
	if c.keys != nil {
		mcfg.Keyring = c.keys.kr
	}
	mcfg.NodeName = c.node.Name
	mcfg.BindAddr = c.node.Addr
	mcfg.AdvertiseAddr = c.node.Addr
	mcfg.Port = c.cfg.MeshPort
	mcfg.Peers = append(slices.Clone(c.cfg.Peers), joinAddrs...)
	mcfg.StateDir = c.cfg.StateDir
	mcfg.Logger = c.log.With("component", "mesh")
	m, err := mesh.New(mcfg)
	if err != nil {
		c.log.Error("mesh did not start; this host serves local containers only", "err", err)
		return
	}
	c.peers.attach(m)
	c.drv.SetVTEP(net.ParseIP(c.node.Addr).To4())
	c.log.Info("mesh started", "node", c.node.Name, "addr", c.node.Addr, "port", c.cfg.MeshPort, "peers", mcfg.Peers)

	t := time.NewTicker(enginePoll)
	defer t.Stop()
	for {
		if _, managers := swarmPeers(); len(managers) > 0 {
			if _, err := m.Join(managers); err != nil {
				c.log.Debug("join swarm managers", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// close leaves the mesh gracefully, so the other hosts withdraw this
// host's endpoints at once instead of after failure detection. The kernel
// state stays: containers keep talking across a plugin restart.
func (c *controlPlane) close() {
	m := c.peers.current()
	if m == nil {
		return
	}
	// No Leave: a plugin that stops is nearly always restarted or upgraded
	// at once, while its containers keep running; leaving would make every
	// other host withdraw their entries until it is back. A host that does
	// not come back is found dead by failure detection.
	_ = m.Close()
}

// report builds the status of this host.
func (c *controlPlane) report() status.Report {
	rep := status.Report{Node: c.node.Name, VTEP: c.node.Addr, Version: Version, Scope: c.cfg.Scope}
	if m := c.peers.current(); m != nil {
		for _, mb := range m.Members() {
			rep.Peers = append(rep.Peers, status.Peer{Name: mb.Name, Addr: mb.Addr, State: mb.State})
		}
	}
	remote := c.peers.Remote()
	for _, n := range c.drv.Networks() {
		sn := status.Network{ID: n.ID, VNI: n.VNI, Subnet: n.Subnet, MTU: n.MTU}
		for _, ep := range n.Endpoints {
			ip, _, _ := net.ParseCIDR(ep.Address)
			sn.Local = append(sn.Local, status.Endpoint{ID: ep.ID, IP: ip.String(), MAC: ep.MAC, Interface: ep.IfName, Names: ep.Names})
		}
		for _, r := range remote {
			if r.VNI == n.VNI {
				sn.Remote = append(sn.Remote, status.Endpoint{ID: r.Endpoint, IP: r.IP, MAC: r.MAC, Host: r.Host, VTEP: r.VTEP, Names: r.Names})
			}
		}
		slices.SortFunc(sn.Local, func(a, b status.Endpoint) int { return compareIP(a.IP, b.IP) })
		slices.SortFunc(sn.Remote, func(a, b status.Endpoint) int { return compareIP(a.IP, b.IP) })
		rep.Networks = append(rep.Networks, sn)
	}
	return rep
}

func compareIP(a, b string) int {
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	if err1 != nil || err2 != nil {
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	}
	return x.Compare(y)
}
