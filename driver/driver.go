// Package driver is weft's libnetwork remote network driver: it keeps the
// networks and local endpoints of this host (persisted in the state
// directory), publishes the local endpoints to the other hosts through the
// mesh, and turns the whole picture into kernel state through the dataplane.
//
// Flow: Docker's calls and mesh changes only update the model held here;
// one reconcile step (run on every change and on a timer) diffs the model
// against the kernel and writes the difference. A restart is a reconcile
// from the state directory plus the mesh.
//
// Lock order: Driver.mu, then whatever the dataplane and mesh take inside.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/dataplane"
)

// Dataplane is the part of the kernel programming the driver needs;
// *dataplane.Kernel implements it, tests use a recording fake.
type Dataplane interface {
	EnsureSegment(dataplane.Segment) error
	DeleteSegment(vni uint32) error
	CreateInterface(vni uint32, name string, mac net.HardwareAddr) error
	DeleteInterface(name string) error
	SetRemotes(vni uint32, remotes []dataplane.RemoteEndpoint) (dataplane.Repair, error)
	// Remotes returns the remote endpoints programmed on the device of vni.
	Remotes(vni uint32) ([]dataplane.RemoteEndpoint, error)
}

// Peers is the replicated view of endpoints across hosts. Implementations
// are safe for concurrent use and never block on the network.
type Peers interface {
	// Publish announces (or updates) a local endpoint to every host.
	Publish(Record)
	// Withdraw removes a local endpoint everywhere.
	Withdraw(endpointID string)
	// Remote returns the endpoints of other live hosts.
	Remote() []Record
	// Changes receives a value whenever Remote may have changed.
	Changes() <-chan struct{}
}

// Record is an endpoint as it travels between hosts.
type Record struct {
	// Network is the Docker network ID.
	Network string `json:"net"`
	// VNI of the network's segment.
	VNI uint32 `json:"vni"`
	// Endpoint is the Docker endpoint ID.
	Endpoint string `json:"ep"`
	// IP is the endpoint's IPv4 address (no prefix).
	IP string `json:"ip"`
	// MAC is the endpoint's hardware address.
	MAC string `json:"mac"`
	// VTEP is the underlay address of the endpoint's host.
	VTEP string `json:"vtep"`
	// Host is the name of the endpoint's host in the mesh.
	Host string `json:"host,omitempty"`
	// Names are the endpoint's DNS names (hostname, container name,
	// aliases, service names), learned from the engine.
	Names []string `json:"names,omitempty"`
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
	// VTEP is this host's underlay address, published with every local
	// endpoint. It may be set later with SetVTEP.
	VTEP net.IP
	// UnderlayMTU returns the MTU of the underlay; network MTUs default
	// to it minus dataplane.Overhead.
	UnderlayMTU func() int
	// ResyncInterval is how often the full reconcile runs without a
	// change; default 10 s.
	ResyncInterval time.Duration
	// Logger receives the driver's log; nil discards it.
	Logger *slog.Logger
	// Reconciled, if set, is called after every reconcile with the remote
	// records it programmed (DNS rebuilds its zones from it). It must not
	// block or call back into the driver while holding its own locks.
	Reconciled func(remote []Record)
}

// DefaultConfig returns the settings weft runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Scope:          network.GlobalScope,
		VXLANPort:      4790,
		UnderlayMTU:    func() int { return 1500 },
		ResyncInterval: 10 * time.Second,
	}
}

// Driver implements network.Driver.
type Driver struct {
	cfg   Config
	log   *slog.Logger
	dp    Dataplane
	peers Peers
	store *store
	kick  chan struct{}

	// mu guards the fields below.
	mu       sync.Mutex
	vtep     net.IP
	networks map[string]*Network
	// allocated holds the VNIs this host handed out as swarm leader
	// (AllocateNetwork), by network ID, so that a VNI is never handed out
	// twice although most networks never run on the leader itself.
	allocated map[string]uint32
}

