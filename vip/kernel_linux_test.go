package vip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

// These tests need root: they work in fresh network namespaces made with
// iproute2 and removed at the end, never in the caller's namespace. A
// client namespace (10.77.0.1) is linked by a veth pair to a servers
// namespace holding three task addresses (10.77.0.2-4), each served by a
// TCP and a UDP listener that answer with their own address.

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("vip kernel tests need root (they create network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("vip kernel tests need iproute2's ip command")
	}
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNS creates a named namespace removed when the test ends and returns
// its name and path.
func newNS(t testing.TB, prefix string) (string, string) {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), rand.IntN(1<<30))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name, filepath.Join("/run/netns", name)
}

// inNS runs fn on this goroutine's thread switched into the namespace at
// path, and switches it back before returning. Sockets fn opens stay in
// that namespace. fn must not start goroutines.
func inNS(t testing.TB, path string, fn func()) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // the thread stays locked and dies with the test
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

var (
	vipAddr  = netip.MustParseAddr("10.77.0.100")
	subnet   = netip.MustParsePrefix("10.77.0.0/24")
	backends = []netip.Addr{netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("10.77.0.3"), netip.MustParseAddr("10.77.0.4")}
)

type testNet struct {
	client string // path of the client's namespace
	// accepted receives the client address of every TCP connection a
	// server accepts, as "server<-client".
	accepted chan string
}

// newTestNet builds the two namespaces and starts the servers.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	needRoot(t)
	cname, cpath := newNS(t, "wvc")
	sname, spath := newNS(t, "wvs")
	veth := fmt.Sprintf("wv%d", rand.IntN(1<<20))
	run(t, "ip", "link", "add", veth, "netns", cname, "type", "veth", "peer", "name", veth+"p", "netns", sname)
	run(t, "ip", "-n", cname, "addr", "add", "10.77.0.1/24", "dev", veth)
	run(t, "ip", "-n", cname, "link", "set", veth, "up")
	for _, b := range backends {
		run(t, "ip", "-n", sname, "addr", "add", b.String()+"/24", "dev", veth+"p")
	}
	run(t, "ip", "-n", sname, "link", "set", veth+"p", "up")
	tn := &testNet{client: cpath, accepted: make(chan string, 100)}
	inNS(t, spath, func() {
		for _, b := range backends {
			ln, err := net.Listen("tcp", b.String()+":8080")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			pc, err := net.ListenPacket("udp", b.String()+":8080")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			go serveTCP(ln, b.String(), tn.accepted)
			go serveUDP(pc, b.String())
		}
	})
	return tn
}

// serveTCP answers each line a client sends with the server's address.
func serveTCP(ln net.Listener, self string, accepted chan<- string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		select {
		case accepted <- self + "<-" + c.RemoteAddr().String():
		default:
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				if _, err := c.Write([]byte(self + "\n")); err != nil {
					return
				}
			}
		}()
	}
}

func serveUDP(pc net.PacketConn, self string) {
	buf := make([]byte, 64)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo([]byte(self), from)
	}
}

// dial opens a TCP connection from the client's namespace.
func (tn *testNet) dial(t *testing.T, addr string) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, tn.client, func() {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
	})
	return c, err
}

// ask sends a line on c and returns the answer.
func ask(c net.Conn) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

