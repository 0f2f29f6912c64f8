package driver

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/dataplane"
)

// fakePlane records the kernel state the driver asked for.
type fakePlane struct {
	mu       sync.Mutex
	networks map[uint32]dataplane.Segment
	ifaces   map[string]uint32
	peers    map[uint32][]dataplane.RemoteEndpoint
	failNext error
}

func newFakePlane() *fakePlane {
	return &fakePlane{networks: map[uint32]dataplane.Segment{}, ifaces: map[string]uint32{}, peers: map[uint32][]dataplane.RemoteEndpoint{}}
}

func (f *fakePlane) fail() error {
	err := f.failNext
	f.failNext = nil
	return err
}

func (f *fakePlane) EnsureSegment(n dataplane.Segment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail(); err != nil {
		return err
	}
	f.networks[n.VNI] = n
	return nil
}

func (f *fakePlane) DeleteSegment(vni uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.networks, vni)
	for name, v := range f.ifaces {
		if v == vni {
			delete(f.ifaces, name)
		}
	}
	return nil
}

func (f *fakePlane) CreateInterface(vni uint32, name string, mac net.HardwareAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.networks[vni]; !ok {
		return fmt.Errorf("no device for VNI %d", vni)
	}
	f.ifaces[name] = vni
	return nil
}

func (f *fakePlane) DeleteInterface(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ifaces, name)
	return nil
}

func (f *fakePlane) Remotes(vni uint32) ([]dataplane.RemoteEndpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers[vni]), nil
}

func (f *fakePlane) SetRemotes(vni uint32, peers []dataplane.RemoteEndpoint) (dataplane.Repair, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers[vni] = slices.Clone(peers)
	return dataplane.Repair{}, nil
}

// fakePeers is an in-memory mesh view.
type fakePeers struct {
	mu        sync.Mutex
	published map[string]Record
	remote    []Record
	ch        chan struct{}
}

func newFakePeers() *fakePeers {
	return &fakePeers{published: map[string]Record{}, ch: make(chan struct{}, 1)}
}

func (p *fakePeers) Publish(r Record) { p.mu.Lock(); p.published[r.Endpoint] = r; p.mu.Unlock() }
func (p *fakePeers) Withdraw(id string) {
	p.mu.Lock()
	delete(p.published, id)
	p.mu.Unlock()
}
func (p *fakePeers) Remote() []Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.remote)
}
func (p *fakePeers) Changes() <-chan struct{} { return p.ch }

const (
	netA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	netB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	ep1  = "1111111111111111111111111111111111111111111111111111111111111111"
	ep2  = "2222222222222222222222222222222222222222222222222222222222222222"
)

func newTestDriver(t *testing.T, dir string) (*Driver, *fakePlane, *fakePeers) {
	t.Helper()
	dp, peers := newFakePlane(), newFakePeers()
	cfg := DefaultConfig()
	cfg.StateDir = dir
	cfg.VTEP = net.ParseIP("198.18.0.1")
	cfg.UnderlayMTU = func() int { return 9000 }
	d, err := New(cfg, dp, peers)
	if err != nil {
		t.Fatal(err)
	}
	return d, dp, peers
}

func createNet(t *testing.T, d *Driver, id string, opts map[string]any) error {
	t.Helper()
	return d.CreateNetwork(&network.CreateNetworkRequest{
		NetworkID: id,
		Options:   map[string]any{genericKey: opts},
		IPv4Data:  []*network.IPAMData{{Pool: "10.10.0.0/24", Gateway: "10.10.0.1/24"}},
	})
}

func TestCapabilities(t *testing.T) {
	d, _, _ := newTestDriver(t, "")
	c, err := d.GetCapabilities()
	if err != nil || c.Scope != "global" || c.ConnectivityScope != "global" {
		t.Fatalf("GetCapabilities = %+v, %v", c, err)
	}
	if _, err := New(Config{Scope: "galactic"}, newFakePlane(), nil); err == nil {
		t.Fatal("New accepted an unknown scope")
	}
}

