package bench

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/weftnet/weft/dns"
)

// BenchmarkDNSServer loads, in one process over loopback, weft's name
// server and a bare miekg/dns server that answers one fixed A record (the
// library Docker's embedded DNS is built on, with nothing of weft's table),
// with the same load tool and client counts as the lab's DNS part. It
// separates the cost of weft's server from the path a query takes in the
// lab. Run with a CPU profile to see where weft's time goes:
//
//	go test ./bench -run '^$' -bench DNSServer -benchtime 1x -cpuprofile /tmp/dns.prof
func BenchmarkDNSServer(b *testing.B) {
	servers := []struct {
		name  string
		start func(b *testing.B) string
	}{
		{"weft", startWeftDNS},
		{"bare-miekg", startBareDNS},
	}
	for _, s := range servers {
		addr := s.start(b)
		for _, clients := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/clients=%d", s.name, clients), func(b *testing.B) {
				var last DNSResult
				for range b.N {
					r, err := DNSLoad(addr, "srv-weft", clients, 3*time.Second, 1_000_000)
					if err != nil {
						b.Fatal(err)
					}
					last = r
				}
				b.ReportMetric(last.QPS, "q/s")
				b.ReportMetric(last.P99ms, "p99-ms")
				b.ReportMetric(float64(last.Failed), "failed")
			})
		}
	}
}

// startWeftDNS serves weft's DNS for VNI 7 on loopback, with a table of a
// few hundred names as a small Fabric network would have.
func startWeftDNS(b *testing.B) string {
	t := dns.NewTable("weft.local")
	entries := []dns.Host{{Names: []string{"srv-weft", "srv-weft.1"}, Addr: netip.MustParseAddr("10.201.2.9")}}
	for i := range 300 {
		entries = append(entries, dns.Host{
			Names: []string{fmt.Sprintf("peer%d", i), fmt.Sprintf("peer.%d", i), "peer", "tasks.peer"},
			Addr:  netip.AddrFrom4([4]byte{10, 201, byte(3 + i/250), byte(i%250 + 2)}),
		})
	}
	t.Set(7, entries)
	s := dns.NewServer(dns.DefaultConfig(), t)
	pc, l := loopbackPair(b)
	ls := s.Serve(7, netip.MustParsePrefix("127.0.0.0/8"), pc, l)
	b.Cleanup(ls.Close)
	return pc.LocalAddr().String()
}

// startBareDNS serves one fixed A record with miekg/dns on loopback.
func startBareDNS(b *testing.B) string {
	a := net.ParseIP("10.201.2.9").To4()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 5}, A: a})
		_ = w.WriteMsg(m)
	})
	pc, _ := loopbackPair(b)
	srv := &mdns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func loopbackPair(b *testing.B) (net.PacketConn, net.Listener) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp4", pc.LocalAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close(); l.Close() })
	return pc, l
}