// fetch opens a connection to addr, asks and closes it.
func (tn *testNet) fetch(t *testing.T, addr string) (string, error) {
	t.Helper()
	c, err := tn.dial(t, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return ask(c)
}

func specOf(bs ...netip.Addr) Spec {
	return Spec{VIPs: []VIP{{Addr: vipAddr, Backends: bs}}, Subnets: []netip.Prefix{subnet}}
}

// apply writes s and sweeps the flows it does not allow, as the balancer
// does after a change.
func apply(t *testing.T, k Kernel, path string, s Spec) (bool, int) {
	t.Helper()
	wrote, err := k.Apply(path, s)
	if err != nil {
		t.Fatal(err)
	}
	swept, err := k.Sweep(path, s)
	if err != nil {
		t.Fatal(err)
	}
	return wrote, swept
}

func TestApplyBalancesPerConnection(t *testing.T) {
	tn := newTestNet(t)
	k := NetfilterKernel{}
	if wrote, _ := apply(t, k, tn.client, specOf(backends...)); !wrote {
		t.Fatal("first Apply wrote nothing")
	}
	got := map[string]int{}
	for range 6 {
		who, err := tn.fetch(t, vipAddr.String()+":8080")
		if err != nil {
			t.Fatal(err)
		}
		got[who]++
	}
	for _, b := range backends {
		if got[b.String()] != 2 {
			t.Fatalf("6 connections to the VIP answered by %v, want 2 per backend (round robin)", got)
		}
	}
	// The servers saw the client's own address: no SNAT.
	for range 6 {
		if a := <-tn.accepted; !strings.Contains(a, "<-10.77.0.1:") {
			t.Fatalf("server saw %s, want the client's address 10.77.0.1", a)
		}
	}
	// UDP: each flow to the VIP goes to a backend, answered from the VIP.
	udp := map[string]int{}
	for range 3 {
		inNS(t, tn.client, func() {
			c, err := net.Dial("udp", vipAddr.String()+":8080")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			who, err := ask(c)
			if err != nil {
				t.Fatalf("UDP to the VIP: %v", err)
			}
			udp[who]++
		})
	}
	if len(udp) != 3 {
		t.Fatalf("3 UDP flows to the VIP answered by %v, want each backend once", udp)
	}
	if wrote, _ := apply(t, k, tn.client, specOf(backends...)); wrote {
		t.Fatal("Apply of the same spec wrote again")
	}
	if got, err := ReadTable(tn.client); err != nil || len(got) != 1 || got[0].Addr != vipAddr || !slices.Equal(got[0].Backends, backends) {
		t.Fatalf("ReadTable = %v, %v", got, err)
	}
	// Another address than a VIP is left alone.
	if who, err := tn.fetch(t, "10.77.0.3:8080"); err != nil || who != "10.77.0.3" {
		t.Fatalf("direct connection: %q, %v", who, err)
	}
}

func TestRemovedBackendGetsNoConnectionAndItsConnectionsEnd(t *testing.T) {
	tn := newTestNet(t)
	k := NetfilterKernel{}
	apply(t, k, tn.client, specOf(backends...))
	// Hold one connection to each backend.
	held := map[string]net.Conn{}
	for range 3 {
		c, err := tn.dial(t, vipAddr.String()+":8080")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		who, err := ask(c)
		if err != nil {
			t.Fatal(err)
		}
		held[who] = c
	}
	gone := backends[1]
	wrote, swept := apply(t, k, tn.client, specOf(backends[0], backends[2]))
	if !wrote || swept != 1 {
		t.Fatalf("Apply without %s: wrote %v, swept %d flows, want the one to it", gone, wrote, swept)
	}
	// The held connection to the removed backend ends with a reset at its
	// next packet; the others go on.
	_, err := ask(held[gone.String()])
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection to the removed backend: %v, want a reset", err)
	}
	for _, b := range []netip.Addr{backends[0], backends[2]} {
		if who, err := ask(held[b.String()]); err != nil || who != b.String() {
			t.Fatalf("connection to %s after another backend went: %q, %v", b, who, err)
		}
	}
	for range 6 {
		who, err := tn.fetch(t, vipAddr.String()+":8080")
		if err != nil {
			t.Fatal(err)
		}
		if who == gone.String() {
			t.Fatalf("a new connection went to the removed backend %s", gone)
		}
	}
}

func TestVIPWithoutBackendRefused(t *testing.T) {
	tn := newTestNet(t)
	k := NetfilterKernel{}
	apply(t, k, tn.client, specOf())
	if got, err := ReadTable(tn.client); err != nil || len(got) != 1 || len(got[0].Backends) != 0 {
		t.Fatalf("ReadTable of a VIP without backend = %v, %v", got, err)
	}
	start := time.Now()
	_, err := tn.dial(t, vipAddr.String()+":8080")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connection to a VIP without backend: %v, want refused", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %s", d)
	}
}