var _ network.Driver = (*Driver)(nil)

// Network is one weft network on this host, as persisted.
type Network struct {
	ID        string               `json:"id"`
	VNI       uint32               `json:"vni"`
	MTU       int                  `json:"mtu"`
	Subnet    string               `json:"subnet"`
	Gateway   string               `json:"gateway,omitempty"`
	Options   map[string]string    `json:"options,omitempty"`
	Endpoints map[string]*Endpoint `json:"endpoints"`
}

// Endpoint is one local endpoint, as persisted.
type Endpoint struct {
	ID      string `json:"id"`
	Address string `json:"address"` // CIDR, as Docker gave it
	MAC     string `json:"mac"`
	IfName  string `json:"ifname"`
	Joined  bool   `json:"joined"`
	// Names are the endpoint's DNS names, learned from the engine.
	Names []string `json:"names,omitempty"`

	// seen is when this process created or restored the endpoint.
	seen time.Time
}

// New returns a driver with the networks of its state directory loaded and
// their devices ensured. peers may be nil for a driver that serves this
// host only.
func New(cfg Config, dp Dataplane, peers Peers) (*Driver, error) {
	def := DefaultConfig()
	if cfg.Scope == "" {
		cfg.Scope = def.Scope
	}
	if cfg.Scope != network.GlobalScope && cfg.Scope != network.LocalScope {
		return nil, fmt.Errorf("scope %q is neither %q nor %q", cfg.Scope, network.GlobalScope, network.LocalScope)
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = def.VXLANPort
	}
	if cfg.UnderlayMTU == nil {
		cfg.UnderlayMTU = def.UnderlayMTU
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = def.ResyncInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if peers == nil {
		peers = nopPeers{}
	}
	d := &Driver{
		cfg:      cfg,
		log:      log,
		dp:       dp,
		peers:    peers,
		store:    &store{dir: cfg.StateDir, log: log},
		kick:     make(chan struct{}, 1),
		vtep:     cfg.VTEP,
		networks: map[string]*Network{},
	}
	d.allocated = d.store.loadAllocations()
	nets, err := d.store.load()
	if err != nil {
		log.Warn("state file unreadable; starting from an empty state", "err", err)
	}
	for _, n := range nets {
		if n.Endpoints == nil {
			n.Endpoints = map[string]*Endpoint{}
		}
		for _, ep := range n.Endpoints {
			ep.seen = time.Now()
		}
		d.networks[n.ID] = n
		if err := d.dp.EnsureSegment(d.spec(n)); err != nil {
			log.Error("restore network device", "network", n.ID, "err", err)
		}
	}
	if len(nets) > 0 {
		log.Info("restored state", "networks", len(nets))
	}
	d.publishAllLocked()
	return d, nil
}

// Run reconciles the kernel with the model on every change and on a timer,
// until ctx ends.
func (d *Driver) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.ResyncInterval)
	defer t.Stop()
	d.Reconcile()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.peers.Changes():
		case <-d.kick:
		case <-t.C:
		}
		d.Reconcile()
	}
}

func (d *Driver) trigger() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// SetVTEP sets this host's underlay address once it is known, and
// republishes the local endpoints with it.
func (d *Driver) SetVTEP(ip net.IP) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vtep.Equal(ip) {
		return
	}
	d.vtep = ip
	d.publishAllLocked()
}

