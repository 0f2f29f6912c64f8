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
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/internal/feed"
)

// fakePlane keeps kernel-like tables: per device an FDB (MAC -> VTEPs)
// and a neighbour table (IP -> MAC), written as the kernel would.
type fakePlane struct {
	mu       sync.Mutex
	networks map[uint32]dataplane.Segment
	ifaces   map[string]uint32
	fdb      map[uint32]map[string]map[string]bool // vni -> mac -> vteps
	neigh    map[uint32]map[string]string          // vni -> ip -> mac
	flood    map[uint32]map[string]bool            // vni -> vteps (multicast_test.go)
	// calls counts the writes by method.
	calls    map[string]int
	failNext error
	// repaired adds up what SetRemotes had to change.
	repaired dataplane.Repair
}

func newFakePlane() *fakePlane {
	return &fakePlane{
		networks: map[uint32]dataplane.Segment{}, ifaces: map[string]uint32{},
		fdb: map[uint32]map[string]map[string]bool{}, neigh: map[uint32]map[string]string{},
		calls: map[string]int{},
	}
}

func (f *fakePlane) fail() error {
	err := f.failNext
	f.failNext = nil
	return err
}

func (f *fakePlane) EnsureSegment(n dataplane.Segment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["EnsureSegment"]++
	if err := f.fail(); err != nil {
		return err
	}
	f.networks[n.VNI] = n
	if f.fdb[n.VNI] == nil {
		f.fdb[n.VNI] = map[string]map[string]bool{}
		f.neigh[n.VNI] = map[string]string{}
	}
	return nil
}

func (f *fakePlane) DeleteSegment(vni uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.networks, vni)
	delete(f.fdb, vni)
	delete(f.neigh, vni)
	for name, v := range f.ifaces {
		if v == vni {
			delete(f.ifaces, name)
		}
	}
	return nil
}

