package plugin

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/dns"
	"github.com/weftnet/weft/driver"
)

// dnsPort is where weft's name server listens on each network's gateway.
const dnsPort = 53

// dnsManager keeps one name server per weft network on this host, on the
// network's gateway address, and its zone in step with the endpoints.
type dnsManager struct {
	log    *slog.Logger
	kernel *dataplane.Kernel
	drv    *driver.Driver
	table  *dns.Table
	server *dns.Server

	// mu guards gateways and failed.
	mu       sync.Mutex
	gateways map[uint32]*served
	failed   map[uint32]string // last error per VNI, logged once
}

type served struct {
	addr     netip.Prefix
	gateway  *dataplane.Gateway
	listener *dns.Listener
}

func newDNSManager(cfg Config, log *slog.Logger, kernel *dataplane.Kernel) *dnsManager {
	table := dns.NewTable(cfg.DNSDomain)
	scfg := dns.DefaultConfig()
	scfg.Domain = cfg.DNSDomain
	scfg.Upstreams = cfg.DNSUpstreams
	scfg.Logger = log
	return &dnsManager{
		log: log, kernel: kernel, table: table, server: dns.NewServer(scfg, table),
		gateways: map[uint32]*served{}, failed: map[uint32]string{},
	}
}

// update runs after every reconcile of the driver: it opens the gateways
// of new networks, closes those of removed ones, and rebuilds every zone
// from the local endpoints and the remote records.
func (m *dnsManager) update(remote []driver.Record) {
	if m.drv == nil {
		return
	}
	nets := m.drv.Networks()
	zones := map[uint32][]dns.Entry{}
	for _, n := range nets {
		zones[n.VNI] = zones[n.VNI][:0:0]
		for _, ep := range n.Endpoints {
			if p, err := netip.ParsePrefix(ep.Address); err == nil && len(ep.Names) > 0 {
				zones[n.VNI] = append(zones[n.VNI], dns.Entry{Names: ep.Names, Addr: p.Addr()})
			}
		}
	}
	for _, r := range remote {
		if _, ok := zones[r.VNI]; !ok || len(r.Names) == 0 {
			continue
		}
		if a, err := netip.ParseAddr(r.IP); err == nil {
			zones[r.VNI] = append(zones[r.VNI], dns.Entry{Names: r.Names, Addr: a})
		}
	}
	for vni, entries := range zones {
		m.table.Set(vni, entries)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[uint32]netip.Prefix{}
	for _, n := range nets {
		gw, err := netip.ParseAddr(n.Gateway)
		sub, serr := netip.ParsePrefix(n.Subnet)
		if err != nil || serr != nil || !gw.Is4() {
			continue
		}
		want[n.VNI] = netip.PrefixFrom(gw, sub.Bits())
	}
	for vni, s := range m.gateways {
		if a, ok := want[vni]; !ok || a != s.addr {
			s.listener.Close()
			s.gateway.Close()
			delete(m.gateways, vni)
			if !ok {
				m.table.Drop(vni)
			}
			m.log.Info("name server stopped", "vni", vni, "addr", s.addr.Addr().String())
		}
	}
	for vni, addr := range want {
		if _, ok := m.gateways[vni]; ok {
			continue
		}
		a := addr.Addr().As4()
		mac := net.HardwareAddr{0x02, 0x77, a[0], a[1], a[2], a[3]}
		g, err := m.kernel.OpenGateway(vni, addr, mac, dnsPort)
		if err != nil {
			if m.failed[vni] != err.Error() {
				m.failed[vni] = err.Error()
				m.log.Error("name server unavailable on this network; retrying", "vni", vni, "addr", addr.Addr().String(), "err", err)
			}
			continue
		}
		delete(m.failed, vni)
		m.gateways[vni] = &served{addr: addr, gateway: g, listener: m.server.Serve(vni, g.UDP, g.TCP)}
		m.log.Info("name server listening", "vni", vni, "addr", addr.Addr().String())
	}
}

// close stops every name server.
func (m *dnsManager) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for vni, s := range m.gateways {
		s.listener.Close()
		s.gateway.Close()
		delete(m.gateways, vni)
	}
}
