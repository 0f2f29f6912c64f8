package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/internal/feed"
)

func records(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			out = append(out, "A "+rr.A.String())
		case *mdns.AAAA:
			out = append(out, "AAAA "+rr.AAAA.String())
		case *mdns.PTR:
			out = append(out, "PTR "+rr.Ptr)
		}
	}
	slices.Sort(out)
	return out
}

// On a dual-stack network, AAAA answers the IPv6 addresses, A the IPv4
// ones only, ANY both; the ip6.arpa PTR of an IPv6 address answers the
// name; a host without IPv6 has no AAAA (NOERROR, no answer).
func TestAAAAAndPTR6(t *testing.T) {
	tbl := NewTable("weft.local")
	tbl.Set(9, []Host{
		{Names: []string{"vp1", "peer"}, Addr: netip.MustParseAddr("10.9.0.2"), Addr6: netip.MustParseAddr("fd00:9::2")},
		{Names: []string{"vp2", "peer"}, Addr: netip.MustParseAddr("10.9.0.3"), Addr6: netip.MustParseAddr("fd00:9::3")},
		{Names: []string{"v4only"}, Addr: netip.MustParseAddr("10.9.0.4")},
	})
	s := NewServer(DefaultConfig(), tbl)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	ls := s.Serve(9, netip.MustParsePrefix("127.0.0.0/8"), pc, l)
	defer ls.Close()
	addr := pc.LocalAddr().String()
	ptr6, err := mdns.ReverseAddr("fd00:9::3")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"vp1.", mdns.TypeAAAA, []string{"AAAA fd00:9::2"}},
		{"vp1.weft.local.", mdns.TypeA, []string{"A 10.9.0.2"}},
		{"peer.", mdns.TypeAAAA, []string{"AAAA fd00:9::2", "AAAA fd00:9::3"}},
		{"vp2.", mdns.TypeANY, []string{"A 10.9.0.3", "AAAA fd00:9::3"}},
		{"v4only.", mdns.TypeAAAA, nil},
		{ptr6, mdns.TypePTR, []string{"PTR vp2.weft.local."}},
		{"3.0.9.10.in-addr.arpa.", mdns.TypePTR, []string{"PTR vp2.weft.local."}},
	} {
		r := query(t, "udp", addr, tc.name, tc.qtype)
		if r.Rcode != mdns.RcodeSuccess || !slices.Equal(records(r), tc.want) {
			t.Errorf("%s %s: rcode %d, %v; want %v", tc.name, mdns.TypeToString[tc.qtype], r.Rcode, records(r), tc.want)
		}
	}
	for _, bad := range []string{"3.0.0.0.ip6.arpa.", "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.0.0.0.0.0.d.f.ip6.arpa."} {
		if _, ok := reverseAddr(bad); ok {
			t.Errorf("reverseAddr accepted %s", bad)
		}
	}
}

// The service listens on a dual-stack network's IPv6 gateway too (a
// second gateway of its own), answers AAAA from the records' IPv6
// addresses there, and closes both gateways with the network.
func TestServiceListensOnGateway6(t *testing.T) {
	var cat feed.Feed[catalog.Event]
	var nets feed.Feed[driver.NetworkEvent]
	lb := &loopback{addrs: map[uint32]string{}, closed: map[uint32]int{}}
	at := func(p string) string {
		lb.mu.Lock()
		defer lb.mu.Unlock()
		return lb.byGW[netip.MustParsePrefix(p)]
	}
	svc := NewService(ServiceConfig{Server: DefaultConfig(), Open: lb.open, Catalog: cat.Subscribe(), Networks: nets.Subscribe()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	r := rec("h2", "e2", 9, "10.9.0.3", "vp2")
	r.IP6 = "fd00:9::3"
	cat.Publish(catalog.Event{Kind: catalog.Added, Record: r})
	up := driver.NetworkEvent{Up: true, ID: "n9", VNI: 9, Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"),
		Subnet6: netip.MustParsePrefix("fd00:9::/64"), Gateway6: netip.MustParseAddr("fd00:9::1")}
	nets.Publish(up)
	for _, gw := range []string{"10.9.0.1/24", "fd00:9::1/64"} {
		eventually(t, "AAAA on gateway "+gw, func() error {
			a := at(gw)
			if a == "" {
				return fmt.Errorf("no listener")
			}
			c := &mdns.Client{Net: "udp"}
			m, _, err := c.Exchange(new(mdns.Msg).SetQuestion("vp2.", mdns.TypeAAAA), a)
			if err != nil {
				return err
			}
			if got := records(m); !slices.Equal(got, []string{"AAAA fd00:9::3"}) {
				return fmt.Errorf("answers %v", got)
			}
			return nil
		})
	}
	up.Up = false
	nets.Publish(up)
	eventually(t, "gateways closed", func() error {
		if at("10.9.0.1/24") != "" || at("fd00:9::1/64") != "" {
			return fmt.Errorf("a gateway is still open")
		}
		return nil
	})
}
