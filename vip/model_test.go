package vip

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/catalog"
)

func rec(host, ep, ip string, names ...string) catalog.Record {
	return catalog.Record{Network: "n1", VNI: 7, Endpoint: ep, IP: ip, MAC: "02:00:00:00:00:01", VTEP: "198.18.0.1", Host: host, Names: names}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func vipsOf(m *model, network string) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for _, v := range m.VIPs(network) {
		out[v.Addr.String()] = v.Backends
	}
	return out
}

func TestModelBackendsFromNamesAndEngine(t *testing.T) {
	m := newModel()
	m.record(catalog.Event{Kind: catalog.Added, Record: rec("h1", "e1", "10.0.0.3", "web.1", "web", "tasks.web")})
	m.record(catalog.Event{Kind: catalog.Added, Record: rec("h2", "e2", "10.0.0.4", "web.2", "web", "tasks.web")})
	// A task whose names are not learnt yet: the engine vouches for it.
	m.record(catalog.Event{Kind: catalog.Added, Record: rec("h3", "e3", "10.0.0.5")})
	// A plain container and another service's task.
	m.record(catalog.Event{Kind: catalog.Added, Record: rec("h3", "e4", "10.0.0.6", "client")})
	m.record(catalog.Event{Kind: catalog.Added, Record: rec("h3", "e5", "10.0.0.7", "tasks.db")})
	m.tasks["n1"] = map[string]string{"e3": "web"}
	m.claims["h2/n1/web"] = heldClaim{Claim: Claim{Network: "n1", Service: "web", VIP: "10.0.0.2"}, clock: 5}
	got := vipsOf(m, "n1")
	if want := addrs("10.0.0.3", "10.0.0.4", "10.0.0.5"); len(got) != 1 || !slices.Equal(got["10.0.0.2"], want) {
		t.Fatalf("VIPs = %v, want 10.0.0.2 -> %v", got, want)
	}
	if len(m.VIPs("n2")) != 0 {
		t.Fatal("another network has the VIP")
	}

	// A record removed leaves; an update that drops the names leaves too.
	m.record(catalog.Event{Kind: catalog.Removed, Record: rec("h1", "e1", "10.0.0.3")})
	m.record(catalog.Event{Kind: catalog.Updated, Record: rec("h2", "e2", "10.0.0.4", "web.2"), Old: rec("h2", "e2", "10.0.0.4", "web.2", "web", "tasks.web")})
	if got := vipsOf(m, "n1"); !slices.Equal(got["10.0.0.2"], addrs("10.0.0.5")) {
		t.Fatalf("after removals: %v", got)
	}
}

func TestModelDrainsAndStaleVIPs(t *testing.T) {
	m := newModel()
	for i, ip := range []string{"10.0.0.3", "10.0.0.4", "10.0.0.5"} {
		m.record(catalog.Event{Kind: catalog.Added, Record: rec("h1", "e"+string(rune('1'+i)), ip, "tasks.web")})
	}
	m.own["h1/n1/web"] = Claim{Network: "n1", Service: "web", VIP: "10.0.0.2"}
	m.claims["h9/n1/web"] = heldClaim{Claim: Claim{Network: "n1", Service: "Web", Drain: []string{"10.0.0.4"}}, clock: 1}
	if got := vipsOf(m, "n1"); !slices.Equal(got["10.0.0.2"], addrs("10.0.0.3", "10.0.0.5")) {
		t.Fatalf("with 10.0.0.4 draining: %v", got)
	}
	// Swarm gave a stale VIP to a container: the VIP is left out.
	m.record(catalog.Event{Kind: catalog.Added, Record: rec("h2", "c1", "10.0.0.2", "client")})
	if got := vipsOf(m, "n1"); len(got) != 0 {
		t.Fatalf("a VIP that is an endpoint's address kept: %v", got)
	}
}

func TestModelVIPClaimedTwice(t *testing.T) {
	m := newModel()
	m.record(catalog.Event{Kind: catalog.Added, Record: rec("h1", "e1", "10.0.0.3", "tasks.old")})
	m.record(catalog.Event{Kind: catalog.Added, Record: rec("h1", "e2", "10.0.0.4", "tasks.new")})
	m.claims["h2/n1/old"] = heldClaim{Claim: Claim{Network: "n1", Service: "old", VIP: "10.0.0.2"}, clock: 3}
	m.claims["h3/n1/new"] = heldClaim{Claim: Claim{Network: "n1", Service: "new", VIP: "10.0.0.2"}, clock: 9}
	if got := vipsOf(m, "n1"); !slices.Equal(got["10.0.0.2"], addrs("10.0.0.4")) {
		t.Fatalf("the newest claim should win: %v", got)
	}
	m.own["h1/n1/old"] = Claim{Network: "n1", Service: "old", VIP: "10.0.0.2"}
	if got := vipsOf(m, "n1"); !slices.Equal(got["10.0.0.2"], addrs("10.0.0.3")) {
		t.Fatalf("this host's engine should win: %v", got)
	}
}