// Reconcile writes the desired FDB and neighbour entries of every local
// network to the kernel. Errors are logged; the next run retries.
func (d *Driver) Reconcile() {
	remote := d.peers.Remote()
	d.mu.Lock()
	specs := make([]dataplane.Segment, 0, len(d.networks))
	for _, n := range d.networks {
		specs = append(specs, d.spec(n))
	}
	d.mu.Unlock()
	byVNI := map[uint32][]dataplane.RemoteEndpoint{}
	for _, r := range remote {
		p, ok := r.peer()
		if !ok {
			d.log.Warn("ignoring malformed endpoint record", "endpoint", r.Endpoint, "host", r.Host)
			continue
		}
		byVNI[r.VNI] = append(byVNI[r.VNI], p)
	}
	// Until the view of the other hosts is complete (just after a start,
	// before the mesh has exchanged state), programming it as it is would
	// delete the entries the kernel still holds for endpoints that are
	// alive: until then, entries are only added or updated.
	complete := true
	if s, ok := d.peers.(interface{ Synced() bool }); ok {
		complete = s.Synced()
	}
	for _, s := range specs {
		if err := d.dp.EnsureSegment(s); err != nil {
			d.log.Error("ensure network device", "vni", s.VNI, "err", err)
			continue
		}
		want := byVNI[s.VNI]
		if !complete {
			have, err := d.dp.Remotes(s.VNI)
			if err != nil {
				d.log.Error("read programmed peers", "vni", s.VNI, "err", err)
				continue
			}
			want = unionPeers(have, want)
		}
		if _, err := d.dp.SetRemotes(s.VNI, want); err != nil {
			d.log.Error("program peers", "vni", s.VNI, "err", err)
		}
	}
	if d.cfg.Reconciled != nil {
		d.cfg.Reconciled(remote)
	}
}

// unionPeers returns the peers of have and want, want's winning for an
// address both hold.
func unionPeers(have, want []dataplane.RemoteEndpoint) []dataplane.RemoteEndpoint {
	byIP := map[string]dataplane.RemoteEndpoint{}
	for _, p := range have {
		byIP[p.IP.String()] = p
	}
	for _, p := range want {
		byIP[p.IP.String()] = p
	}
	out := make([]dataplane.RemoteEndpoint, 0, len(byIP))
	for _, p := range byIP {
		out = append(out, p)
	}
	return out
}

// SetNames records the DNS names of a local endpoint and publishes them.
// It reports whether the endpoint is known.
func (d *Driver) SetNames(networkID, endpointID string, names []string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.networks[networkID]
	if !ok {
		return false
	}
	ep, ok := n.Endpoints[endpointID]
	if !ok {
		return false
	}
	if slices.Equal(ep.Names, names) {
		return true
	}
	ep.Names = slices.Clone(names)
	if err := d.saveLocked(); err != nil {
		d.log.Error("persist state", "err", err)
	}
	d.publishLocked(n, ep)
	d.log.Debug("endpoint names", "network", short(n.ID), "endpoint", short(ep.ID), "names", names)
	d.trigger()
	return true
}

func (r Record) peer() (dataplane.RemoteEndpoint, bool) {
	ip := net.ParseIP(r.IP).To4()
	vtep := net.ParseIP(r.VTEP).To4()
	mac, err := net.ParseMAC(r.MAC)
	if ip == nil || vtep == nil || err != nil || len(mac) != 6 {
		return dataplane.RemoteEndpoint{}, false
	}
	return dataplane.RemoteEndpoint{IP: ip, MAC: mac, VTEP: vtep}, true
}

func (d *Driver) spec(n *Network) dataplane.Segment {
	return dataplane.Segment{VNI: n.VNI, MTU: n.MTU, Port: d.cfg.VXLANPort}
}

// GetCapabilities reports weft's scope.
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: d.cfg.Scope, ConnectivityScope: d.cfg.Scope}, nil
}