func TestAllocateNetwork(t *testing.T) {
	d, _, _ := newTestDriver(t, "")
	res, err := d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: netA, Options: map[string]string{OptMTU: "1400"}, IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Options[OptMTU] != "1400" || res.Options[OptVNI] == "" {
		t.Fatalf("options = %v", res.Options)
	}
	again, _ := d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: netA, IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}})
	if again.Options[OptVNI] != res.Options[OptVNI] {
		t.Fatalf("VNI not deterministic: %s then %s", res.Options[OptVNI], again.Options[OptVNI])
	}
	res, err = d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: netB, Options: map[string]string{OptVNI: "77"}, IPv4Data: []network.IPAMData{{Pool: "10.0.1.0/24"}}})
	if err != nil || res.Options[OptVNI] != "77" {
		t.Fatalf("chosen VNI: %v, %v", res, err)
	}
	// A VNI handed out once is refused to another network, although
	// neither network runs on this host, and free again once freed.
	if _, err := d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: "cccc", Options: map[string]string{OptVNI: "77"}, IPv4Data: []network.IPAMData{{Pool: "10.0.2.0/24"}}}); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("VNI 77 given twice: %v", err)
	}
	if err := d.FreeNetwork(&network.FreeNetworkRequest{NetworkID: netB}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: "cccc", Options: map[string]string{OptVNI: "77"}, IPv4Data: []network.IPAMData{{Pool: "10.0.2.0/24"}}}); err != nil {
		t.Fatalf("VNI 77 after FreeNetwork: %v", err)
	}
	for name, req := range map[string]*network.AllocateNetworkRequest{
		"unknown option": {NetworkID: netA, Options: map[string]string{"weft.vnl": "5"}, IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}},
		"bad vni":        {NetworkID: netA, Options: map[string]string{OptVNI: "0"}, IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}},
		"huge vni":       {NetworkID: netA, Options: map[string]string{OptVNI: "16777216"}, IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}},
		"bad mtu":        {NetworkID: netA, Options: map[string]string{OptMTU: "jumbo"}, IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}},
		"ipv6":           {NetworkID: netA, IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}, IPv6Data: []network.IPAMData{{Pool: "fd00::/64"}}},
		"no pool":        {NetworkID: netA},
		"no id":          {IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}},
	} {
		if _, err := d.AllocateNetwork(req); err == nil {
			t.Errorf("%s: AllocateNetwork succeeded", name)
		} else if !strings.HasPrefix(err.Error(), "weft: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q is not one weft sentence", name, err)
		}
	}
}

func TestCreateNetwork(t *testing.T) {
	d, dp, _ := newTestDriver(t, t.TempDir())
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	if got := dp.networks[300]; got.MTU != 9000-dataplane.Overhead || got.Port != 4790 {
		t.Fatalf("device = %+v, want MTU %d port 4790", got, 9000-dataplane.Overhead)
	}
	// The same VNI for another network is refused, and nothing changes.
	if err := createNet(t, d, netB, map[string]any{OptVNI: "300"}); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("duplicate VNI: %v", err)
	}
	if len(d.Networks()) != 1 {
		t.Fatalf("networks after refused create: %d", len(d.Networks()))
	}
	if err := createNet(t, d, netB, map[string]any{OptMTU: "1300"}); err != nil {
		t.Fatal(err)
	}
	var vniB uint32
	for _, n := range d.Networks() {
		if n.ID == netB {
			vniB = n.VNI
		}
	}
	if vniB < MinAutoVNI || dp.networks[vniB].MTU != 1300 {
		t.Fatalf("network B: VNI %d device %+v", vniB, dp.networks[vniB])
	}
	// Bad input leaves nothing behind.
	before := len(dp.networks)
	for name, opts := range map[string]map[string]any{
		"unknown":  {"mtu": "1400"},
		"bad mtu":  {OptMTU: "40"},
		"not text": {OptMTU: []any{1}},
	} {
		if err := createNet(t, d, "cccc", opts); err == nil {
			t.Errorf("%s: CreateNetwork succeeded", name)
		}
	}
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: "cccc"}); err == nil {
		t.Error("CreateNetwork without a pool succeeded")
	}
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: "cccc", IPv4Data: []*network.IPAMData{{Pool: "nonsense"}}}); err == nil {
		t.Error("CreateNetwork with a bad pool succeeded")
	}
	dp.failNext = fmt.Errorf("kernel says no")
	if err := createNet(t, d, "cccc", nil); err == nil {
		t.Error("CreateNetwork succeeded although the device failed")
	}
	if len(dp.networks) != before || len(d.Networks()) != 2 {
		t.Fatalf("refused creates changed state: %d devices, %d networks", len(dp.networks), len(d.Networks()))
	}
	if err := d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netB}); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.networks[vniB]; ok {
		t.Fatal("device left after DeleteNetwork")
	}
	if err := d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netB}); err != nil {
		t.Fatalf("second DeleteNetwork: %v", err)
	}
}