func TestSpecAllows(t *testing.T) {
	s := Spec{
		VIPs:    []VIP{{Addr: netip.MustParseAddr("10.0.0.2"), Backends: addrs("10.0.0.3", "10.0.0.4")}, {Addr: netip.MustParseAddr("10.0.0.9")}},
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")},
	}
	for _, c := range []struct {
		dst, src string
		want     bool
	}{
		{"10.0.0.2", "10.0.0.3", true},     // to a backend
		{"10.0.0.2", "10.0.0.5", false},    // to a backend removed
		{"10.0.0.2", "10.0.0.2", false},    // sent before the VIP was known
		{"10.0.0.9", "10.0.0.9", false},    // a VIP without backend
		{"10.0.0.7", "10.0.0.7", true},     // a container, untranslated
		{"10.0.0.8", "10.0.0.3", false},    // translated for a VIP that went
		{"127.0.0.11", "127.0.0.11", true}, // Docker's resolver: not ours
		{"192.0.2.1", "10.0.0.3", true},
	} {
		if got := s.allows(netip.MustParseAddr(c.dst), netip.MustParseAddr(c.src)); got != c.want {
			t.Errorf("allows(%s, %s) = %v, want %v", c.dst, c.src, got, c.want)
		}
	}
}

func TestSpecDrops(t *testing.T) {
	v := func(a string, bs ...string) VIP { return VIP{Addr: netip.MustParseAddr(a), Backends: addrs(bs...)} }
	s := Spec{VIPs: []VIP{v("10.0.0.2", "10.0.0.3", "10.0.0.4"), v("10.0.0.9")}}
	for _, c := range []struct {
		next Spec
		want bool
	}{
		{s, false},
		{Spec{VIPs: []VIP{v("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"), v("10.0.0.9", "10.0.0.6")}}, false}, // added
		{Spec{VIPs: []VIP{v("10.0.0.2", "10.0.0.3"), v("10.0.0.9")}}, true},                                      // a backend went
		{Spec{VIPs: []VIP{v("10.0.0.2", "10.0.0.3", "10.0.0.4")}}, true},                                         // a VIP went
		{Spec{}, true},
	} {
		if got := s.drops(c.next); got != c.want {
			t.Errorf("drops(%v) = %v, want %v", c.next.VIPs, got, c.want)
		}
	}
}

func TestSpecMarker(t *testing.T) {
	a := Spec{VIPs: []VIP{{Addr: netip.MustParseAddr("10.0.0.2"), Backends: addrs("10.0.0.3")}}}
	b := Spec{VIPs: []VIP{{Addr: netip.MustParseAddr("10.0.0.2"), Backends: addrs("10.0.0.3", "10.0.0.4")}}}
	if a.Marker() == b.Marker() || a.Marker() != (Spec{VIPs: slices.Clone(a.VIPs)}).Marker() {
		t.Fatalf("markers: %s %s", a.Marker(), b.Marker())
	}
	m := newModel()
	m.own["h1/n1/web"] = Claim{Network: "n1", Service: "web", VIP: "10.0.0.2"}
	m.own["h1/n2/db"] = Claim{Network: "n2", Service: "db", VIP: "10.1.0.2"}
	s := m.spec([]string{"n2", "n1"}, map[string]netip.Prefix{"n1": netip.MustParsePrefix("10.0.0.0/24"), "n2": netip.MustParsePrefix("10.1.0.0/24")})
	if len(s.VIPs) != 2 || s.VIPs[0].Addr.String() != "10.0.0.2" || len(s.Subnets) != 2 || s.Subnets[0].String() != "10.0.0.0/24" {
		t.Fatalf("spec of two networks: %+v", s)
	}
}

func TestKeyOwner(t *testing.T) {
	if o := KeyOwner(claimKey("h1", "net", "svc")); o != "h1" {
		t.Fatalf("owner %q", o)
	}
}