// AllocateNetwork runs once, on the swarm leader, when a swarm-scoped
// network is created: it checks the options and picks the VNI, which
// reaches every host's CreateNetwork in the options returned.
func (d *Driver) AllocateNetwork(req *network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	if req.NetworkID == "" {
		return nil, errors.New("weft: AllocateNetwork needs a network ID")
	}
	opts, err := parseOptions(req.Options)
	if err != nil {
		return nil, fmt.Errorf("weft: %w", err)
	}
	if err := checkPools(req.IPv4Data, req.IPv6Data); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if opts.VNI != 0 {
		if other := d.vniTakenLocked(opts.VNI, req.NetworkID); other != "" {
			return nil, fmt.Errorf("weft: VNI %d is already used by network %s; choose another with -o %s", opts.VNI, short(other), OptVNI)
		}
	} else {
		opts.VNI, err = autoVNI(req.NetworkID, func(v uint32) bool { return d.vniTakenLocked(v, req.NetworkID) != "" })
		if err != nil {
			return nil, fmt.Errorf("weft: %w", err)
		}
	}
	d.allocated[req.NetworkID] = opts.VNI
	if err := d.store.saveAllocations(d.allocated); err != nil {
		delete(d.allocated, req.NetworkID)
		return nil, fmt.Errorf("weft: cannot save the VNI allocation: %w", err)
	}
	out := maps.Clone(req.Options)
	if out == nil {
		out = map[string]string{}
	}
	out[OptVNI] = fmt.Sprint(opts.VNI)
	d.log.Info("network allocated", "network", short(req.NetworkID), "vni", opts.VNI)
	return &network.AllocateNetworkResponse{Options: out}, nil
}

func checkPools(v4 []network.IPAMData, v6 []network.IPAMData) error {
	if len(v6) > 0 {
		return errors.New("weft: IPv6 is not supported yet; create the network without --ipv6")
	}
	if len(v4) == 0 {
		return errors.New("weft: the network needs an IPv4 subnet (--subnet)")
	}
	return nil
}

// vniOwnerLocked returns the ID of another network using vni, or "".
func (d *Driver) vniOwnerLocked(vni uint32, self string) string {
	for _, n := range d.networks {
		if n.VNI == vni && n.ID != self {
			return n.ID
		}
	}
	return ""
}

// FreeNetwork is the counterpart of AllocateNetwork on the leader.
func (d *Driver) FreeNetwork(req *network.FreeNetworkRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.allocated[req.NetworkID]; ok {
		delete(d.allocated, req.NetworkID)
		if err := d.store.saveAllocations(d.allocated); err != nil {
			d.log.Error("persist VNI allocations", "err", err)
		}
	}
	d.log.Info("network freed", "network", short(req.NetworkID))
	return nil
}

// vniTakenLocked returns the ID of another network that has vni, on this
// host or among the allocations this host made as leader, or "".
func (d *Driver) vniTakenLocked(vni uint32, self string) string {
	if other := d.vniOwnerLocked(vni, self); other != "" {
		return other
	}
	for id, v := range d.allocated {
		if v == vni && id != self {
			return id
		}
	}
	return ""
}

