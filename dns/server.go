package dns

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Config holds the name server's settings.
type Config struct {
	// Domain is weft's domain; names are answered bare and under it.
	Domain string
	// TTL of weft's answers, in seconds; short, since containers come and go.
	TTL uint32
	// Upstreams are "ip:port" resolvers for names outside weft's
	// knowledge; none means such names get SERVFAIL.
	Upstreams []string
	// ForwardTimeout bounds one upstream exchange.
	ForwardTimeout time.Duration
	// MaxForwards caps the queries one network's server forwards at once
	// (default 64); beyond it, queries for other names get SERVFAIL.
	MaxForwards int
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
	// Registry receives the server's metrics (queries, answers, NXDOMAIN,
	// forwards, latency); nil keeps them unregistered.
	Registry prometheus.Registerer
}

// DefaultConfig returns the settings weft runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{Domain: "weft.local", TTL: 5, ForwardTimeout: 2 * time.Second, MaxForwards: 64}
}

// Server answers queries from a Table. One Server serves every network;
// Handler gives the handler of one.
type Server struct {
	cfg     Config
	log     *slog.Logger
	table   *Table
	metrics *serverMetrics

	// warned limits the log to one line per kind of bad input.
	warned sync.Map
}

// NewServer returns a server answering from table.
func NewServer(cfg Config, table *Table) *Server {
	if cfg.TTL == 0 {
		cfg.TTL = DefaultConfig().TTL
	}
	if cfg.ForwardTimeout == 0 {
		cfg.ForwardTimeout = DefaultConfig().ForwardTimeout
	}
	if cfg.MaxForwards <= 0 {
		cfg.MaxForwards = DefaultConfig().MaxForwards
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, table: table, metrics: newServerMetrics(cfg.Registry)}
}

// network is what the server knows of one network it answers for.
type network struct {
	vni uint32
	// subnet holds the clients it forwards for: the network's own
	// containers. Queries for names outside weft from anywhere else are
	// refused, so the server is no open resolver.
	subnet netip.Prefix
	// forwards bounds the forwards in flight.
	forwards chan struct{}
}

// Handler returns the handler for the network vni, whose containers are in
// subnet.
func (s *Server) Handler(vni uint32, subnet netip.Prefix) mdns.Handler {
	n := &network{vni: vni, subnet: subnet.Masked(), forwards: make(chan struct{}, s.cfg.MaxForwards)}
	return mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		start := time.Now()
		resp := s.answer(n, r, w.RemoteAddr())
		defer s.metrics.answered(start)
		if resp == nil {
			return // dropped
		}
		_ = w.WriteMsg(resp)
	})
}

// answer builds the reply to r, or nil to drop it.
func (s *Server) answer(n *network, r *mdns.Msg, from net.Addr) *mdns.Msg {
	vni := n.vni
	m := new(mdns.Msg)
	if r.Response {
		return nil
	}
	if r.Opcode != mdns.OpcodeQuery {
		return m.SetRcode(r, mdns.RcodeNotImplemented)
	}
	if len(r.Question) != 1 {
		s.warnOnce("questions", "query with other than one question answered FORMERR", "from", addrString(from))
		return m.SetRcode(r, mdns.RcodeFormatError)
	}
	q := r.Question[0]
	if q.Qclass != mdns.ClassINET {
		return m.SetRcode(r, mdns.RcodeNotImplemented)
	}
	name := strings.ToLower(q.Name)
	if _, ok := mdns.IsDomainName(name); !ok {
		return m.SetRcode(r, mdns.RcodeFormatError)
	}

	if q.Qtype == mdns.TypePTR {
		if addr, ok := reverseAddr(name); ok {
			if target, ok := s.table.Reverse(vni, addr); ok {
				m.SetReply(r)
				m.Authoritative = true
				m.Answer = append(m.Answer, &mdns.PTR{Hdr: s.hdr(q.Name, mdns.TypePTR), Ptr: target})
				s.metrics.answers.Inc()
				return s.fit(m, r, from)
			}
		}
	}

	addrs, found := s.table.Lookup(vni, name)
	switch {
	case found:
		m.SetReply(r)
		m.Authoritative = true
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
		for _, a := range addrs {
			switch {
			case a.Is4() && (q.Qtype == mdns.TypeA || q.Qtype == mdns.TypeANY):
				m.Answer = append(m.Answer, &mdns.A{Hdr: s.hdr(q.Name, mdns.TypeA), A: net.IP(a.AsSlice())})
			case a.Is6() && (q.Qtype == mdns.TypeAAAA || q.Qtype == mdns.TypeANY):
				m.Answer = append(m.Answer, &mdns.AAAA{Hdr: s.hdr(q.Name, mdns.TypeAAAA), AAAA: net.IP(a.AsSlice())})
			}
		}
		// Other types of a weft name: NOERROR with no answer.
		s.metrics.answers.Inc()
		return s.fit(m, r, from)
	case s.table.InDomain(name):
		m.SetRcode(r, mdns.RcodeNameError)
		m.Authoritative = true
		s.metrics.nxdomain.Inc()
		return m
	default:
		return s.forward(n, r, from)
	}
}

func (s *Server) hdr(name string, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: s.cfg.TTL}
}