func TestEndpointLifecycle(t *testing.T) {
	dir := t.TempDir()
	d, dp, peers := newTestDriver(t, dir)
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	// Docker leaves the MAC empty: weft picks it and returns only it.
	res, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: ep1, Interface: &network.EndpointInterface{Address: "10.10.0.5/24"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Interface == nil || res.Interface.MacAddress != "02:77:0a:0a:00:05" || res.Interface.Address != "" {
		t.Fatalf("CreateEndpoint response = %+v", res.Interface)
	}
	// Docker gives a MAC: nothing to return.
	res, err = d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: ep2, Interface: &network.EndpointInterface{Address: "10.10.0.6/24", MacAddress: "02:42:0a:0a:00:06"}})
	if err != nil || res.Interface != nil {
		t.Fatalf("CreateEndpoint with MAC = %+v, %v", res, err)
	}
	if r := peers.published[ep1]; r.IP != "10.10.0.5" || r.VTEP != "198.18.0.1" || r.VNI != 300 || r.MAC != "02:77:0a:0a:00:05" {
		t.Fatalf("published record = %+v", r)
	}
	for name, req := range map[string]*network.CreateEndpointRequest{
		"unknown network": {NetworkID: netB, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.10.0.7/24"}},
		"no address":      {NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{}},
		"outside subnet":  {NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.99.0.7/24"}},
		"ipv6":            {NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.10.0.7/24", AddressIPv6: "fd00::7/64"}},
		"bad mac":         {NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.10.0.7/24", MacAddress: "zz"}},
		"no interface":    {NetworkID: netA, EndpointID: "x"},
	} {
		if _, err := d.CreateEndpoint(req); err == nil {
			t.Errorf("%s: CreateEndpoint succeeded", name)
		}
	}
	if _, ok := peers.published["x"]; ok {
		t.Fatal("a refused endpoint was published")
	}

	j, err := d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: ep1, SandboxKey: "/var/run/docker/netns/x"})
	if err != nil {
		t.Fatal(err)
	}
	if j.InterfaceName.SrcName != "wv111111111111" || j.InterfaceName.DstPrefix != "eth" || j.Gateway != "" {
		t.Fatalf("Join = %+v", j)
	}
	if dp.ifaces["wv111111111111"] != 300 {
		t.Fatalf("interface not created: %v", dp.ifaces)
	}
	if _, err := d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: "nope"}); err == nil {
		t.Fatal("Join of an unknown endpoint succeeded")
	}
	info, err := d.EndpointInfo(&network.InfoRequest{NetworkID: netA, EndpointID: ep1})
	if err != nil || info.Value["weft.vni"] != "300" {
		t.Fatalf("EndpointInfo = %+v, %v", info, err)
	}

	// A restarted driver finds everything in the state directory and
	// publishes its endpoints again.
	d2, dp2, peers2 := newTestDriver(t, dir)
	if _, ok := dp2.networks[300]; !ok {
		t.Fatal("restarted driver did not ensure the network's device")
	}
	if len(peers2.published) != 2 {
		t.Fatalf("restarted driver published %d endpoints, want 2", len(peers2.published))
	}
	if _, err := d2.Join(&network.JoinRequest{NetworkID: netA, EndpointID: ep2}); err != nil {
		t.Fatalf("Join after restart: %v", err)
	}

	if err := d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: ep1}); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.ifaces["wv111111111111"]; ok {
		t.Fatal("interface left after Leave")
	}
	for range 2 {
		if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: ep1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := peers.published[ep1]; ok {
		t.Fatal("deleted endpoint still published")
	}
	if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netB, EndpointID: ep1}); err != nil {
		t.Fatalf("DeleteEndpoint on unknown network: %v", err)
	}
}

