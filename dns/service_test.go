package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/internal/feed"
)

// loopback opens every gateway on 127.0.0.1, a port of its own per
// network (and per gateway address: a dual-stack network has two), and
// remembers where.
type loopback struct {
	mu     sync.Mutex
	addrs  map[uint32]string
	byGW   map[netip.Prefix]string
	closed map[uint32]int
}

func (l *loopback) open(vni uint32, addr netip.Prefix, mac net.HardwareAddr, port int) (net.PacketConn, net.Listener, func(), error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, err
	}
	tl, err := net.Listen("tcp4", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, nil, nil, err
	}
	l.mu.Lock()
	l.addrs[vni] = pc.LocalAddr().String()
	if l.byGW == nil {
		l.byGW = map[netip.Prefix]string{}
	}
	l.byGW[addr] = pc.LocalAddr().String()
	l.mu.Unlock()
	return pc, tl, func() {
		pc.Close()
		tl.Close()
		l.mu.Lock()
		delete(l.addrs, vni)
		delete(l.byGW, addr)
		l.closed[vni]++
		l.mu.Unlock()
	}, nil
}

func (l *loopback) addr(vni uint32) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addrs[vni]
}

// eventually retries a query until check accepts the answer.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ask(addr, name string) ([]string, int, error) {
	if addr == "" {
		return nil, 0, fmt.Errorf("no listener")
	}
	c := &mdns.Client{Net: "udp", Timeout: time.Second}
	r, _, err := c.Exchange(new(mdns.Msg).SetQuestion(name, mdns.TypeA), addr)
	if err != nil {
		return nil, 0, err
	}
	return answers(r), r.Rcode, nil
}

func rec(host, ep string, vni uint32, ip string, names ...string) catalog.Record {
	return catalog.Record{Network: "n", VNI: vni, Endpoint: ep, IP: ip, MAC: "02:77:00:00:00:01", VTEP: "198.18.0.9", Host: host, Names: names}
}

// The service follows its two streams: a network coming up gets a
// listener on its gateway, endpoints' names come and go with the catalog,
// a network going takes its listener and zone with it.
func TestServiceFollowsCatalogAndNetworks(t *testing.T) {
	var cat feed.Feed[catalog.Event]
	var nets feed.Feed[driver.NetworkEvent]
	lb := &loopback{addrs: map[uint32]string{}, closed: map[uint32]int{}}
	svc := NewService(ServiceConfig{
		Server: DefaultConfig(), Open: lb.open,
		Catalog: cat.Subscribe(), Networks: nets.Subscribe(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	cat.Publish(
		catalog.Event{Kind: catalog.Added, Local: true, Record: rec("h1", "e1", 7, "10.7.0.2", "vp1", "peer")},
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "e2", 7, "10.7.0.3", "vp2", "peer")},
		catalog.Event{Kind: catalog.Added, Record: rec("h2", "e3", 8, "10.8.0.3", "other")},
	)
	nets.Publish(driver.NetworkEvent{Up: true, ID: "n7", VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/24"), Gateway: netip.MustParseAddr("10.7.0.1")})
	eventually(t, "names of network 7", func() error {
		a, rc, err := ask(lb.addr(7), "peer.weft.local.")
		if err != nil || rc != mdns.RcodeSuccess {
			return fmt.Errorf("rcode %d, %v", rc, err)
		}
		slices.Sort(a)
		if !slices.Equal(a, []string{"10.7.0.2", "10.7.0.3"}) {
			return fmt.Errorf("peer: %v", a)
		}
		return nil
	})
	// Another network's names are not answered here.
	if a, rc, err := ask(lb.addr(7), "other.weft.local."); err != nil || rc != mdns.RcodeNameError || len(a) != 0 {
		t.Fatalf("other network's name: %v rcode %d %v", a, rc, err)
	}
	// A removal and a rename.
	cat.Publish(
		catalog.Event{Kind: catalog.Removed, Record: rec("h2", "e2", 7, "10.7.0.3", "vp2", "peer")},
		catalog.Event{Kind: catalog.Updated, Local: true, Old: rec("h1", "e1", 7, "10.7.0.2", "vp1", "peer"), Record: rec("h1", "e1", 7, "10.7.0.2", "vp9")},
	)
	eventually(t, "changes answered", func() error {
		if a, _, err := ask(lb.addr(7), "vp9.weft.local."); err != nil || !slices.Equal(a, []string{"10.7.0.2"}) {
			return fmt.Errorf("vp9: %v %v", a, err)
		}
		for _, gone := range []string{"vp2.weft.local.", "peer.weft.local.", "vp1.weft.local."} {
			if _, rc, err := ask(lb.addr(7), gone); err != nil || rc != mdns.RcodeNameError {
				return fmt.Errorf("%s: rcode %d %v", gone, rc, err)
			}
		}
		return nil
	})
	// The network goes: its listener closes.
	nets.Publish(driver.NetworkEvent{Up: false, ID: "n7", VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/24"), Gateway: netip.MustParseAddr("10.7.0.1")})
	eventually(t, "listener closed", func() error {
		lb.mu.Lock()
		defer lb.mu.Unlock()
		if lb.closed[7] != 1 || lb.addrs[7] != "" {
			return fmt.Errorf("closed %d times, addr %q", lb.closed[7], lb.addrs[7])
		}
		return nil
	})
	if _, ok := svc.Table().Lookup(7, "vp9."); ok {
		t.Fatal("zone of a gone network still answers")
	}
}

// A gateway that cannot be opened is retried.
func TestServiceRetriesGateways(t *testing.T) {
	var cat feed.Feed[catalog.Event]
	var nets feed.Feed[driver.NetworkEvent]
	lb := &loopback{addrs: map[uint32]string{}, closed: map[uint32]int{}}
	var mu sync.Mutex
	fails := 2
	open := func(vni uint32, addr netip.Prefix, mac net.HardwareAddr, port int) (net.PacketConn, net.Listener, func(), error) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return nil, nil, nil, fmt.Errorf("kernel says no")
		}
		return lb.open(vni, addr, mac, port)
	}
	svc := NewService(ServiceConfig{Server: DefaultConfig(), Open: open, Catalog: cat.Subscribe(), Networks: nets.Subscribe(), RetryInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	nets.Publish(driver.NetworkEvent{Up: true, ID: "n7", VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/24"), Gateway: netip.MustParseAddr("10.7.0.1")})
	cat.Publish(catalog.Event{Kind: catalog.Added, Record: rec("h2", "e2", 7, "10.7.0.3", "vp2")})
	eventually(t, "answered after retries", func() error {
		if a, _, err := ask(lb.addr(7), "vp2.weft.local."); err != nil || !slices.Equal(a, []string{"10.7.0.3"}) {
			return fmt.Errorf("vp2: %v %v", a, err)
		}
		return nil
	})
}