func (f *fakePlane) Segments() ([]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint32
	for vni := range f.networks {
		out = append(out, vni)
	}
	return out, nil
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

func (f *fakePlane) setLocked(vni uint32, r dataplane.RemoteEndpoint) error {
	if _, ok := f.networks[vni]; !ok {
		return fmt.Errorf("no device for VNI %d", vni)
	}
	// A static FDB entry per MAC: NeighSet replaces the destination.
	f.fdb[vni][r.MAC.String()] = map[string]bool{r.VTEP.String(): true}
	f.neigh[vni][r.IP.String()] = r.MAC.String()
	if r.IP6 != nil {
		f.neigh[vni][r.IP6.String()] = r.MAC.String()
	}
	return nil
}

func (f *fakePlane) SetRemote(vni uint32, r dataplane.RemoteEndpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["SetRemote"]++
	return f.setLocked(vni, r)
}

func (f *fakePlane) DeleteRemote(vni uint32, r dataplane.RemoteEndpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["DeleteRemote"]++
	if _, ok := f.networks[vni]; !ok {
		return fmt.Errorf("no device for VNI %d", vni)
	}
	if r.MAC != nil && r.VTEP != nil {
		delete(f.fdb[vni][r.MAC.String()], r.VTEP.String())
		if len(f.fdb[vni][r.MAC.String()]) == 0 {
			delete(f.fdb[vni], r.MAC.String())
		}
	}
	for _, ip := range []net.IP{r.IP, r.IP6} {
		if ip != nil {
			delete(f.neigh[vni], ip.String())
		}
	}
	return nil
}

func (f *fakePlane) SetRemotes(vni uint32, want []dataplane.RemoteEndpoint) (dataplane.Repair, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["SetRemotes"]++
	if _, ok := f.networks[vni]; !ok {
		return dataplane.Repair{}, fmt.Errorf("no device for VNI %d", vni)
	}
	var rep dataplane.Repair
	wantFDB, wantNeigh := map[string]string{}, map[string]string{}
	for _, r := range want {
		wantFDB[r.MAC.String()] = r.VTEP.String()
		wantNeigh[r.IP.String()] = r.MAC.String()
		if r.IP6 != nil {
			wantNeigh[r.IP6.String()] = r.MAC.String()
		}
	}
	for mac, vteps := range f.fdb[vni] {
		if v, ok := wantFDB[mac]; !ok || !vteps[v] || len(vteps) != 1 {
			delete(f.fdb[vni], mac)
			rep.FDBRemoved++
		}
	}
	for ip, mac := range f.neigh[vni] {
		if wantNeigh[ip] != mac {
			delete(f.neigh[vni], ip)
			rep.NeighRemoved++
		}
	}
	for mac, vtep := range wantFDB {
		if !f.fdb[vni][mac][vtep] {
			f.fdb[vni][mac] = map[string]bool{vtep: true}
			rep.FDBAdded++
		}
	}
	for ip, mac := range wantNeigh {
		if f.neigh[vni][ip] != mac {
			f.neigh[vni][ip] = mac
			rep.NeighAdded++
		}
	}
	f.repaired.FDBAdded += rep.FDBAdded
	f.repaired.FDBRemoved += rep.FDBRemoved
	f.repaired.NeighAdded += rep.NeighAdded
	f.repaired.NeighRemoved += rep.NeighRemoved
	return rep, nil
}

func (f *fakePlane) Remotes(vni uint32) ([]dataplane.RemoteEndpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []dataplane.RemoteEndpoint
	ip6 := map[string]net.IP{}
	for ip, mac := range f.neigh[vni] {
		if a := net.ParseIP(ip); a.To4() == nil {
			ip6[mac] = a
		}
	}
	for ip, mac := range f.neigh[vni] {
		if net.ParseIP(ip).To4() == nil {
			continue
		}
		for vtep := range f.fdb[vni][mac] {
			hw, _ := net.ParseMAC(mac)
			out = append(out, dataplane.RemoteEndpoint{IP: net.ParseIP(ip), IP6: ip6[mac], MAC: hw, VTEP: net.ParseIP(vtep)})
		}
	}
	return out, nil
}

// table renders a device's entries as sorted "ip mac vtep" lines.
func (f *fakePlane) table(vni uint32) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for ip, mac := range f.neigh[vni] {
		vteps := slices.Sorted(mapsKeys(f.fdb[vni][mac]))
		out = append(out, ip+" "+mac+" "+strings.Join(vteps, ","))
	}
	for mac := range f.fdb[vni] {
		found := false
		for _, m := range f.neigh[vni] {
			found = found || m == mac
		}
		if !found {
			out = append(out, "- "+mac+" "+strings.Join(slices.Sorted(mapsKeys(f.fdb[vni][mac])), ","))
		}
	}
	slices.Sort(out)
	return out
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// fakeCatalog records what the driver publishes; tests feed it events.
type fakeCatalog struct {
	mu        sync.Mutex
	published map[string]catalog.Record
	synced    bool
	events    feed.Feed[catalog.Event]
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{published: map[string]catalog.Record{}, synced: true}
}

func (c *fakeCatalog) SetLocal(r catalog.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.published[r.Endpoint] = r
}

func (c *fakeCatalog) RemoveLocal(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.published, id)
}

func (c *fakeCatalog) record(id string) (catalog.Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.published[id]
	return r, ok
}

func (c *fakeCatalog) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.published)
}

func (c *fakeCatalog) Subscribe() *feed.Sub[catalog.Event] { return c.events.Subscribe() }

func (c *fakeCatalog) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// fakeUnderlay has a settable MTU.
type fakeUnderlay struct {
	mu      sync.Mutex
	mtu     int
	changed chan struct{}
}

func (u *fakeUnderlay) MTU() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.mtu
}

func (u *fakeUnderlay) Changed() <-chan struct{} { return u.changed }

const (
	netA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	netB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	ep1  = "1111111111111111111111111111111111111111111111111111111111111111"
	ep2  = "2222222222222222222222222222222222222222222222222222222222222222"
)