// CreateNetwork sets up the network's segment on this host.
func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) error {
	if req.NetworkID == "" {
		return errors.New("weft: CreateNetwork needs a network ID")
	}
	raw, err := genericOptions(req.Options)
	if err != nil {
		return fmt.Errorf("weft: %w", err)
	}
	opts, err := parseOptions(raw)
	if err != nil {
		return fmt.Errorf("weft: %w", err)
	}
	if len(req.IPv6Data) > 0 {
		return errors.New("weft: IPv6 is not supported yet; create the network without --ipv6")
	}
	if len(req.IPv4Data) == 0 || req.IPv4Data[0] == nil {
		return errors.New("weft: the network needs an IPv4 subnet (--subnet)")
	}
	pool := req.IPv4Data[0]
	if _, _, err := net.ParseCIDR(pool.Pool); err != nil {
		return fmt.Errorf("weft: subnet %q is not an IPv4 CIDR", pool.Pool)
	}
	gw := ""
	if pool.Gateway != "" {
		ip, _, err := net.ParseCIDR(pool.Gateway)
		if err != nil {
			return fmt.Errorf("weft: gateway %q is not an IPv4 CIDR", pool.Gateway)
		}
		gw = ip.String()
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	derived := false
	switch {
	case opts.VNI != 0:
	case d.cfg.Scope == network.LocalScope:
		// Each engine gives the network its own ID; the subnet is what
		// every host shares, so it names the segment.
		opts.VNI, derived = subnetVNI(pool.Pool), true
	default:
		// Not allocated by a swarm leader: derive it from the network ID
		// like the leader would.
		opts.VNI, err = autoVNI(req.NetworkID, func(v uint32) bool { return d.vniOwnerLocked(v, req.NetworkID) != "" })
		if err != nil {
			return fmt.Errorf("weft: %w", err)
		}
	}
	if other := d.vniOwnerLocked(opts.VNI, req.NetworkID); other != "" {
		if derived {
			return fmt.Errorf("weft: VNI %d, derived from subnet %s, is already used by network %s on this host; choose one with -o %s=N, the same on every host", opts.VNI, pool.Pool, short(other), OptVNI)
		}
		return fmt.Errorf("weft: VNI %d is already used by network %s on this host", opts.VNI, short(other))
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = d.cfg.UnderlayMTU() - dataplane.Overhead
	}
	n := &Network{
		ID: req.NetworkID, VNI: opts.VNI, MTU: mtu,
		Subnet: pool.Pool, Gateway: gw, Options: raw,
		Endpoints: map[string]*Endpoint{},
	}
	if old, ok := d.networks[n.ID]; ok {
		// Docker replays CreateNetwork after a restart: keep the endpoints.
		n.Endpoints = old.Endpoints
	}
	if err := d.dp.EnsureSegment(d.spec(n)); err != nil {
		return fmt.Errorf("weft: cannot create the network's VXLAN device: %w", err)
	}
	d.networks[n.ID] = n
	if err := d.saveLocked(); err != nil {
		delete(d.networks, n.ID)
		if derr := d.dp.DeleteSegment(n.VNI); derr != nil {
			d.log.Error("undo network device", "network", short(n.ID), "err", derr)
		}
		return err
	}
	d.log.Info("network created", "network", short(n.ID), "vni", n.VNI, "subnet", n.Subnet, "mtu", n.MTU)
	d.trigger()
	return nil
}

// DeleteNetwork removes the network's segment from this host. Deleting a
// network weft does not know is not an error (Docker may retry).
func (d *Driver) DeleteNetwork(req *network.DeleteNetworkRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.networks[req.NetworkID]
	if !ok {
		d.log.Info("delete of unknown network ignored", "network", short(req.NetworkID))
		return nil
	}
	if err := d.dp.DeleteSegment(n.VNI); err != nil {
		return fmt.Errorf("weft: cannot delete the network's VXLAN device: %w", err)
	}
	for id := range n.Endpoints {
		d.peers.Withdraw(id)
	}
	delete(d.networks, n.ID)
	if err := d.saveLocked(); err != nil {
		d.log.Error("persist state", "err", err)
	}
	d.log.Info("network deleted", "network", short(n.ID), "vni", n.VNI)
	d.trigger()
	return nil
}

// CreateEndpoint records a local endpoint with the address Docker's IPAM
// gave it, chooses its MAC when Docker did not, and publishes it.
func (d *Driver) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	if req.EndpointID == "" {
		return nil, errors.New("weft: CreateEndpoint needs an endpoint ID")
	}
	if req.Interface == nil || req.Interface.Address == "" {
		return nil, errors.New("weft: the endpoint has no IPv4 address; weft needs one from the network's IPAM")
	}
	if req.Interface.AddressIPv6 != "" {
		return nil, errors.New("weft: IPv6 addresses are not supported yet")
	}
	ip, ipnet, err := net.ParseCIDR(req.Interface.Address)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("weft: endpoint address %q is not an IPv4 CIDR", req.Interface.Address)
	}
	var mac net.HardwareAddr
	resp := &network.CreateEndpointResponse{}
	if req.Interface.MacAddress != "" {
		mac, err = net.ParseMAC(req.Interface.MacAddress)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("weft: MAC address %q is not a 48-bit MAC", req.Interface.MacAddress)
		}
	} else {
		mac = macFor(ip)
		resp.Interface = &network.EndpointInterface{MacAddress: mac.String()}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.networks[req.NetworkID]
	if !ok {
		return nil, fmt.Errorf("weft: network %s is not known on this host", short(req.NetworkID))
	}
	if _, sub, err := net.ParseCIDR(n.Subnet); err == nil && !sub.Contains(ip) {
		return nil, fmt.Errorf("weft: address %s is outside the network's subnet %s", ip, n.Subnet)
	} else if err == nil && ipnet.String() != sub.String() {
		d.log.Warn("endpoint prefix differs from the network's subnet", "endpoint", short(req.EndpointID), "address", req.Interface.Address, "subnet", n.Subnet)
	}
	ep := &Endpoint{ID: req.EndpointID, Address: req.Interface.Address, MAC: mac.String(), IfName: ifName(req.EndpointID), seen: time.Now()}
	prev, existed := n.Endpoints[ep.ID]
	if existed {
		ep.Names = prev.Names // a replayed create keeps what was learned
	}
	n.Endpoints[ep.ID] = ep
	if err := d.saveLocked(); err != nil {
		if existed {
			n.Endpoints[ep.ID] = prev
		} else {
			delete(n.Endpoints, ep.ID)
		}
		return nil, err
	}
	d.publishLocked(n, ep)
	d.log.Info("endpoint created", "network", short(n.ID), "endpoint", short(ep.ID), "address", ep.Address, "mac", ep.MAC)
	return resp, nil
}

