// Package driver is weft's libnetwork remote network driver. It keeps the
// networks and local endpoints of this host (persisted in the state
// directory), publishes the local endpoints to the endpoint catalog, and
// keeps the kernel's VXLAN devices and static entries in step with the
// catalog through the dataplane.
//
// Flow: Docker's calls change the networks and local endpoints held here
// and the devices and interfaces they need, at once. The catalog's events
// (remote endpoints appearing, changing, going) are applied to the kernel
// one entry at a time, in one goroutine (Run). A repair pass, on a timer,
// when a network appears and when the underlay changes, diffs every
// device's whole table against the catalog and fixes any drift; it also
// brings each device's MTU in line with the underlay's path MTU. A restart
// is a repair from the state directory plus the catalog.
//
// Lock order: Driver.mu, then whatever the dataplane and catalog take
// inside. Kernel entries are written only by Run's goroutine, outside mu.
package driver

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/antispoof"
	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/engine"
	"github.com/weftnet/weft/internal/feed"
)

// Dataplane is the part of the kernel programming the driver needs;
// *dataplane.Kernel implements it, tests use a recording fake.
type Dataplane interface {
	EnsureSegment(dataplane.Segment) error
	DeleteSegment(vni uint32) error
	// Segments returns the VNIs of the weft devices that exist.
	Segments() ([]uint32, error)
	CreateInterface(vni uint32, name string, mac net.HardwareAddr) error
	DeleteInterface(name string) error
	// SetRemote and DeleteRemote write one remote endpoint's entries.
	SetRemote(vni uint32, r dataplane.RemoteEndpoint) error
	DeleteRemote(vni uint32, r dataplane.RemoteEndpoint) error
	// SetRemotes makes a device's entries exactly want, and says how many
	// it had to add and remove.
	SetRemotes(vni uint32, want []dataplane.RemoteEndpoint) (dataplane.Repair, error)
	// Remotes returns the remote endpoints programmed on a device.
	Remotes(vni uint32) ([]dataplane.RemoteEndpoint, error)
	// Flooder writes the flood lists of the networks that carry
	// broadcast and multicast (multicast.go).
	Flooder
}

// Sources is the table of the sources each network's packets may carry
// between hosts (local endpoints out, each remote endpoint in from its
// host); *antispoof.Table implements it, tests use a recording fake.
type Sources interface {
	// Change removes del's sources and adds add's, in one batch;
	// antispoof.ErrNotBuilt before the first Sync.
	Change(add, del antispoof.Sources) error
	// Sync makes the table hold want; with prune false it keeps what it
	// holds beyond want.
	Sync(want antispoof.Sources, prune bool) (antispoof.Diff, error)
	// Remove deletes the table.
	Remove() error
}

// Catalog is the endpoint catalog as the driver uses it; *catalog.Catalog
// implements it.
type Catalog interface {
	SetLocal(catalog.Record)
	RemoveLocal(endpointID string)
	Subscribe() *feed.Sub[catalog.Event]
	Synced() bool
}

// Underlay tells the MTU of the path VXLAN takes between the hosts, and
// when it may have changed.
type Underlay interface {
	// MTU is the underlay path's MTU; network MTUs default to it minus
	// dataplane.Overhead.
	MTU() int
	// Changed receives a value, coalesced, whenever MTU may have changed.
	Changed() <-chan struct{}
}

// Config holds the driver's settings.
type Config struct {
	// Scope is "global" (swarm) or "local"; reported in GetCapabilities.
	Scope string
	// StateDir is where networks and endpoints are persisted; empty keeps
	// them in memory only.
	StateDir string
	// VXLANPort is the UDP port of weft's VXLAN traffic.
	VXLANPort int
	// RepairInterval is how often the whole-table repair runs; default
	// 10 s.
	RepairInterval time.Duration
	// Logger receives the driver's log; nil discards it.
	Logger *slog.Logger
	// Registry receives the driver's metrics (repair passes and the drift
	// they fixed); nil keeps them unregistered.
	Registry prometheus.Registerer
	// Sources, when set, is kept holding the sources of every network
	// here: each local endpoint's as it is created and deleted, each
	// remote endpoint's as its entries are written, the whole table in
	// every repair pass. It exists while this host has a network.
	Sources Sources
	// Tunnel, when set, gives each host's tunnel address, to which an
	// encrypted network's traffic is sent (encrypted.go); nil: this host
	// refuses encrypted networks.
	Tunnel Tunnel
}

// DefaultConfig returns the settings weft runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Scope:          network.GlobalScope,
		VXLANPort:      4790,
		RepairInterval: 10 * time.Second,
	}
}

