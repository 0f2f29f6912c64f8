package dns

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func testTable() *Table {
	t := NewTable("weft.local")
	t.Set(7, []Host{
		{Names: []string{"vp1", "peer.1", "peer", "tasks.peer", "peer.1.abc"}, Addr: netip.MustParseAddr("10.7.0.2")},
		{Names: []string{"vp2", "peer.2", "peer", "tasks.peer"}, Addr: netip.MustParseAddr("10.7.0.3")},
		{Names: []string{"cc-vp1", "Bad Name!", ""}, Addr: netip.MustParseAddr("10.7.0.4")},
	})
	var many []Host
	for i := range 100 {
		many = append(many, Host{Names: []string{"big"}, Addr: netip.AddrFrom4([4]byte{10, 8, byte(i / 250), byte(i%250 + 2)})})
	}
	t.Set(8, many)
	return t
}

// serve starts a server for VNI 7 and 8 on loopback UDP and TCP ports.
func serve(t *testing.T, cfg Config, vni uint32) string {
	t.Helper()
	s := NewServer(cfg, testTable())
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	// The clients are on loopback: the network's subnet for the test.
	ls := s.Serve(vni, netip.MustParsePrefix("127.0.0.0/8"), pc, l)
	t.Cleanup(ls.Close)
	return pc.LocalAddr().String()
}

func query(t *testing.T, netw, addr, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: netw, Timeout: 2 * time.Second}
	m := new(mdns.Msg).SetQuestion(name, qtype)
	var (
		r   *mdns.Msg
		err error
	)
	for range 20 { // the server goroutines may still be starting
		if r, _, err = c.Exchange(m, addr); err == nil {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s %s %s: %v", netw, name, mdns.TypeToString[qtype], err)
	return nil
}

func answers(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			out = append(out, rr.A.String())
		case *mdns.PTR:
			out = append(out, rr.Ptr)
		}
	}
	slices.Sort(out)
	return out
}

func TestAnswers(t *testing.T) {
	addr := serve(t, DefaultConfig(), 7)
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"vp1.", mdns.TypeA, mdns.RcodeSuccess, []string{"10.7.0.2"}},
		{"VP1.", mdns.TypeA, mdns.RcodeSuccess, []string{"10.7.0.2"}},
		{"vp1.weft.local.", mdns.TypeA, mdns.RcodeSuccess, []string{"10.7.0.2"}},
		{"peer.2.", mdns.TypeA, mdns.RcodeSuccess, []string{"10.7.0.3"}},
		{"peer.", mdns.TypeA, mdns.RcodeSuccess, []string{"10.7.0.2", "10.7.0.3"}},
		{"tasks.peer.weft.local.", mdns.TypeA, mdns.RcodeSuccess, []string{"10.7.0.2", "10.7.0.3"}},
		{"vp1.", mdns.TypeAAAA, mdns.RcodeSuccess, nil},
		{"vp1.", mdns.TypeMX, mdns.RcodeSuccess, nil},
		{"2.0.7.10.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{"vp1.weft.local."}},
		{"nobody.weft.local.", mdns.TypeA, mdns.RcodeNameError, nil},
		{"bad name!.", mdns.TypeA, mdns.RcodeServerFailure, nil}, // not weft's: no upstream here
		{"example.org.", mdns.TypeA, mdns.RcodeServerFailure, nil},
		{"big.", mdns.TypeA, mdns.RcodeServerFailure, nil}, // another network's name
	}
	for _, c := range cases {
		for _, netw := range []string{"udp", "tcp"} {
			r := query(t, netw, addr, c.name, c.qtype)
			if r.Rcode != c.rcode || !slices.Equal(answers(r), c.want) {
				t.Errorf("%s %s %s: rcode %s answers %v, want %s %v", netw, c.name, mdns.TypeToString[c.qtype],
					mdns.RcodeToString[r.Rcode], answers(r), mdns.RcodeToString[c.rcode], c.want)
			}
			if c.rcode == mdns.RcodeSuccess && len(r.Answer) > 0 && r.Answer[0].Header().Ttl != 5 {
				t.Errorf("TTL %d, want 5", r.Answer[0].Header().Ttl)
			}
		}
	}
}

