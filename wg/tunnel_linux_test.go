package wg

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/mesh"
)

// These tests need root: two hosts as fresh network namespaces linked by
// a veth pair, each with weft's real VXLAN device and a container
// namespace, and each running a Tunnel (wireguard-go on a TUN) in a
// process of its own started inside its namespace: this test binary
// again (helperMain), so that every thread of wireguard-go, and every
// socket it opens, is in that host's namespace. The test relays the two
// tunnels' mesh writes between them, as the mesh would.

const helperEnv = "WEFT_WG_TEST_HOST"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

// helperMsg is one line between the test and a helper: a mesh write
// (Put, Delete) either way, or a command to the helper.
type helperMsg struct {
	Op    string `json:"op"` // put, delete, rotate, member
	Key   string `json:"key,omitempty"`
	Value []byte `json:"value,omitempty"`
	Addr  string `json:"addr,omitempty"`
}

// pipeStore is the mesh of a helper: writes go out on stdout, the other
// host's writes and membership come in on stdin; a watch starts with what
// came in before it, as the mesh's does.
type pipeStore struct {
	self string
	mu   sync.Mutex
	enc  *json.Encoder
	feed feed.Feed[mesh.Event]
	seen map[string]mesh.Event // by entry key or member name
}

func (s *pipeStore) deliver(key string, ev mesh.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]mesh.Event{}
	}
	s.seen[key] = ev
	s.feed.Publish(ev)
}

func (s *pipeStore) LocalNode() string { return s.self }
func (s *pipeStore) Synced() bool      { return true }
func (s *pipeStore) Put(table, key string, value []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.enc.Encode(helperMsg{Op: "put", Key: key, Value: value})
}
func (s *pipeStore) Delete(table, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.enc.Encode(helperMsg{Op: "delete", Key: key})
}
func (s *pipeStore) Watch(table string, members bool) *feed.Sub[mesh.Event] {
	s.mu.Lock()
	defer s.mu.Unlock()
	var init []mesh.Event
	for _, ev := range s.seen {
		init = append(init, ev)
	}
	return s.feed.Subscribe(init...)
}

// helperMain runs one host's tunnel until stdin closes.
func helperMain() int {
	name, vtep, ifname := os.Getenv(helperEnv), os.Getenv("WEFT_WG_TEST_VTEP"), os.Getenv("WEFT_WG_TEST_IF")
	self := netip.MustParseAddr(vtep)
	k, err := dataplane.NewKernel(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	store := &pipeStore{self: name, enc: json.NewEncoder(os.Stdout)}
	var nets feed.Feed[driver.NetworkEvent]
	changed := make(chan struct{}, 1)
	cfg := DefaultConfig()
	cfg.Name, cfg.Store, cfg.Links = ifname, store, k
	cfg.Drain = 2 * time.Second // the test's rotations follow each other quickly
	cfg.Networks = nets.Subscribe(driver.NetworkEvent{Up: true, ID: "n1", VNI: testVNI, Encrypted: true})
	cfg.Self, cfg.MTU, cfg.Changed = func() netip.Addr { return self }, func() int { return 1500 }, changed
	cfg.Filter = NewNFTFilter(-1)
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("host", name)
	tun, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tun.Run(ctx) }()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var m helperMsg
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		switch m.Op {
		case "put":
			store.deliver("entry/"+m.Key, mesh.Event{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Key: m.Key, Owner: m.Key, Value: m.Value}})
		case "delete":
			store.deliver("entry/"+m.Key, mesh.Event{Kind: mesh.EntryGone, Entry: mesh.Entry{Table: Table, Key: m.Key, Owner: m.Key}})
		case "member":
			store.deliver("member/"+m.Key, mesh.Event{Kind: mesh.MemberChanged, Member: mesh.Member{Name: m.Key, Addr: m.Addr, State: mesh.StateAlive}})
		case "rotate":
			tun.Rotate()
		}
	}
	cancel()
	<-done
	return 0
}

const testVNI = 42

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("tunnel tests need root (they create network namespaces and TUNs)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("tunnel tests need /dev/net/tun")
	}
	for _, tool := range []string{"ip", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("tunnel tests need %s", tool)
		}
	}
}

func run(t *testing.T, args ...string) string { return nstest.Run(t, args...) }

func newNS(t *testing.T) (string, netns.NsHandle) { return nstest.NewNS(t, "wwg") }

// testHost is one side of the pair.
type testHost struct {
	name, ns, ctr, ifname string
	vtep, ip              netip.Addr
	mac                   net.HardwareAddr
	in                    io.WriteCloser
	enc                   *json.Encoder
	mu                    sync.Mutex
	// published is the host's record as last relayed to the other.
	published Record
}