// withDefaults fills zero fields from DefaultConfig and checks the rest.
func (c Config) withDefaults() (Config, error) {
	def := DefaultConfig()
	if c.Scope == "" {
		c.Scope = def.Scope
	}
	if c.Scope != network.GlobalScope && c.Scope != network.LocalScope {
		return c, fmt.Errorf("scope %q is neither %q nor %q", c.Scope, network.GlobalScope, network.LocalScope)
	}
	if c.VXLANPort == 0 {
		c.VXLANPort = def.VXLANPort
	}
	if c.RepairInterval == 0 {
		c.RepairInterval = def.RepairInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Driver implements network.Driver.
type Driver struct {
	cfg      Config
	log      *slog.Logger
	dp       Dataplane
	cat      Catalog
	underlay Underlay
	store    store
	sub      *feed.Sub[catalog.Event]
	kick     chan struct{} // capacity 1: repair soon
	sealed   *sealed       // the encrypted networks' VNIs (encrypted.go)
	metrics  *repairMetrics

	// mu guards the fields below.
	mu       sync.Mutex
	networks map[string]*Network
	// allocated holds the VNIs this host handed out as swarm leader
	// (AllocateNetwork), by network ID, so that a VNI is never handed out
	// twice although most networks never run on the leader itself.
	allocated map[string]uint32
	// remotes are the remote endpoints the catalog holds, by VNI, whether
	// or not this host has the network.
	remotes map[uint32]*remoteSet
	// flood holds the flood list last written per VNI (multicast.go).
	flood map[uint32][]string
	// refused is when a record of each host was last logged as refused.
	refused map[string]time.Time
	// passed holds the VNIs of the networks the last repair pass saw, so
	// that a network's first pass (programming) is not taken for drift.
	passed map[uint32]bool
	// netEvents tells subscribers (the name server) of networks coming and
	// going; published under mu.
	netEvents feed.Feed[NetworkEvent]
	// sourcesOn tells that a repair pass wrote the table of sources, and
	// no pass removed it since.
	sourcesOn bool
}

var _ network.Driver = (*Driver)(nil)

// Network is one weft network on this host, as persisted.
type Network struct {
	ID  string `json:"id"`
	VNI uint32 `json:"vni"`
	// MTU is the device's MTU: the user's (-o com.docker.network.driver.mtu)
	// or the underlay's path MTU minus dataplane.Overhead, followed.
	MTU     int    `json:"mtu"`
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway,omitempty"`
	// Subnet6 and Gateway6 are a dual-stack network's IPv6 subnet and
	// gateway (ipv6.go); empty on an IPv4-only one.
	Subnet6   string               `json:"subnet6,omitempty"`
	Gateway6  string               `json:"gateway6,omitempty"`
	Options   map[string]string    `json:"options,omitempty"`
	Endpoints map[string]*Endpoint `json:"endpoints"`

	// seen is when this process created or restored the network;
	// unlisted, when a pass of SyncEngine first found the engine without
	// it (zero while it is listed).
	seen, unlisted time.Time
}

// Endpoint is one local endpoint, as persisted.
type Endpoint struct {
	ID      string `json:"id"`
	Address string `json:"address"` // CIDR, as Docker gave it
	// Address6 is the IPv6 address (CIDR) on a dual-stack network.
	Address6 string `json:"address6,omitempty"`
	MAC      string `json:"mac"`
	IfName   string `json:"ifname"`
	Joined   bool   `json:"joined"`

	// seen is when this process created or restored the endpoint.
	seen time.Time
}

// NetworkEvent tells that a network is served on this host (Up) or no
// longer is.
type NetworkEvent struct {
	Up      bool
	ID      string
	VNI     uint32
	Subnet  netip.Prefix
	Gateway netip.Addr // invalid when Docker gave none
	// Encrypted: the network's traffic between hosts rides in WireGuard.
	Encrypted bool
	// Subnet6 and Gateway6: a dual-stack network's IPv6 subnet and
	// gateway; invalid on an IPv4-only one.
	Subnet6  netip.Prefix
	Gateway6 netip.Addr
}

// New returns a driver with the networks of its state directory loaded,
// their devices ensured and their endpoints published to cat.
func New(cfg Config, dp Dataplane, cat Catalog, ul Underlay) (*Driver, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	d := &Driver{
		cfg:      cfg,
		log:      log,
		dp:       dp,
		cat:      cat,
		underlay: ul,
		store:    store{dir: cfg.StateDir},
		kick:     make(chan struct{}, 1),
		metrics:  newRepairMetrics(cfg.Registry),
		networks: map[string]*Network{},
		remotes:  map[uint32]*remoteSet{},
		flood:    map[uint32][]string{},
		refused:  map[string]time.Time{},
	}
	d.seal()
	d.allocated = d.store.loadAllocations(log)
	nets := d.store.load(log)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range nets {
		n.seen = time.Now()
		for _, ep := range n.Endpoints {
			ep.seen = n.seen
		}
		d.networks[n.ID] = n
		d.sealed.mark(n)
		if err := d.dp.EnsureSegment(d.segmentLocked(n)); err != nil {
			log.Error("restore network device", "network", short(n.ID), "err", err)
		}
		for _, ep := range n.Endpoints {
			d.publishLocked(n, ep)
		}
	}
	if len(nets) > 0 {
		log.Info("restored state", "networks", len(nets))
	}
	// Subscribed last: the catalog's snapshot then holds what was just
	// published, and nothing later is missed.
	d.sub = cat.Subscribe()
	return d, nil
}

// Run applies the catalog's changes to the kernel as they come and repairs
// the whole picture on a timer, until ctx ends.
func (d *Driver) Run(ctx context.Context) {
	defer d.sub.Close()
	t := time.NewTicker(d.cfg.RepairInterval)
	defer t.Stop()
	var underlayChanged <-chan struct{}
	if d.underlay != nil {
		underlayChanged = d.underlay.Changed()
	}
	d.apply(d.sub.Take())
	d.repair(false)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.sub.Ready():
			d.apply(d.sub.Take())
		case <-d.kick:
			d.repair(false)
		case <-underlayChanged:
			d.repair(false)
		case <-t.C:
			d.repair(true)
		}
	}
}