func TestLargeAnswerTruncatedOverUDP(t *testing.T) {
	addr := serve(t, DefaultConfig(), 8)
	r := query(t, "udp", addr, "big.", mdns.TypeA)
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Fatalf("UDP: truncated=%v with %d answers", r.Truncated, len(r.Answer))
	}
	r = query(t, "tcp", addr, "big.", mdns.TypeA)
	if r.Truncated || len(r.Answer) != 100 {
		t.Fatalf("TCP: truncated=%v with %d answers", r.Truncated, len(r.Answer))
	}
}

func TestForwardsToUpstream(t *testing.T) {
	// A stand-in upstream on loopback answering every A query.
	up, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: up, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg).SetReply(r)
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("127.0.0.9")})
		_ = w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { _ = srv.Shutdown() })
	cfg := DefaultConfig()
	cfg.Upstreams = []string{"127.0.0.1:1", up.LocalAddr().String()} // the first is dead
	addr := serve(t, cfg, 7)
	r := query(t, "udp", addr, "example.org.", mdns.TypeA)
	if r.Rcode != mdns.RcodeSuccess || !slices.Equal(answers(r), []string{"127.0.0.9"}) {
		t.Fatalf("forwarded: %s %v", mdns.RcodeToString[r.Rcode], answers(r))
	}
	// weft's own domain is never forwarded.
	if r := query(t, "udp", addr, "nobody.weft.local.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("unknown weft name: %s", mdns.RcodeToString[r.Rcode])
	}
}

func TestBadQueries(t *testing.T) {
	s := NewServer(DefaultConfig(), testTable())
	from := &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5353}
	two := new(mdns.Msg).SetQuestion("vp1.", mdns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	if r := s.answer(testNet(s, 7, "127.0.0.0/8"), two, from); r.Rcode != mdns.RcodeFormatError {
		t.Errorf("two questions: %s", mdns.RcodeToString[r.Rcode])
	}
	upd := new(mdns.Msg).SetUpdate("weft.local.")
	if r := s.answer(testNet(s, 7, "127.0.0.0/8"), upd, from); r.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("update: %s", mdns.RcodeToString[r.Rcode])
	}
	chaos := new(mdns.Msg).SetQuestion("vp1.", mdns.TypeA)
	chaos.Question[0].Qclass = mdns.ClassCHAOS
	if r := s.answer(testNet(s, 7, "127.0.0.0/8"), chaos, from); r.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("chaos class: %s", mdns.RcodeToString[r.Rcode])
	}
	resp := new(mdns.Msg).SetQuestion("vp1.", mdns.TypeA)
	resp.Response = true
	if r := s.answer(testNet(s, 7, "127.0.0.0/8"), resp, from); r != nil {
		t.Errorf("a response was answered")
	}

	// Garbage on the wire: the server keeps answering.
	addr := serve(t, DefaultConfig(), 7)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{{}, {0xff}, make([]byte, 12), []byte("not dns at all, not at all"), make([]byte, 4000)} {
		_, _ = conn.Write(b)
	}
	conn.Close()
	if r := query(t, "udp", addr, "vp2.", mdns.TypeA); !slices.Equal(answers(r), []string{"10.7.0.3"}) {
		t.Fatalf("after garbage: %v", answers(r))
	}
}

// testNet is what a server knows of network vni, for calling answer.
func testNet(s *Server, vni uint32, subnet string) *network {
	return &network{vni: vni, subnet: netip.MustParsePrefix(subnet), forwards: make(chan struct{}, s.cfg.MaxForwards)}
}