// record returns h's record as last published.
func (h *testHost) record() Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.published
}

func (h *testHost) send(m helperMsg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_ = h.enc.Encode(m)
}

// encryptedPair builds the two hosts, their encrypted segment (entries
// towards each other's tunnel address) and their tunnels.
func encryptedPair(t *testing.T) (a, b *testHost) {
	t.Helper()
	sub := DefaultConfig().Subnet
	hs := []*testHost{
		{name: "ha", ifname: fmt.Sprintf("wgt%da", rand.IntN(1e6)), vtep: netip.MustParseAddr("192.0.2.1"), ip: netip.MustParseAddr("10.9.0.1"), mac: net.HardwareAddr{2, 0, 0, 0, 0, 1}},
		{name: "hb", ifname: fmt.Sprintf("wgt%db", rand.IntN(1e6)), vtep: netip.MustParseAddr("192.0.2.2"), ip: netip.MustParseAddr("10.9.0.2"), mac: net.HardwareAddr{2, 0, 0, 0, 0, 2}},
	}
	var handles []netns.NsHandle
	for _, h := range hs {
		var nh netns.NsHandle
		h.ns, nh = newNS(t)
		h.ctr, _ = newNS(t)
		handles = append(handles, nh)
	}
	run(t, "ip", "-n", hs[0].ns, "link", "add", "u0", "type", "veth", "peer", "name", "u1", "netns", hs[1].ns)
	for i, h := range hs {
		u := "u" + strconv.Itoa(i)
		run(t, "ip", "-n", h.ns, "addr", "add", h.vtep.String()+"/24", "dev", u)
		run(t, "ip", "-n", h.ns, "link", "set", u, "up")
		k, err := dataplane.NewKernelAt(handles[i], nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		if err := k.EnsureSegment(dataplane.Segment{VNI: testVNI, MTU: 1500 - 110, Port: 4790}); err != nil {
			t.Fatal(err)
		}
		if err := k.CreateInterface(testVNI, "wv0", h.mac); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "-n", h.ns, "link", "set", "wv0", "netns", h.ctr)
		run(t, "ip", "-n", h.ctr, "addr", "add", h.ip.String()+"/24", "dev", "wv0")
		run(t, "ip", "-n", h.ctr, "link", "set", "wv0", "up")
		o := hs[1-i]
		via, err := Overlay(sub, o.vtep)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.SetRemotes(testVNI, []dataplane.RemoteEndpoint{{IP: o.ip.AsSlice(), MAC: o.mac, VTEP: via.AsSlice()}}); err != nil {
			t.Fatal(err)
		}
	}
	// The helpers, each in its host's namespace; each one's mesh writes go
	// to the other.
	outs := make([]io.Reader, 2)
	for i, h := range hs {
		cmd := exec.Command("ip", "netns", "exec", h.ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+h.name, "WEFT_WG_TEST_VTEP="+h.vtep.String(), "WEFT_WG_TEST_IF="+h.ifname)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		h.in, h.enc, outs[i] = in, json.NewEncoder(in), out
		t.Cleanup(func() { in.Close(); _ = cmd.Wait() }) // stdin closed: the helper closes its tunnel and ends
	}
	for i, h := range hs {
		o := hs[1-i]
		h.send(helperMsg{Op: "member", Key: o.name, Addr: o.vtep.String() + ":7950"})
		go func(from io.Reader, self, to *testHost) {
			sc := bufio.NewScanner(from)
			for sc.Scan() {
				var m helperMsg
				if json.Unmarshal(sc.Bytes(), &m) == nil {
					var r Record
					if m.Op == "put" && json.Unmarshal(m.Value, &r) == nil {
						self.mu.Lock()
						self.published = r
						self.mu.Unlock()
					}
					to.send(m)
				}
			}
		}(outs[i], h, o)
	}
	return hs[0], hs[1]
}

// waitPing waits until a's container reaches b's.
func waitPing(t *testing.T, a, b *testHost, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := exec.Command("ip", "netns", "exec", a.ctr, "ping", "-c1", "-W1", b.ip.String()).Run()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's container does not reach %s's within %s: %v", a.name, b.name, within, err)
		}
	}
}

var pingSeqRE = regexp.MustCompile(`icmp_seq=(\d+)`)

