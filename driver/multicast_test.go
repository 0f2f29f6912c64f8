package driver

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
)

// The fake's flood lists: as the kernel's, per device, gone with it.

func (f *fakePlane) floodOf(vni uint32) (map[string]bool, error) {
	if _, ok := f.networks[vni]; !ok {
		delete(f.flood, vni)
		return nil, fmt.Errorf("no device for VNI %d", vni)
	}
	if f.flood == nil {
		f.flood = map[uint32]map[string]bool{}
	}
	if f.flood[vni] == nil {
		f.flood[vni] = map[string]bool{}
	}
	return f.flood[vni], nil
}

func (f *fakePlane) AddFlood(vni uint32, vtep net.IP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["AddFlood"]++
	l, err := f.floodOf(vni)
	if err != nil {
		return err
	}
	l[vtep.String()] = true
	return nil
}

func (f *fakePlane) DeleteFlood(vni uint32, vtep net.IP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["DeleteFlood"]++
	if l, err := f.floodOf(vni); err == nil {
		delete(l, vtep.String())
	}
	return nil
}

func (f *fakePlane) SetFlood(vni uint32, vteps []net.IP) (dataplane.FloodRepair, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["SetFlood"]++
	var rep dataplane.FloodRepair
	l, err := f.floodOf(vni)
	if err != nil {
		return rep, err
	}
	want := map[string]bool{}
	for _, v := range vteps {
		want[v.String()] = true
		if !l[v.String()] {
			l[v.String()] = true
			rep.Added++
		}
	}
	for v := range l {
		if !want[v] {
			delete(l, v)
			rep.Removed++
		}
	}
	return rep, nil
}

func (f *fakePlane) Flood(vni uint32) ([]net.IP, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.floodOf(vni)
	if err != nil {
		return nil, err
	}
	var out []net.IP
	for v := range l {
		out = append(out, net.ParseIP(v))
	}
	return out, nil
}

// floodList returns a device's flood list, sorted.
func (f *fakePlane) floodList(vni uint32) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(mapsKeys(f.flood[vni]))
}

func waitFlood(t *testing.T, dp *fakePlane, vni uint32, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := dp.floodList(vni)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("VNI %d flood list %v, want %v", vni, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMulticastOption(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
		err  string
	}{
		{"true", true, ""},
		{" true ", true, ""},
		{"false", false, ""},
		{"yes", false, `option weft.multicast="yes" is neither true nor false`},
		{"1", false, `option weft.multicast="1" is neither true nor false`},
		{"", false, `option weft.multicast="" is neither true nor false`},
	} {
		o, err := parseOptions(map[string]string{OptMulticast: tc.v})
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: error %v, want %q", tc.v, err, tc.err)
			}
			continue
		}
		if err != nil || o.Multicast != tc.want {
			t.Errorf("%q: %v, %v; want %v", tc.v, o.Multicast, err, tc.want)
		}
	}
	// Not with -o encrypted (its flood entries would leave the tunnel).
	if _, err := parseOptions(map[string]string{OptMulticast: "true", OptEncrypted: "true"}); err == nil || !strings.Contains(err.Error(), "cannot be combined") {
		t.Errorf("multicast and encrypted together: %v, want refused", err)
	}
	// A bad value refuses the network, in one sentence, and changes
	// nothing.
	d, dp, _ := newTestDriver(t, "")
	err := createNet(t, d, netA, map[string]any{OptMulticast: "on"})
	if err == nil || err.Error() != `weft: option weft.multicast="on" is neither true nor false` {
		t.Fatalf("CreateNetwork with weft.multicast=on: %v", err)
	}
	if len(dp.networks) != 0 || len(d.Networks()) != 0 {
		t.Fatal("a refused network left a device or a record")
	}
	if _, err := d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: netA, Options: map[string]string{OptMulticast: "on"},
		IPv4Data: []network.IPAMData{{Pool: "10.10.0.0/24"}}}); err == nil || !strings.Contains(err.Error(), "neither true nor false") {
		t.Fatalf("AllocateNetwork with weft.multicast=on: %v", err)
	}
}

// The flood list of a multicast network follows the catalog per change: a
// host is added with its first endpoint on the network and removed with
// its last, refused records add nothing, a network without the option
// gets none; the repair pass restores a list changed behind weft's back
// and the table of sources lists the multicast network only.
func TestFloodFollowsCatalog(t *testing.T) {
	d, dp, cat := newTestDriver(t, "")
	src := newFakeSources()
	d.cfg.Sources = src
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300", OptMulticast: "true"}); err != nil {
		t.Fatal(err)
	}
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netB, Options: map[string]any{genericKey: map[string]any{OptVNI: "301"}},
		IPv4Data: []*network.IPAMData{{Pool: "10.11.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	d.repair(false)
	dp.mu.Lock()
	sets := dp.calls["SetFlood"]
	dp.mu.Unlock()

	a1 := rec("h2", "a1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")
	a2 := rec("h2", "a2", 300, "10.10.0.21", "02:77:0a:0a:00:15", "198.18.0.2")
	a3 := rec("h3", "a3", 300, "10.10.0.30", "02:77:0a:0a:00:1e", "198.18.0.3")
	out := rec("h4", "out", 300, "10.99.0.40", "02:77:0a:63:00:28", "198.18.0.4") // outside the subnet
	b1 := rec("h3", "b1", 301, "10.11.0.30", "02:77:0a:0b:00:1e", "198.18.0.3")
	step := func(evs ...catalog.Event) {
		t.Helper()
		cat.events.Publish(evs...)
		d.apply(d.sub.Take())
	}
	step(catalog.Event{Kind: catalog.Added, Record: a1}, catalog.Event{Kind: catalog.Added, Record: a2},
		catalog.Event{Kind: catalog.Added, Record: out}, catalog.Event{Kind: catalog.Added, Record: b1})
	waitFlood(t, dp, 300, "198.18.0.2")
	waitFlood(t, dp, 301)
	step(catalog.Event{Kind: catalog.Added, Record: a3})
	waitFlood(t, dp, 300, "198.18.0.2", "198.18.0.3")
	step(catalog.Event{Kind: catalog.Removed, Record: a1})
	waitFlood(t, dp, 300, "198.18.0.2", "198.18.0.3")
	step(catalog.Event{Kind: catalog.Removed, Record: a2})
	waitFlood(t, dp, 300, "198.18.0.3")
	// Moved to another host.
	step(catalog.Event{Kind: catalog.Updated, Old: a3, Record: rec("h3", "a3", 300, "10.10.0.30", "02:77:0a:0a:00:1e", "198.18.0.5")})
	waitFlood(t, dp, 300, "198.18.0.5")
	dp.mu.Lock()
	if n := dp.calls["SetFlood"] - sets; n != 0 {
		dp.mu.Unlock()
		t.Fatalf("%d whole-list writes for single changes", n)
	}
	// Drift: an entry added and one removed behind weft's back.
	dp.flood[300] = map[string]bool{"198.18.0.9": true}
	dp.flood[301] = map[string]bool{"198.18.0.9": true}
	dp.mu.Unlock()
	d.repair(false)
	waitFlood(t, dp, 300, "198.18.0.5")
	waitFlood(t, dp, 301)
	src.mu.Lock()
	flood := slices.Clone(src.flood)
	src.mu.Unlock()
	if !slices.Equal(flood, []uint32{300}) {
		t.Fatalf("table of sources floods %v, want [300]", flood)
	}
}