// The forwarder serves only the network's own containers, and only so many
// at once.
func TestForwardOnlyForTheNetwork(t *testing.T) {
	release := make(chan struct{})
	up, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: up, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		if r.Question[0].Name == "slow.example." {
			<-release
		}
		_ = w.WriteMsg(new(mdns.Msg).SetReply(r))
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { close(release); _ = srv.Shutdown() })
	cfg := DefaultConfig()
	cfg.Upstreams = []string{up.LocalAddr().String()}
	cfg.MaxForwards = 2
	cfg.ForwardTimeout = 5 * time.Second
	s := NewServer(cfg, testTable())
	n := testNet(s, 7, "10.7.0.0/24")
	q := func(name string) *mdns.Msg { return new(mdns.Msg).SetQuestion(name, mdns.TypeA) }
	inside := &net.UDPAddr{IP: net.ParseIP("10.7.0.9"), Port: 40000}
	outside := &net.UDPAddr{IP: net.ParseIP("10.8.0.9"), Port: 40000}
	if r := s.answer(n, q("example.org."), outside); r.Rcode != mdns.RcodeRefused {
		t.Fatalf("outsider's forward: %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
	// weft's own names still answer outsiders on the network's address.
	if r := s.answer(n, q("vp1."), outside); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("outsider asking a weft name: %s %v", mdns.RcodeToString[r.Rcode], answers(r))
	}
	if r := s.answer(n, q("example.org."), inside); r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("member's forward: %s", mdns.RcodeToString[r.Rcode])
	}
	// Two slow forwards fill the cap; a third gets SERVFAIL at once.
	done := make(chan struct{}, 2)
	for range 2 {
		go func() { s.answer(n, q("slow.example."), inside); done <- struct{}{} }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(n.forwards) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("slow forwards did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if r := s.answer(n, q("example.org."), inside); r.Rcode != mdns.RcodeServerFailure || time.Since(start) > time.Second {
		t.Fatalf("forward past the cap: %s after %s, want SERVFAIL at once", mdns.RcodeToString[r.Rcode], time.Since(start))
	}
}

// A container's name cannot shadow a name of the outside world.
func TestNoShadowing(t *testing.T) {
	tb := NewTable("weft.local")
	tb.Set(7, []Host{{Names: []string{"api.github.com", "vp1", "peer.3", "tasks.peer", "agent.x6bn3cmyzdrotr7vhc7l2yd5b", "peer.1.abc"}, Addr: netip.MustParseAddr("10.7.0.2")}})
	for name, bare := range map[string]bool{"api.github.com": false, "vp1": true, "peer.3": true, "tasks.peer": true,
		"agent.x6bn3cmyzdrotr7vhc7l2yd5b": true, "peer.1.abc": false} {
		if _, ok := tb.Lookup(7, name+"."); ok != bare {
			t.Errorf("bare %s answered: %v, want %v", name, ok, bare)
		}
		if _, ok := tb.Lookup(7, name+".weft.local."); !ok {
			t.Errorf("%s.weft.local not answered", name)
		}
	}
}

func TestValidName(t *testing.T) {
	for n, want := range map[string]bool{"vp1": true, "peer.1": true, "tasks.peer": true, "a_b-c": true,
		"": false, "a..b": false, "bad name": false, string(make([]byte, 64)): false, "é": false} {
		if ValidName(n) != want {
			t.Errorf("ValidName(%q) = %v", n, !want)
		}
	}
}

// FuzzAnswer feeds arbitrary packets through the decoder and the handler.
func FuzzAnswer(f *testing.F) {
	seed, _ := new(mdns.Msg).SetQuestion("vp1.", mdns.TypeA).Pack()
	f.Add(seed)
	ptr, _ := new(mdns.Msg).SetQuestion("2.0.7.10.in-addr.arpa.", mdns.TypePTR).Pack()
	f.Add(ptr)
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	s := NewServer(DefaultConfig(), testTable())
	from := &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5353}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(mdns.Msg)
		if err := m.Unpack(b); err != nil {
			return
		}
		if r := s.answer(testNet(s, 7, "127.0.0.0/8"), m, from); r != nil {
			if _, err := r.Pack(); err != nil {
				t.Fatalf("answer does not pack: %v", err)
			}
		}
	})
}
