package driver

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/dataplane"
)

// The calls of Docker's remote network driver API. Each either does all it
// says or changes nothing, and answers errors in one sentence a user can
// act on, prefixed "weft:".

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
	v4 := make([]*network.IPAMData, len(req.IPv4Data))
	for i := range req.IPv4Data {
		v4[i] = &req.IPv4Data[i]
	}
	v6 := make([]*network.IPAMData, len(req.IPv6Data))
	for i := range req.IPv6Data {
		v6[i] = &req.IPv6Data[i]
	}
	p, err := parsePool(v4, v6)
	if err != nil {
		return nil, fmt.Errorf("weft: %w", err)
	}
	if p.Subnet6 != "" {
		return nil, errSwarmIPv6
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

// CreateNetwork sets up the network's segment on this host.
func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) error {
	if req.NetworkID == "" {
		return errors.New("weft: CreateNetwork needs a network ID")
	}
	raw, err := genericOptions(req.Options)
	if err != nil {
		return fmt.Errorf("weft: %w", err)
	}
	pool, err := parsePool(req.IPv4Data, req.IPv6Data)
	if err != nil {
		return fmt.Errorf("weft: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, replay := d.networks[req.NetworkID]
	n, err := d.adoptLocked(req.NetworkID, raw, pool)
	if err != nil {
		return fmt.Errorf("weft: %w", err)
	}
	if err := d.saveLocked(); err != nil {
		if !replay {
			d.dropNetworkLocked(n)
			if derr := d.dp.DeleteSegment(n.VNI); derr != nil {
				d.log.Error("undo network device", "network", short(n.ID), "err", derr)
			}
		}
		return err
	}
	d.log.Info("network created", "network", short(n.ID), "vni", n.VNI, "subnet", n.Subnet, "subnet6", n.Subnet6, "mtu", n.MTU)
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
		d.cat.RemoveLocal(id)
	}
	d.changeSourcesLocked(n, nil, slices.Collect(maps.Values(n.Endpoints)))
	d.dropNetworkLocked(n)
	if err := d.saveLocked(); err != nil {
		d.log.Error("persist state", "err", err)
	}
	d.log.Info("network deleted", "network", short(n.ID), "vni", n.VNI)
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
	addr, err := netip.ParsePrefix(req.Interface.Address)
	if err != nil || !addr.Addr().Is4() {
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
		mac = dataplane.MACFor(addr.Addr())
		resp.Interface = &network.EndpointInterface{MacAddress: mac.String()}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.networks[req.NetworkID]
	if !ok {
		return nil, fmt.Errorf("weft: network %s is not known on this host", short(req.NetworkID))
	}
	if sub, err := netip.ParsePrefix(n.Subnet); err == nil && !sub.Contains(addr.Addr()) {
		return nil, fmt.Errorf("weft: address %s is outside the network's subnet %s", addr.Addr(), n.Subnet)
	} else if err == nil && addr.Masked() != sub.Masked() {
		d.log.Warn("endpoint prefix differs from the network's subnet", "endpoint", short(req.EndpointID), "address", req.Interface.Address, "subnet", n.Subnet)
	}
	if err := endpointAddr6(n, req.Interface.AddressIPv6); err != nil {
		return nil, fmt.Errorf("weft: %w", err)
	}
	ep := &Endpoint{ID: req.EndpointID, Address: req.Interface.Address, Address6: req.Interface.AddressIPv6, MAC: mac.String(), IfName: ifName(req.EndpointID), seen: time.Now()}
	prev, existed := n.Endpoints[ep.ID]
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
	var was []*Endpoint
	if existed && (prev.Address != ep.Address || prev.Address6 != ep.Address6 || prev.MAC != ep.MAC) {
		was = append(was, prev)
	}
	d.changeSourcesLocked(n, []*Endpoint{ep}, was)
	d.log.Info("endpoint created", "network", short(n.ID), "endpoint", short(ep.ID), "address", ep.Address, "mac", ep.MAC)
	return resp, nil
}

// DeleteEndpoint forgets a local endpoint and withdraws it everywhere. It
// is idempotent.
func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cat.RemoveLocal(req.EndpointID)
	n, ep := d.dropInterfaceLocked(req.NetworkID, req.EndpointID)
	if ep == nil {
		return nil
	}
	delete(n.Endpoints, ep.ID)
	d.changeSourcesLocked(n, nil, []*Endpoint{ep})
	if err := d.saveLocked(); err != nil {
		d.log.Error("persist state", "err", err)
	}
	d.log.Info("endpoint deleted", "network", short(n.ID), "endpoint", short(ep.ID))
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