// Two hosts' containers reach each other over their encrypted segment,
// which rides in the tunnel: VXLAN leaves each host only inside
// WireGuard (the underlay carries WireGuard's port, and a plaintext VXLAN
// packet for the VNI is refused on the way out). Then the hosts rotate
// their keys while the containers ping every 10 ms: none is lost.
func TestTunnelCarriesEncryptedSegment(t *testing.T) {
	needRoot(t)
	a, b := encryptedPair(t)
	waitPing(t, a, b, 20*time.Second)
	waitPing(t, b, a, 5*time.Second)

	// The underlay: WireGuard's packets counted, no plaintext VXLAN.
	out := run(t, "ip", "netns", "exec", a.ns, "ping", "-c", "20", "-i", "0.01", "-W", "1", b.tunnelAddr(t))
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("tunnel addresses do not reach each other:\n%s", out)
	}
	// A plaintext VXLAN packet for the VNI, sent to the other host's
	// underlay address, is refused on the way out; for another VNI (the
	// control) it leaves.
	for _, c := range []struct {
		vni  uint32
		want error
	}{{testVNI + 1, nil}, {testVNI, unix.EPERM}} {
		err := sendVXLAN(t, a.ns, b.vtep, c.vni)
		t.Logf("plaintext VXLAN for VNI %d from %s to %s's underlay: %v", c.vni, a.name, b.name, err)
		if !errors.Is(err, c.want) && !(c.want == nil && err == nil) {
			t.Fatalf("plaintext VXLAN for VNI %d: %v, want %v", c.vni, err, c.want)
		}
	}

	// Key rotations with a ping every 10 ms, both ways: b rotates, then a
	// while b's is still under way, then b again (back to its first
	// slot). Not one ping may be lost.
	before := [2]Record{a.record(), b.record()}
	const count = 1500
	cmd := exec.Command("ip", "netns", "exec", a.ctr, "ping", "-i", "0.01", "-c", strconv.Itoa(count), "-W", "1", b.ip.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	got := map[int]bool{}
	rotations := []struct {
		at int
		h  *testHost
	}{{100, b}, {150, a}, {1000, b}}
	next := 0
	for sc.Scan() {
		m := pingSeqRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		seq, _ := strconv.Atoi(m[1])
		got[seq] = true
		if next < len(rotations) && seq >= rotations[next].at {
			rotations[next].h.send(helperMsg{Op: "rotate"})
			next++
		}
	}
	_ = cmd.Wait()
	var lost []int
	for seq := 1; seq <= count; seq++ {
		if !got[seq] {
			lost = append(lost, seq)
		}
	}
	t.Logf("FIGURE key rotations (b, a while b's ran, b again) with a ping every 10 ms: %d of %d lost", len(lost), count)
	if next != len(rotations) || len(got) < count/2 {
		t.Fatalf("the ping did not go on across the rotations: %d replies", len(got))
	}
	if len(lost) > 0 {
		t.Errorf("pings lost across key rotations: %v", lost)
	}
	// Each host has a new key, and has finished: one key published, on
	// the slot each should be on (b rotated twice, a once).
	err = waitFor(10*time.Second, func() error {
		for i, h := range []*testHost{a, b} {
			r := h.record()
			if r.Key == before[i].Key || r.Old != nil {
				return fmt.Errorf("%s's record %+v, before %+v: not rotated, or not done", h.name, r, before[i])
			}
		}
		if a.record().Slot != 1-before[0].Slot || b.record().Slot != before[1].Slot {
			return fmt.Errorf("slots: a %d, b %d (a began on %d, b on %d)", a.record().Slot, b.record().Slot, before[0].Slot, before[1].Slot)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitPing(t, a, b, 5*time.Second)
	waitPing(t, b, a, 5*time.Second)
}

// waitFor polls f until it returns nil or within passes.
func waitFor(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *testHost) tunnelAddr(t *testing.T) string {
	a, err := Overlay(DefaultConfig().Subnet, h.vtep)
	if err != nil {
		t.Fatal(err)
	}
	return a.String()
}

// sendVXLAN sends one VXLAN packet (header only, then an empty inner
// frame) to dst:4790 from a socket opened in namespace ns.
func sendVXLAN(t *testing.T, ns string, dst netip.Addr, vni uint32) error {
	t.Helper()
	payload := append([]byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}, make([]byte, 60)...)
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fd, err := socketAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, payload, 0, &unix.SockaddrInet4{Port: 4790, Addr: dst.As4()})
}

// socketAt opens a UDP socket in namespace h; the thread is switched
// back before it is unlocked (the socket keeps its namespace).
func socketAt(h netns.NsHandle) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return -1, err
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		return -1, err
	}
	defer func() { _ = netns.Set(orig) }()
	return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
}