// DeleteEndpoint forgets a local endpoint and withdraws it everywhere. It
// is idempotent.
func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers.Withdraw(req.EndpointID)
	n, ep := d.dropInterfaceLocked(req.NetworkID, req.EndpointID)
	if ep == nil {
		return nil
	}
	delete(n.Endpoints, ep.ID)
	if err := d.saveLocked(); err != nil {
		d.log.Error("persist state", "err", err)
	}
	d.log.Info("endpoint deleted", "network", short(n.ID), "endpoint", short(ep.ID))
	d.trigger()
	return nil
}

// endpointLocked finds a local endpoint, or says in one sentence which of
// the two Docker named is unknown.
func (d *Driver) endpointLocked(networkID, endpointID string) (*Network, *Endpoint, error) {
	n, ok := d.networks[networkID]
	if !ok {
		return nil, nil, fmt.Errorf("weft: network %s is not known on this host", short(networkID))
	}
	ep, ok := n.Endpoints[endpointID]
	if !ok {
		return nil, nil, fmt.Errorf("weft: endpoint %s is not known on network %s", short(endpointID), short(networkID))
	}
	return n, ep, nil
}

// EndpointInfo reports what weft knows of an endpoint.
func (d *Driver) EndpointInfo(req *network.InfoRequest) (*network.InfoResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ep, err := d.endpointLocked(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	return &network.InfoResponse{Value: map[string]string{
		"weft.vni":       fmt.Sprint(n.VNI),
		"weft.interface": ep.IfName,
		"weft.mac":       ep.MAC,
	}}, nil
}

// Join creates the endpoint's macvlan child of the network's device and
// hands it to Docker, which moves it into the container. No gateway is
// returned: Docker connects the container to its gateway bridge for
// outbound traffic and published ports.
func (d *Driver) Join(req *network.JoinRequest) (*network.JoinResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ep, err := d.endpointLocked(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil {
		return nil, fmt.Errorf("weft: endpoint %s has a corrupt MAC %q", short(ep.ID), ep.MAC)
	}
	if err := d.dp.CreateInterface(n.VNI, ep.IfName, mac); err != nil {
		return nil, fmt.Errorf("weft: cannot create the container's interface: %w", err)
	}
	ep.Joined = true
	if err := d.saveLocked(); err != nil {
		d.log.Error("persist state", "err", err)
	}
	d.log.Info("endpoint joined", "network", short(n.ID), "endpoint", short(ep.ID), "interface", ep.IfName)
	return &network.JoinResponse{
		InterfaceName: network.InterfaceName{SrcName: ep.IfName, DstPrefix: "eth"},
	}, nil
}

// dropInterfaceLocked removes an endpoint's interface if it is still in
// the host namespace, and returns the endpoint and its network (nil when
// weft does not know it: after a lost state its interface is removed all
// the same, by its derived name).
func (d *Driver) dropInterfaceLocked(networkID, endpointID string) (*Network, *Endpoint) {
	n, ok := d.networks[networkID]
	var ep *Endpoint
	if ok {
		ep, ok = n.Endpoints[endpointID]
	}
	name := ifName(endpointID)
	if ok {
		name = ep.IfName
	}
	if err := d.dp.DeleteInterface(name); err != nil {
		d.log.Warn("delete interface", "endpoint", short(endpointID), "err", err)
	}
	if !ok {
		return nil, nil
	}
	return n, ep
}

// Leave removes the endpoint's interface if Docker left it in the host
// namespace (a container that ended took it with its namespace).
func (d *Driver) Leave(req *network.LeaveRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ep := d.dropInterfaceLocked(req.NetworkID, req.EndpointID)
	if ep == nil {
		return nil
	}
	ep.Joined = false
	if err := d.saveLocked(); err != nil {
		d.log.Error("persist state", "err", err)
	}
	d.log.Info("endpoint left", "network", short(n.ID), "endpoint", short(ep.ID))
	return nil
}

// DiscoverNew is not used by weft: hosts find each other through the mesh.
func (d *Driver) DiscoverNew(*network.DiscoveryNotification) error { return nil }

// DiscoverDelete is not used by weft.
func (d *Driver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }

// ProgramExternalConnectivity is left to Docker's gateway bridge, which
// carries published ports.
func (d *Driver) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return nil
}

// RevokeExternalConnectivity is left to Docker's gateway bridge.
func (d *Driver) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}