// Kick asks Run for a repair pass soon.
func (d *Driver) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// pathMTU is the MTU a network without one of its own gets.
func (d *Driver) pathMTU() int {
	mtu := 1500
	if d.underlay != nil {
		mtu = d.underlay.MTU()
	}
	return mtu - dataplane.Overhead
}

// segmentLocked returns the kernel segment of n, its MTU brought in line
// with the underlay unless the user chose one.
func (d *Driver) segmentLocked(n *Network) dataplane.Segment {
	if opts, err := parseOptions(n.Options); err == nil && opts.MTU != 0 {
		n.MTU = opts.MTU
	} else if mtu := d.pathMTU() - tunnelOverhead(n); mtu >= 68 {
		n.MTU = mtu
	}
	return dataplane.Segment{VNI: n.VNI, MTU: n.MTU, Port: d.cfg.VXLANPort}
}

// GetCapabilities reports weft's scope.
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: d.cfg.Scope, ConnectivityScope: d.cfg.Scope}, nil
}

// publishLocked gives the catalog one local endpoint.
func (d *Driver) publishLocked(n *Network, ep *Endpoint) {
	p, err := netip.ParsePrefix(ep.Address)
	if err != nil {
		d.log.Error("endpoint with a corrupt address not published", "endpoint", short(ep.ID), "address", ep.Address)
		return
	}
	r := catalog.Record{Network: n.ID, VNI: n.VNI, Endpoint: ep.ID, IP: p.Addr().String(), MAC: ep.MAC}
	if a := ep.addr6(); a.IsValid() {
		r.IP6 = a.String()
	}
	d.cat.SetLocal(r)
}

func (d *Driver) saveLocked() error {
	if err := d.store.save(slices.Collect(maps.Values(d.networks))); err != nil {
		return fmt.Errorf("weft: cannot save state: %w", err)
	}
	return nil
}

// Networks returns a copy of the local networks, for status reports.
func (d *Driver) Networks() []Network {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Network, 0, len(d.networks))
	for _, n := range d.networks {
		c := *n
		c.Options = maps.Clone(n.Options)
		c.Endpoints = make(map[string]*Endpoint, len(n.Endpoints))
		for id, ep := range n.Endpoints {
			e := *ep
			c.Endpoints[id] = &e
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Network) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// SubscribeNetworks returns a queue of the networks this host serves: an
// Up event for each now, then one per change.
func (d *Driver) SubscribeNetworks() *feed.Sub[NetworkEvent] {
	d.mu.Lock()
	defer d.mu.Unlock()
	var init []NetworkEvent
	for _, n := range d.networks {
		init = append(init, networkEvent(n, true))
	}
	slices.SortFunc(init, func(a, b NetworkEvent) int { return strings.Compare(a.ID, b.ID) })
	return d.netEvents.Subscribe(init...)
}

func networkEvent(n *Network, up bool) NetworkEvent {
	ev := NetworkEvent{Up: up, ID: n.ID, VNI: n.VNI}
	ev.Subnet, _ = netip.ParsePrefix(n.Subnet)
	ev.Gateway, _ = netip.ParseAddr(n.Gateway)
	ev.Encrypted = encrypted(n)
	ev.Subnet6, _ = netip.ParsePrefix(n.Subnet6)
	ev.Gateway6, _ = netip.ParseAddr(n.Gateway6)
	return ev
}

// ifName is the host-side name of an endpoint's interface: a short,
// unique prefix that fits IFNAMSIZ.
func ifName(endpointID string) string {
	return "wv" + short(endpointID)
}

// short abbreviates a Docker ID for messages, as the docker CLI does.
func short(id string) string { return engine.ShortID(id) }