func newTestDriver(t *testing.T, dir string) (*Driver, *fakePlane, *fakeCatalog) {
	t.Helper()
	dp, cat := newFakePlane(), newFakeCatalog()
	cfg := DefaultConfig()
	cfg.StateDir = dir
	d, err := New(cfg, dp, cat, &fakeUnderlay{mtu: 9000, changed: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return d, dp, cat
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
	if _, err := New(Config{Scope: "galactic"}, newFakePlane(), newFakeCatalog(), nil); err == nil {
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
		"ipv6 not v6":    {NetworkID: netA, IPv4Data: []network.IPAMData{{Pool: "10.0.0.0/24"}}, IPv6Data: []network.IPAMData{{Pool: "10.1.0.0/24"}}},
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
	d, dp, cat := newTestDriver(t, dir)
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
	if r, _ := cat.record(ep1); r.IP != "10.10.0.5" || r.VNI != 300 || r.MAC != "02:77:0a:0a:00:05" || r.Network != netA {
		t.Fatalf("published record = %+v", r)
	}
	for name, req := range map[string]*network.CreateEndpointRequest{
		"unknown network": {NetworkID: netB, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.10.0.7/24"}},
		"no address":      {NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{}},
		"outside subnet":  {NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.99.0.7/24"}},
		"ipv6 on v4 net":  {NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.10.0.7/24", AddressIPv6: "fd00::7/64"}},
		"bad mac":         {NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.10.0.7/24", MacAddress: "zz"}},
		"no interface":    {NetworkID: netA, EndpointID: "x"},
	} {
		if _, err := d.CreateEndpoint(req); err == nil {
			t.Errorf("%s: CreateEndpoint succeeded", name)
		}
	}
	if _, ok := cat.record("x"); ok {
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
	d2, dp2, cat2 := newTestDriver(t, dir)
	if _, ok := dp2.networks[300]; !ok {
		t.Fatal("restarted driver did not ensure the network's device")
	}
	if cat2.count() != 2 {
		t.Fatalf("restarted driver published %d endpoints, want 2", cat2.count())
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
	if _, ok := cat.record(ep1); ok {
		t.Fatal("deleted endpoint still published")
	}
	if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netB, EndpointID: ep1}); err != nil {
		t.Fatalf("DeleteEndpoint on unknown network: %v", err)
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

// TestSyncEngineDropsNetworksTheEngineLost: a network Docker removed while
// the plugin was down (its last container gone, then the network) is not
// listed by the engine any more; past the grace it goes, with its
// endpoints' interfaces and its device. One still listed stays.
func TestSyncEngineDropsNetworksTheEngineLost(t *testing.T) {
	d, dp, _ := newTestDriver(t, "")
	listed := EngineNetwork{ID: netA, Options: map[string]string{OptVNI: "320"}, Subnet: "10.10.0.0/24", Gateway: "10.10.0.1",
		Endpoints: []EngineEndpoint{{ID: ep1, Address: "10.10.0.5/24", MAC: "02:77:0a:0a:00:05"}}}
	gone := EngineNetwork{ID: netB, Options: map[string]string{OptVNI: "321"}, Subnet: "10.11.0.0/24", Gateway: "10.11.0.1",
		Endpoints: []EngineEndpoint{{ID: ep2, Address: "10.11.0.5/24", MAC: "02:77:0a:0b:00:05"}}}
	if n, e, _ := d.SyncEngine([]EngineNetwork{listed, gone}, time.Hour); n != 2 || e != 2 {
		t.Fatalf("adopted %d networks and %d endpoints, want 2 and 2", n, e)
	}
	// Within the grace an unlisted network stays (the engine may not list
	// it yet).
	if _, _, dropped := d.SyncEngine([]EngineNetwork{listed}, time.Hour); dropped != 0 || len(d.Networks()) != 2 {
		t.Fatalf("dropped %d endpoints and kept %d networks within the grace", dropped, len(d.Networks()))
	}
	// Once listed again, an earlier absence counts for nothing (an engine
	// that restarted lists it again once its node re-attaches it).
	if _, _, dropped := d.SyncEngine([]EngineNetwork{listed, gone}, 0); dropped != 0 {
		t.Fatalf("dropped %d endpoints of listed networks", dropped)
	}
	// Two passes find it unlisted: the first only notes it, the second
	// drops it.
	if _, _, dropped := d.SyncEngine([]EngineNetwork{listed}, 0); dropped != 0 || len(d.Networks()) != 2 {
		t.Fatalf("dropped %d endpoints on the first pass that missed the network", dropped)
	}
	if _, _, dropped := d.SyncEngine([]EngineNetwork{listed}, 0); dropped != 1 {
		t.Fatalf("dropped %d endpoints, want the lost network's 1", dropped)
	}
	if got := d.Networks(); len(got) != 1 || got[0].ID != netA {
		t.Fatalf("networks after the sync: %+v, want only %s", got, netA)
	}
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if _, ok := dp.networks[321]; ok {
		t.Fatal("the lost network's device is still there")
	}
	if _, ok := dp.networks[320]; !ok {
		t.Fatal("the listed network's device went")
	}
}
