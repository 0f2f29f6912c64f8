package ipam

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
)

// An IPv6 pool: the gateway is its first address on every host; other
// addresses come from this host's /96 (its name's hash), lowest free
// first, remembered across a restart and freed on release; a specific
// one is granted unless it is used here or reserved; bad pools and
// requests are refused in one sentence.
func TestIPv6Pool(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.RequestPool(&ipam.RequestPoolRequest{Pool: "fd00:40::/64", V6: true})
	if err != nil || p.Pool != "fd00:40::/64" {
		t.Fatalf("RequestPool = %+v, %v", p, err)
	}
	gw, err := a.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID, Options: map[string]string{requestAddressType: gatewayType}})
	if err != nil || gw.Address != "fd00:40::1/64" {
		t.Fatalf("gateway = %+v, %v", gw, err)
	}
	r := a.range6(netip.MustParsePrefix("fd00:40::/64"))
	var got []string
	for range 3 {
		x, err := a.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, x.Address)
	}
	first := r.Addr().Next()
	if got[0] != netip.PrefixFrom(first, 64).String() || got[2] != netip.PrefixFrom(first.Next().Next(), 64).String() {
		t.Fatalf("addresses %v, want the first three of %s", got, r)
	}
	if err := a.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: p.PoolID, Address: strings.TrimSuffix(got[1], "/64")}); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	x, err := b.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID})
	if err != nil || x.Address != got[1] {
		t.Fatalf("after a restart: %+v, %v; want the released %s", x, err, got[1])
	}
	if _, err := b.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID, Address: strings.TrimSuffix(got[0], "/64")}); err == nil {
		t.Fatal("an address in use was handed out again")
	}
	if x, err := b.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID, Address: "fd00:40::99"}); err != nil || x.Address != "fd00:40::99/64" {
		t.Fatalf("a specific address: %+v, %v", x, err)
	}
	for name, req := range map[string]*ipam.RequestAddressRequest{
		"gateway":  {PoolID: p.PoolID, Address: "fd00:40::1"},
		"outside":  {PoolID: p.PoolID, Address: "fd00:41::5"},
		"other gw": {PoolID: p.PoolID, Address: "fd00:40::2", Options: map[string]string{requestAddressType: gatewayType}},
		"network":  {PoolID: p.PoolID, Address: "fd00:40::"},
		"not v6":   {PoolID: p.PoolID, Address: "10.0.0.1"},
	} {
		if _, err := b.RequestAddress(req); err == nil || !strings.HasPrefix(err.Error(), "weft IPAM: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, req := range map[string]*ipam.RequestPoolRequest{
		"tiny": {Pool: "fd00:50::/80", V6: true}, "overlap": {Pool: "fd00::/16", V6: true},
		"v4 as v6": {Pool: "10.0.0.0/24", V6: true}, "empty": {V6: true},
	} {
		if _, err := b.RequestPool(req); err == nil {
			t.Errorf("%s: RequestPool succeeded", name)
		}
	}
	// Hosts of other names get other ranges.
	h1, h2 := &Allocator{self: "h1"}, &Allocator{self: "h2"}
	pfx := netip.MustParsePrefix("fd00:40::/64")
	if h1.range6(pfx) == h2.range6(pfx) || !pfx.Contains(h1.range6(pfx).Addr()) {
		t.Fatalf("ranges %s and %s", h1.range6(pfx), h2.range6(pfx))
	}
	// The pool goes with its last reference.
	if err := b.ReleasePool(&ipam.ReleasePoolRequest{PoolID: p.PoolID}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID}); err == nil {
		t.Fatal("a released pool still hands out addresses")
	}
}
