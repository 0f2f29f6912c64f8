package driver

import (
	"slices"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/catalog"
)

func createDualStack(t *testing.T, d *Driver) {
	t.Helper()
	err := d.CreateNetwork(&network.CreateNetworkRequest{
		NetworkID: netA,
		Options:   map[string]any{genericKey: map[string]any{OptVNI: "300"}},
		IPv4Data:  []*network.IPAMData{{Pool: "10.10.0.0/24", Gateway: "10.10.0.1/24"}},
		IPv6Data:  []*network.IPAMData{{Pool: "fd00:10::/64", Gateway: "fd00:10::1/64"}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A dual-stack network: its IPv6 pool is kept and announced (the name
// server listens on its IPv6 gateway), a local endpoint's IPv6 address is
// published in its record and listed as a source, and bad IPv6 input is
// refused in one sentence.
func TestDualStackNetwork(t *testing.T) {
	d, _, cat := newTestDriver(t, "")
	src := newFakeSources()
	d.cfg.Sources = src
	events := d.SubscribeNetworks()
	defer events.Close()
	createDualStack(t, d)
	<-events.Ready()
	evs := events.Take()
	if len(evs) != 1 || evs[0].Subnet6.String() != "fd00:10::/64" || evs[0].Gateway6.String() != "fd00:10::1" {
		t.Fatalf("network events %+v, want the IPv6 subnet and gateway", evs)
	}
	d.repair(false)
	if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: ep1,
		Interface: &network.EndpointInterface{Address: "10.10.0.5/24", AddressIPv6: "fd00:10::5/64"}}); err != nil {
		t.Fatal(err)
	}
	if r, ok := cat.record(ep1); !ok || r.IP != "10.10.0.5" || r.IP6 != "fd00:10::5" {
		t.Fatalf("published %+v, want IPv4 and IPv6 addresses", r)
	}
	local, _ := src.held()
	if !slices.ContainsFunc(local, func(s string) bool { return strings.Contains(s, "fd00:10::5") }) {
		t.Fatalf("local sources %v lack the IPv6 address", local)
	}
	// An endpoint with an IPv4 address only is fine on it.
	if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: ep2,
		Interface: &network.EndpointInterface{Address: "10.10.0.6/24"}}); err != nil {
		t.Fatal(err)
	}
	if r, _ := cat.record(ep2); r.IP6 != "" {
		t.Fatalf("an IPv4-only endpoint published IPv6 %q", r.IP6)
	}
	for name, tc := range map[string]struct {
		req  *network.CreateEndpointRequest
		want string
	}{
		"outside": {&network.CreateEndpointRequest{NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.10.0.7/24", AddressIPv6: "fd00:99::7/64"}},
			"weft: IPv6 address fd00:99::7 is outside the network's subnet fd00:10::/64"},
		"not v6": {&network.CreateEndpointRequest{NetworkID: netA, EndpointID: "x", Interface: &network.EndpointInterface{Address: "10.10.0.7/24", AddressIPv6: "10.10.0.8/24"}},
			`weft: endpoint IPv6 address "10.10.0.8/24" is not an IPv6 CIDR`},
	} {
		if _, err := d.CreateEndpoint(tc.req); err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netB, IPv4Data: []*network.IPAMData{{Pool: "10.11.0.0/24"}},
		IPv6Data: []*network.IPAMData{{Pool: "fd00:11::/64", Gateway: "fd00:12::1/64"}}}); err == nil ||
		err.Error() != `weft: IPv6 gateway "fd00:12::1/64" is not an address of subnet fd00:11::/64` {
		t.Fatalf("gateway outside the IPv6 subnet: %v", err)
	}
}

// A remote endpoint's IPv6 address is programmed with it (a second
// neighbour entry to its MAC), listed as its host's source, moved and
// removed with it; one outside the IPv6 subnet, or on an IPv4-only
// network, is refused with the record.
func TestDualStackRemotes(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	src := newFakeSources()
	d.cfg.Sources = src
	createDualStack(t, d)
	d.repair(false)
	step := func(evs ...catalog.Event) {
		t.Helper()
		cat.events.Publish(evs...)
		d.apply(d.sub.Take())
	}
	r1 := rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")
	r1.IP6 = "fd00:10::20"
	step(catalog.Event{Kind: catalog.Added, Record: r1})
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2", "fd00:10::20 02:77:0a:0a:00:14 198.18.0.2")
	_, remote := src.held()
	if !slices.ContainsFunc(remote, func(s string) bool { return strings.Contains(s, "fd00:10::20 via 198.18.0.2") }) {
		t.Fatalf("remote sources %v lack the IPv6 address", remote)
	}
	// Its IPv6 address changes: the old entry goes.
	r1b := r1
	r1b.IP6 = "fd00:10::21"
	step(catalog.Event{Kind: catalog.Updated, Old: r1, Record: r1b})
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2", "fd00:10::21 02:77:0a:0a:00:14 198.18.0.2")
	// The repair agrees.
	d.repair(false)
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 198.18.0.2", "fd00:10::21 02:77:0a:0a:00:14 198.18.0.2")
	step(catalog.Event{Kind: catalog.Removed, Record: r1b})
	waitTable(t, dp, 300)

	bad := rec("h3", "bad", 300, "10.10.0.30", "02:77:0a:0a:00:1e", "198.18.0.3")
	bad.IP6 = "fd00:99::30"
	step(catalog.Event{Kind: catalog.Added, Record: bad})
	d.repair(false)
	waitTable(t, dp, 300)
}

// Swarm's leader passes a dual-stack network's IPv6 pool among the IPv4
// ones (in either order): AllocateNetwork sees it there, and refuses the
// network in one sentence (swarm gives each container one address);
// parsePool takes it as the IPv6 pool.
func TestAllocateDualStackFromSwarm(t *testing.T) {
	d, _, _ := newTestDriver(t, "")
	for i, pools := range [][]network.IPAMData{
		{{Pool: "fd00:10::/64"}, {Pool: "10.10.0.0/24"}},
		{{Pool: "10.10.0.0/24"}, {Pool: "fd00:10::/64"}},
	} {
		if _, err := d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: netA, IPv4Data: pools}); err != errSwarmIPv6 {
			t.Fatalf("order %d: %v, want %v", i, err, errSwarmIPv6)
		}
	}
	if strings.Contains(errSwarmIPv6.Error(), "\n") || !strings.HasPrefix(errSwarmIPv6.Error(), "weft: ") {
		t.Fatal("the refusal is not one weft sentence")
	}
	p, err := parsePool([]*network.IPAMData{{Pool: "fd00:10::/64", Gateway: "fd00:10::1/64"}, {Pool: "10.10.0.0/24", Gateway: "10.10.0.1/24"}}, nil)
	if err != nil || p.Subnet != "10.10.0.0/24" || p.Gateway != "10.10.0.1" || p.Subnet6 != "fd00:10::/64" || p.Gateway6 != "fd00:10::1" {
		t.Fatalf("parsePool: %+v, %v", p, err)
	}
}