func TestReconcileProgramsRemotePeersPerVNI(t *testing.T) {
	d, dp, peers := newTestDriver(t, "")
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	peers.remote = []Record{
		{Network: netA, VNI: 300, Endpoint: "r1", IP: "10.10.0.20", MAC: "02:77:0a:0a:00:14", VTEP: "198.18.0.2"},
		{Network: netB, VNI: 301, Endpoint: "r2", IP: "10.10.0.21", MAC: "02:77:0a:0a:00:15", VTEP: "198.18.0.2"},
		{Network: netA, VNI: 300, Endpoint: "bad", IP: "nonsense", MAC: "02:77:0a:0a:00:16", VTEP: "198.18.0.3"},
	}
	d.Reconcile()
	got := dp.peers[300]
	if len(got) != 1 || got[0].IP.String() != "10.10.0.20" || got[0].VTEP.String() != "198.18.0.2" {
		t.Fatalf("peers of VNI 300 = %v", got)
	}
	if _, ok := dp.peers[301]; ok {
		t.Fatal("peers programmed for a VNI this host does not have")
	}
	peers.remote = nil
	d.Reconcile()
	if len(dp.peers[300]) != 0 {
		t.Fatalf("withdrawn peers still programmed: %v", dp.peers[300])
	}
}

func TestCorruptStateIsSetAside(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _, _ := newTestDriver(t, dir)
	if len(d.Networks()) != 0 {
		t.Fatal("networks from a corrupt file")
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile+".corrupt")); err != nil {
		t.Fatalf("corrupt file not kept aside: %v", err)
	}
	if err := createNet(t, d, netA, nil); err != nil {
		t.Fatal(err)
	}
	d2, _, _ := newTestDriver(t, dir)
	if len(d2.Networks()) != 1 {
		t.Fatal("state written after a corrupt file is not readable")
	}
}

// syncingPeers is a mesh view that is not complete yet.
type syncingPeers struct {
	*fakePeers
	synced bool
}

func (p *syncingPeers) Synced() bool { return p.synced }

func TestReconcileBeforeSyncOnlyAdds(t *testing.T) {
	dp := newFakePlane()
	peers := &syncingPeers{fakePeers: newFakePeers()}
	cfg := DefaultConfig()
	cfg.VTEP = net.ParseIP("198.18.0.1")
	d, err := New(cfg, dp, peers)
	if err != nil {
		t.Fatal(err)
	}
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300"}); err != nil {
		t.Fatal(err)
	}
	old := dataplane.RemoteEndpoint{IP: net.ParseIP("10.10.0.20"), MAC: net.HardwareAddr{2, 0x77, 10, 10, 0, 20}, VTEP: net.ParseIP("198.18.0.2")}
	dp.peers[300] = []dataplane.RemoteEndpoint{old} // left in the kernel by the previous run
	peers.remote = []Record{{Network: netA, VNI: 300, Endpoint: "r2", IP: "10.10.0.21", MAC: "02:77:0a:0a:00:15", VTEP: "198.18.0.3"}}
	d.Reconcile()
	if got := dp.peers[300]; len(got) != 2 {
		t.Fatalf("before sync: %v, want the kept entry and the new one", got)
	}
	peers.synced = true
	d.Reconcile()
	if got := dp.peers[300]; len(got) != 1 || got[0].IP.String() != "10.10.0.21" {
		t.Fatalf("after sync: %v, want only the mesh's entry", got)
	}
}

// TestSyncEngineAdoptsOnlyNetworksInUse: a swarm manager's engine lists
// every swarm network; only those with an endpoint here are adopted.
func TestSyncEngineAdoptsOnlyNetworksInUse(t *testing.T) {
	d, dp, _ := newTestDriver(t, "")
	nets := []EngineNetwork{
		{ID: netA, Options: map[string]string{OptVNI: "310"}, Subnet: "10.10.0.0/24", Gateway: "10.10.0.1",
			Endpoints: []EngineEndpoint{{ID: ep1, Address: "10.10.0.5/24", MAC: "02:77:0a:0a:00:05"}}},
		{ID: netB, Options: map[string]string{OptVNI: "311"}, Subnet: "10.11.0.0/24", Gateway: "10.11.0.1"},
	}
	if n, e, _ := d.SyncEngine(nets, 0); n != 1 || e != 1 {
		t.Fatalf("adopted %d networks and %d endpoints, want 1 and 1", n, e)
	}
	if _, ok := dp.networks[311]; ok {
		t.Fatal("a network with no endpoint here was adopted")
	}
	if _, ok := dp.networks[310]; !ok {
		t.Fatal("the network in use was not adopted")
	}
}