// fit truncates a UDP answer to what the client can take, setting TC so
// that it asks again over TCP.
func (s *Server) fit(m, r *mdns.Msg, from net.Addr) *mdns.Msg {
	if _, tcp := from.(*net.TCPAddr); tcp {
		m.Truncate(mdns.MaxMsgSize)
		return m
	}
	size := mdns.MinMsgSize
	if o := r.IsEdns0(); o != nil {
		size = max(int(o.UDPSize()), mdns.MinMsgSize)
		m.SetEdns0(uint16(size), false)
	}
	m.Truncate(size)
	return m
}

// forward asks the upstream resolvers, over the transport the query came
// on, for a client of the network; anyone else is refused, and past the
// network's cap on forwards in flight the answer is SERVFAIL.
func (s *Server) forward(n *network, r *mdns.Msg, from net.Addr) *mdns.Msg {
	m := new(mdns.Msg)
	if a, ok := clientAddr(from); !ok || !n.subnet.Contains(a) {
		s.warnOnce("refused", "query for a name outside weft from outside the network refused", "from", addrString(from), "vni", n.vni)
		s.metrics.forwarded(forwardRefused)
		return m.SetRcode(r, mdns.RcodeRefused)
	}
	if len(s.cfg.Upstreams) == 0 {
		s.metrics.forwarded(forwardFailed)
		return m.SetRcode(r, mdns.RcodeServerFailure)
	}
	select {
	case n.forwards <- struct{}{}:
		defer func() { <-n.forwards }()
	default:
		s.warnOnce("forwards", "too many queries forwarded at once; answering SERVFAIL", "vni", n.vni, "max", s.cfg.MaxForwards)
		s.metrics.forwarded(forwardFailed)
		return m.SetRcode(r, mdns.RcodeServerFailure)
	}
	network := "udp"
	if _, tcp := from.(*net.TCPAddr); tcp {
		network = "tcp"
	}
	c := &mdns.Client{Net: network, Timeout: s.cfg.ForwardTimeout}
	for _, up := range s.cfg.Upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ForwardTimeout)
		resp, _, err := c.ExchangeContext(ctx, r, up)
		cancel()
		if err == nil && resp != nil {
			resp.Id = r.Id
			s.metrics.forwarded(forwardAnswered)
			return resp
		}
		s.warnOnce("upstream "+up, "upstream resolver failed", "upstream", up, "err", err)
	}
	s.metrics.forwarded(forwardFailed)
	return m.SetRcode(r, mdns.RcodeServerFailure)
}

// clientAddr is the IP address of a query's sender.
func clientAddr(a net.Addr) (netip.Addr, bool) {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	default:
		return netip.Addr{}, false
	}
	addr, ok := netip.AddrFromSlice(ip)
	return addr.Unmap(), ok
}

func (s *Server) warnOnce(key, msg string, args ...any) {
	if _, loaded := s.warned.LoadOrStore(key, true); !loaded {
		s.log.Warn(msg+" (logged once)", args...)
	}
}

// reverseAddr parses d.c.b.a.in-addr.arpa, and the 32 nibbles of an
// ip6.arpa name.
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		return reverseAddr6(rest)
	}
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	p := strings.Split(rest, ".")
	if len(p) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(p[3] + "." + p[2] + "." + p[1] + "." + p[0])
	if err != nil || !a.Is4() {
		return netip.Addr{}, false
	}
	return a, true
}

// reverseAddr6 parses the nibbles of an ip6.arpa name, least significant
// first.
func reverseAddr6(rest string) (netip.Addr, bool) {
	p := strings.Split(rest, ".")
	if len(p) != 32 {
		return netip.Addr{}, false
	}
	var b [16]byte
	for i, n := range p {
		if len(n) != 1 {
			return netip.Addr{}, false
		}
		v, err := strconv.ParseUint(n, 16, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		// Nibble i counts from the end: byte 15-i/2, low nibble first.
		if i%2 == 0 {
			b[15-i/2] |= byte(v)
		} else {
			b[15-i/2] |= byte(v) << 4
		}
	}
	return netip.AddrFrom16(b), true
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Listener is one network's pair of sockets, UDP and TCP.
type Listener struct {
	udp *mdns.Server
	tcp *mdns.Server
}

// Serve answers queries for network vni, whose containers are in subnet,
// on the given sockets until Close.
func (s *Server) Serve(vni uint32, subnet netip.Prefix, pc net.PacketConn, l net.Listener) *Listener {
	h := s.Handler(vni, subnet)
	ls := &Listener{
		udp: &mdns.Server{PacketConn: pc, Handler: h, UDPSize: mdns.DefaultMsgSize},
		tcp: &mdns.Server{Listener: l, Handler: h, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, IdleTimeout: func() time.Duration { return 5 * time.Second }},
	}
	go s.run(ls.udp, "udp", vni)
	go s.run(ls.tcp, "tcp", vni)
	return ls
}

func (s *Server) run(srv *mdns.Server, proto string, vni uint32) {
	if err := srv.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Debug("dns server stopped", "proto", proto, "vni", vni, "err", err)
	}
}

// Close stops serving and closes the sockets.
func (l *Listener) Close() {
	_ = l.udp.Shutdown()
	_ = l.tcp.Shutdown()
}