// publishAllLocked (re)announces every local endpoint.
func (d *Driver) publishAllLocked() {
	for _, n := range d.networks {
		for _, ep := range n.Endpoints {
			d.publishLocked(n, ep)
		}
	}
}

func (d *Driver) publishLocked(n *Network, ep *Endpoint) {
	if d.vtep == nil {
		return // published by SetVTEP once the underlay address is known
	}
	ip, _, _ := net.ParseCIDR(ep.Address)
	d.peers.Publish(Record{
		Network: n.ID, VNI: n.VNI, Endpoint: ep.ID,
		IP: ip.String(), MAC: ep.MAC, VTEP: d.vtep.String(),
		Names: slices.Clone(ep.Names),
	})
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
			e.Names = slices.Clone(ep.Names)
			c.Endpoints[id] = &e
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Network) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// macFor derives a locally administered MAC from an IPv4 address, so that
// an endpoint keeps its MAC wherever its address goes.
func macFor(ip net.IP) net.HardwareAddr {
	v4 := ip.To4()
	return net.HardwareAddr{0x02, 0x77, v4[0], v4[1], v4[2], v4[3]}
}

// ifName is the host-side name of an endpoint's interface: a short,
// unique prefix that fits IFNAMSIZ.
func ifName(endpointID string) string {
	id := endpointID
	if len(id) > 12 {
		id = id[:12]
	}
	return "wv" + id
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// nopPeers serves a driver that has no mesh.
type nopPeers struct{}

func (nopPeers) Publish(Record)           {}
func (nopPeers) Withdraw(string)          {}
func (nopPeers) Remote() []Record         { return nil }
func (nopPeers) Changes() <-chan struct{} { return nil }
