package dns

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/internal/feed"
)

// Port is where weft's name server listens on each network's gateway.
const Port = 53

// OpenFunc opens a network's gateway address: UDP and TCP sockets bound to
// addr's address on port, and what closes them.
type OpenFunc func(vni uint32, addr netip.Prefix, mac net.HardwareAddr, port int) (net.PacketConn, net.Listener, func(), error)

// KernelGateways opens gateways as dataplane.Gateway does: a macvlan child
// holding the address, in a namespace of the plugin's own.
func KernelGateways(k *dataplane.Kernel) OpenFunc {
	return func(vni uint32, addr netip.Prefix, mac net.HardwareAddr, port int) (net.PacketConn, net.Listener, func(), error) {
		g, err := k.OpenGateway(vni, addr, mac, port)
		if err != nil {
			return nil, nil, nil, err
		}
		return g.UDP, g.TCP, g.Close, nil
	}
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Server holds the answering side's settings (domain, upstreams).
	Server Config
	// Open opens the gateway address of each network. Required.
	Open OpenFunc
	// Catalog streams the endpoints and their names. Required.
	Catalog *feed.Sub[catalog.Event]
	// Networks streams the networks this host serves. Required.
	Networks *feed.Sub[driver.NetworkEvent]
	// Port is where the server listens (default Port, 53).
	Port int
	// RetryInterval is how often a gateway that failed to open is tried
	// again (default 5 s).
	RetryInterval time.Duration
	// Logger receives the service's log; nil discards it.
	Logger *slog.Logger
}

// Service runs weft's name server on this host: for every weft network it
// serves, one listener on the network's gateway address (in a namespace of
// the plugin's, see dataplane.Gateway), and on a dual-stack network one
// more on its IPv6 gateway address, answering from a zone it keeps in
// step with the endpoint catalog. It consumes two event streams and calls
// nothing back.
type Service struct {
	cfg    ServiceConfig
	log    *slog.Logger
	table  *Table
	server *Server

	// Owned by Run's goroutine.
	hosts    map[uint32]map[string]Host // by VNI, by catalog key
	networks map[uint32]driver.NetworkEvent
	served   map[gateway]*served
	failed   map[gateway]string // last error per gateway, logged once
}

// gateway names one listener: a network's IPv4 gateway, or the IPv6
// gateway of a dual-stack network (its own address, its own child).
type gateway struct {
	vni uint32
	v6  bool
}

type served struct {
	addr     netip.Prefix
	close    func()
	listener *Listener
}

// NewService returns a service; Run serves.
func NewService(cfg ServiceConfig) *Service {
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Server.Logger = log
	table := NewTable(cfg.Server.Domain)
	return &Service{
		cfg:      cfg,
		log:      log,
		table:    table,
		server:   NewServer(cfg.Server, table),
		hosts:    map[uint32]map[string]Host{},
		networks: map[uint32]driver.NetworkEvent{},
		served:   map[gateway]*served{},
		failed:   map[gateway]string{},
	}
}

func (s *Service) port() int {
	if s.cfg.Port == 0 {
		return Port
	}
	return s.cfg.Port
}

// Table returns the zones the service answers from.
func (s *Service) Table() *Table { return s.table }

// Run serves until ctx ends, then closes every listener and gateway.
func (s *Service) Run(ctx context.Context) {
	defer s.closeAll()
	defer s.cfg.Catalog.Close()
	defer s.cfg.Networks.Close()
	retry := time.NewTicker(s.cfg.RetryInterval)
	defer retry.Stop()
	for {
		dirty := map[uint32]bool{}
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Catalog.Ready():
			for _, ev := range s.cfg.Catalog.Take() {
				s.applyEndpoint(ev, dirty)
			}
		case <-s.cfg.Networks.Ready():
			for _, ev := range s.cfg.Networks.Take() {
				s.applyNetwork(ev, dirty)
			}
		case <-retry.C:
			s.openGateways()
			continue
		}
		for vni := range dirty {
			s.rebuild(vni)
		}
	}
}

