package driver

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/catalog"
)

// testTunnel maps 198.18.x.y to 10.250.x.y, as wg.Overlay does, and
// to sources 10.251.x.y and 10.252.x.y, as wg.Source does.
type testTunnel struct{}

func (testTunnel) Sources(v netip.Addr) ([]netip.Addr, error) {
	b := v.As4()
	return []netip.Addr{netip.AddrFrom4([4]byte{10, 251, b[2], b[3]}), netip.AddrFrom4([4]byte{10, 252, b[2], b[3]})}, nil
}

func (testTunnel) Subnet() netip.Prefix { return netip.MustParsePrefix("10.250.0.0/16") }
func (testTunnel) Overlay(v netip.Addr) (netip.Addr, error) {
	b := v.As4()
	return netip.AddrFrom4([4]byte{10, 250, b[2], b[3]}), nil
}

// An encrypted network's entries point at the hosts' tunnel addresses,
// its sources are checked against them, its MTU leaves room for
// WireGuard; a plain network beside it keeps the underlay; a host
// without a tunnel refuses -o encrypted.
func TestEncryptedNetworkUsesTunnelAddresses(t *testing.T) {
	dp, cat, src := newFakePlane(), newFakeCatalog(), newFakeSources()
	cfg := DefaultConfig()
	cfg.Tunnel, cfg.Sources = testTunnel{}, src
	d, err := New(cfg, dp, cat, &fakeUnderlay{mtu: 1500, changed: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := createNet(t, d, netA, map[string]any{OptVNI: "300", OptEncrypted: ""}); err != nil {
		t.Fatal(err)
	}
	if err := createNet(t, d, netB, map[string]any{OptVNI: "301"}); err != nil {
		t.Fatal(err)
	}
	if got := dp.networks[300].MTU; got != 1500-50-60 {
		t.Errorf("encrypted network MTU %d, want %d", got, 1500-50-60)
	}
	if got := dp.networks[301].MTU; got != 1450 {
		t.Errorf("plain network MTU %d, want 1450", got)
	}
	d.repair(false)
	cat.events.Publish(
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")},
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "r2", 301, "10.10.0.21", "02:77:0a:0a:00:15", "198.18.0.2")},
	)
	d.apply(d.sub.Take())
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 10.250.0.2")
	waitTable(t, dp, 301, "10.10.0.21 02:77:0a:0a:00:15 198.18.0.2")
	// The repair reads the kernel back (tunnel addresses) and writes it
	// again: nothing drifts.
	d.repair(false)
	d.repair(true)
	waitTable(t, dp, 300, "10.10.0.20 02:77:0a:0a:00:14 10.250.0.2")
	if dp.repaired.FDBAdded+dp.repaired.FDBRemoved != 0 {
		t.Errorf("repair found drift in a steady table: %+v", dp.repaired)
	}
	have := remoteVTEPs(src)
	if have[300] != "10.251.0.2 10.252.0.2" || have[301] != "198.18.0.2" {
		t.Errorf("sources' VTEPs by VNI: %v; want 300 from the host's two tunnel source addresses, 301 from the underlay", have)
	}
	cat.events.Publish(catalog.Event{Kind: catalog.Removed, Record: rec("h2", "r1", 300, "10.10.0.20", "02:77:0a:0a:00:14", "198.18.0.2")})
	d.apply(d.sub.Take())
	waitTable(t, dp, 300)

	plain, _ := New(DefaultConfig(), newFakePlane(), newFakeCatalog(), nil)
	err = createNet(t, plain, netA, map[string]any{OptEncrypted: "true"})
	if err == nil || !strings.Contains(err.Error(), "cannot encrypt") {
		t.Errorf("a host without a tunnel took an encrypted network: %v", err)
	}
	if err := createNet(t, d, "cccc", map[string]any{OptEncrypted: "maybe"}); err == nil {
		t.Error("-o encrypted=maybe accepted")
	}
}

// remoteVTEPs returns the VTEPs of each VNI's remote sources, sorted and
// joined by spaces, from their strings ("vni N mac ip via vtep").
func remoteVTEPs(s *fakeSources) map[uint32]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	by := map[uint32][]string{}
	for k := range s.remote {
		var vni uint32
		var mac, ip, via, vtep string
		if n, _ := fmt.Sscanf(k, "vni %d %s %s %s %s", &vni, &mac, &ip, &via, &vtep); n == 5 {
			by[vni] = append(by[vni], vtep)
		}
	}
	out := map[uint32]string{}
	for vni, vs := range by {
		slices.Sort(vs)
		out[vni] = strings.Join(vs, " ")
	}
	return out
}