func TestFlowFromBeforeTheVIPIsSweptAndRetried(t *testing.T) {
	tn := newTestNet(t)
	k := NetfilterKernel{}
	// A table for another VIP only: conntrack follows the namespace's
	// flows, and a datagram to vipAddr goes out untranslated.
	other := Spec{VIPs: []VIP{{Addr: netip.MustParseAddr("10.77.0.200"), Backends: backends[:1]}}, Subnets: []netip.Prefix{subnet}}
	apply(t, k, tn.client, other)
	var c net.Conn
	inNS(t, tn.client, func() {
		var err error
		if c, err = net.Dial("udp", vipAddr.String()+":8080"); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	if _, err := ask(c); err == nil {
		t.Fatal("a datagram to an unknown VIP was answered")
	}
	if wrote, swept := apply(t, k, tn.client, specOf(backends...)); !wrote || swept != 1 {
		t.Fatalf("Apply with the VIP: wrote %v, swept %d, want the untranslated flow swept", wrote, swept)
	}
	if who, err := ask(c); err != nil || who == "" {
		t.Fatalf("the same socket after the VIP was written: %q, %v", who, err)
	}
}

func TestEmptySpecRemovesTheTable(t *testing.T) {
	tn := newTestNet(t)
	k := NetfilterKernel{}
	apply(t, k, tn.client, specOf(backends...))
	if wrote, _ := apply(t, k, tn.client, Spec{Subnets: []netip.Prefix{subnet}}); !wrote {
		t.Fatal("an empty spec wrote nothing")
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(tn.client), "nft", "list", "tables").CombinedOutput()
	if err == nil && strings.Contains(string(out), TableName) {
		t.Fatalf("table left after an empty spec:\n%s", out)
	}
	if wrote, _ := apply(t, k, tn.client, Spec{}); wrote {
		t.Fatal("removing an absent table wrote")
	}
	if got, err := ReadTable(tn.client); err != nil || len(got) != 0 {
		t.Fatalf("ReadTable without a table = %v, %v", got, err)
	}
	if _, err := tn.fetch(t, vipAddr.String()+":8080"); err == nil {
		t.Fatal("the VIP still answers without a table")
	}
}

func TestApplyToAFileThatIsNoNamespace(t *testing.T) {
	needRoot(t)
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".absent"} {
		if _, err := (NetfilterKernel{}).Apply(p, specOf(backends...)); !errors.Is(err, ErrGone) {
			t.Fatalf("Apply to %s: %v, want ErrGone", p, err)
		}
		if _, err := (NetfilterKernel{}).Sweep(p, specOf(backends...)); !errors.Is(err, ErrGone) {
			t.Fatalf("Sweep of %s: %v, want ErrGone", p, err)
		}
	}
	if (NetfilterKernel{}).Mounted(path) {
		t.Fatal("a plain file taken for a mounted namespace")
	}
}

// TestEarlySandbox: a namespace mounted at a new key in the watched
// directory, holding an interface with the MAC of one of this host's
// endpoints, is handed over with that endpoint's network; one holding no
// such interface is not.
func TestEarlySandbox(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	b := New(Config{Store: nopStore{}, Catalog: nil, Kernel: NetfilterKernel{}})
	b.setMAC("02:42:0a:4d:00:09", "n1", true)
	ups := b.updates.Subscribe()
	defer ups.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); b.wg.Wait() }()
	watching := make(chan error, 1)
	b.wg.Add(1)
	go func() { defer b.wg.Done(); watching <- b.watchKeys(ctx, dir) }()

	mount := func(name, nsPath string) string {
		key := filepath.Join(dir, name)
		if err := os.WriteFile(key, nil, 0o444); err != nil {
			t.Fatal(err)
		}
		run(t, "mount", "--bind", nsPath, key)
		t.Cleanup(func() { _ = exec.Command("umount", key).Run() })
		return key
	}
	// A namespace with an endpoint's interface, and one without.
	name, nsPath := newNS(t, "wve")
	run(t, "ip", "-n", name, "link", "add", "eth0", "address", "02:42:0a:4d:00:09", "type", "veth", "peer", "name", "p0")
	_, other := newNS(t, "wvo")
	mount("other", other)
	key := mount("ctr", nsPath)
	var got []update
	err := func() error {
		deadline := time.After(10 * time.Second)
		for {
			select {
			case err := <-watching:
				return fmt.Errorf("watch ended: %v", err)
			case <-deadline:
				return fmt.Errorf("no sandbox handed over")
			case <-ups.Ready():
				got = append(got, ups.Take()...)
				for _, u := range got {
					if u.sandbox != nil && u.sandbox.Path == key {
						return nil
					}
				}
			}
		}
	}()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range got {
		if u.sandbox == nil || u.sandbox.Path != key || u.sandbox.Container != "" || !slices.Equal(u.sandbox.Networks, []string{"n1"}) {
			t.Fatalf("handed over %+v, want only %s on n1", u.sandbox, key)
		}
	}
}

// nopStore is a mesh that holds nothing.
type nopStore struct{}

func (nopStore) LocalNode() string          { return "h1" }
func (nopStore) Put(string, string, []byte) {}
func (nopStore) Delete(string, string)      {}
func (nopStore) Watch(string, bool) *feed.Sub[mesh.Event] {
	return (&feed.Feed[mesh.Event]{}).Subscribe()
}
func (nopStore) Synced() bool { return true }