// applyEndpoint folds one catalog event into the hosts of its network.
func (s *Service) applyEndpoint(ev catalog.Event, dirty map[uint32]bool) {
	key := catalog.Key(ev.Record.Host, ev.Record.Endpoint)
	if ev.Kind == catalog.Updated && ev.Old.VNI != ev.Record.VNI {
		delete(s.hosts[ev.Old.VNI], key)
		dirty[ev.Old.VNI] = true
	}
	vni := ev.Record.VNI
	hs := s.hosts[vni]
	if hs == nil {
		hs = map[string]Host{}
		s.hosts[vni] = hs
	}
	addr, err := netip.ParseAddr(ev.Record.IP)
	if ev.Kind == catalog.Removed || err != nil || len(ev.Record.Names) == 0 {
		if _, ok := hs[key]; ok {
			delete(hs, key)
			dirty[vni] = true
		}
		return
	}
	addr6, _ := ev.Record.Addr6() // a malformed one: none
	hs[key] = Host{Names: ev.Record.Names, Addr: addr, Addr6: addr6}
	dirty[vni] = true
}

// applyNetwork opens or closes a network's listener.
func (s *Service) applyNetwork(ev driver.NetworkEvent, dirty map[uint32]bool) {
	if ev.Up {
		s.networks[ev.VNI] = ev
	} else if cur, ok := s.networks[ev.VNI]; ok && cur.ID == ev.ID {
		delete(s.networks, ev.VNI)
	}
	dirty[ev.VNI] = true
	s.openGateways()
}

// rebuild swaps in the zone of one network, or drops it.
func (s *Service) rebuild(vni uint32) {
	if _, ok := s.networks[vni]; !ok {
		s.table.Drop(vni)
		return
	}
	hosts := make([]Host, 0, len(s.hosts[vni]))
	for _, h := range s.hosts[vni] {
		hosts = append(hosts, h)
	}
	sortHosts(hosts)
	s.table.Set(vni, hosts)
}

// openGateways makes the listeners agree with the networks: new networks
// get one, gone (or re-addressed) ones lose theirs, failed ones are tried
// again.
func (s *Service) openGateways() {
	want := map[gateway]netip.Prefix{}
	for vni, n := range s.networks {
		if n.Gateway.Is4() && n.Subnet.IsValid() {
			want[gateway{vni, false}] = netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
		}
		if n.Gateway6.Is6() && n.Subnet6.IsValid() {
			want[gateway{vni, true}] = netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())
		}
	}
	for gw, sv := range s.served {
		if a, ok := want[gw]; !ok || a != sv.addr {
			s.close(gw, sv)
		}
	}
	for gw, addr := range want {
		if _, ok := s.served[gw]; ok {
			continue
		}
		udp, tcp, closeGW, err := s.cfg.Open(gw.vni, addr, dataplane.MACFor(addr.Addr()), s.port())
		if err != nil {
			if s.failed[gw] != err.Error() {
				s.failed[gw] = err.Error()
				s.log.Error("name server unavailable on this network; retrying", "vni", gw.vni, "addr", addr.Addr().String(), "err", err)
			}
			continue
		}
		delete(s.failed, gw)
		s.served[gw] = &served{addr: addr, close: closeGW, listener: s.server.Serve(gw.vni, addr.Masked(), udp, tcp)}
		s.log.Info("name server listening", "vni", gw.vni, "addr", addr.Addr().String())
	}
}

// close stops serving gw: the gateway goes first (its address with it,
// see dataplane.Gateway.Close), then the server's loops, which end as
// their sockets close.
func (s *Service) close(gw gateway, sv *served) {
	sv.close()
	sv.listener.Close()
	delete(s.served, gw)
	s.log.Info("name server stopped", "vni", gw.vni, "addr", sv.addr.Addr().String())
}

func (s *Service) closeAll() {
	for gw, sv := range s.served {
		s.close(gw, sv)
	}
}

// sortHosts orders a zone's hosts by address, then name, so that a zone
// is built the same whatever order its events came in.
func sortHosts(hs []Host) {
	slices.SortFunc(hs, func(a, b Host) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return slices.Compare(a.Names, b.Names)
	})
}
