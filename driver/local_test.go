package driver

import (
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

// In local scope every engine names the network differently; the VNI must
// come from the subnet so that the hosts' networks are one segment.
func TestLocalScopeVNIFromSubnet(t *testing.T) {
	newLocal := func() *Driver {
		cfg := DefaultConfig()
		cfg.Scope = network.LocalScope
		d, err := New(cfg, newFakePlane(), newFakeCatalog(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	create := func(d *Driver, id, subnet string, opts map[string]any) error {
		return d.CreateNetwork(&network.CreateNetworkRequest{
			NetworkID: id,
			Options:   map[string]any{genericKey: opts},
			IPv4Data:  []*network.IPAMData{{Pool: subnet, Gateway: "10.40.0.1/16"}},
		})
	}
	h1, h2 := newLocal(), newLocal()
	if err := create(h1, netA, "10.40.0.0/16", nil); err != nil {
		t.Fatal(err)
	}
	if err := create(h2, netB, "10.40.0.0/16", nil); err != nil {
		t.Fatal(err)
	}
	v1, v2 := h1.Networks()[0].VNI, h2.Networks()[0].VNI
	if v1 != v2 || v1 < MinAutoVNI {
		t.Fatalf("VNIs %d and %d for one subnet on two hosts", v1, v2)
	}
	// A replayed create keeps it; another subnet gets another one.
	if err := create(h1, netA, "10.40.0.0/16", nil); err != nil {
		t.Fatal(err)
	}
	if subnetVNI("10.41.0.0/16") == v1 {
		t.Fatal("two subnets derive one VNI")
	}
	// The same subnet twice on one host would be one segment: refused.
	err := create(h1, netB, "10.40.0.0/16", nil)
	if err == nil || !strings.Contains(err.Error(), OptVNI) {
		t.Fatalf("second network on the same subnet: %v", err)
	}
	// -o weft.vni still wins.
	if err := create(h2, netA, "10.50.0.0/16", map[string]any{OptVNI: "77"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range h2.Networks() {
		if n.ID == netA && n.VNI != 77 {
			t.Fatalf("VNI %d, want 77 from the option", n.VNI)
		}
	}
	// Global scope keeps deriving from the network ID.
	g, _, _ := newTestDriver(t, "")
	if err := createNet(t, g, netA, nil); err != nil {
		t.Fatal(err)
	}
	if got := g.Networks()[0].VNI; got == subnetVNI("10.10.0.0/24") {
		t.Fatalf("global scope VNI %d derived from the subnet", got)
	}
}
