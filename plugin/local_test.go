package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	goipam "github.com/docker/go-plugins-helpers/ipam"

	"github.com/weftnet/weft/mesh"
)

func TestLocalModeSettings(t *testing.T) {
	c, err := ConfigFromEnv(env(map[string]string{"WEFT_IPAM_BLOCK": "/28", "WEFT_IPAM_RECLAIM": "30s"}))
	if err != nil || c.IPAMBlock != 28 || c.IPAMReclaim != 30*time.Second {
		t.Fatalf("settings: %+v, %v", c, err)
	}
	_, err = ConfigFromEnv(env(map[string]string{"WEFT_IPAM_BLOCK": "31", "WEFT_IPAM_RECLAIM": "soon"}))
	for _, want := range []string{"WEFT_IPAM_BLOCK", "WEFT_IPAM_RECLAIM"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	if n := expectedHosts([]string{"198.18.6.1", "198.18.6.2:7950", "198.18.6.3"}, "198.18.6.1"); n != 3 {
		t.Fatalf("expected hosts = %d, want 3 (this host listed too)", n)
	}
	if n := expectedHosts([]string{"198.18.6.2", "198.18.6.3"}, "198.18.6.1"); n != 3 {
		t.Fatalf("expected hosts = %d, want 3", n)
	}
}

func TestLocalAdvertise(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Scope = "local"
	cfg.Peers = []string{"127.0.0.1", "127.0.0.2:7950"}
	a, err := localAdvertise(cfg)
	if err != nil || a != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("advertise = %v, %v; want the source address toward 127.0.0.1", a, err)
	}
	cfg.AdvertiseAddr = netip.MustParseAddr("198.18.0.9")
	if a, _ := localAdvertise(cfg); a.IsValid() {
		t.Fatalf("WEFT_ADVERTISE_ADDR set, yet derived %s", a)
	}
	cfg.AdvertiseAddr = netip.Addr{}
	cfg.Scope = "global"
	if a, _ := localAdvertise(cfg); a.IsValid() {
		t.Fatalf("global scope derived %s; swarm gives the address", a)
	}
}

// Three plugins' allocators on real meshes (over an in-memory network):
// concurrent requests on every host never share an address, and an
// address of another host's block is lent.
func TestIPAMOverMesh(t *testing.T) {
	net := mesh.NewMemNetwork()
	names := []string{"h1", "h2", "h3"}
	addr := func(i int) string { return fmt.Sprintf("10.99.0.%d:%d", i+1, mesh.DefaultPort) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	allocs := map[string]*goipamAlloc{}
	var meshes []*mesh.Mesh
	for i, name := range names {
		tr, err := net.NewTransport(addr(i))
		if err != nil {
			t.Fatal(err)
		}
		mc := mesh.DefaultConfig()
		mc.NodeName = name
		mc.Transport = tr
		for j := range names {
			if j != i {
				mc.Peers = append(mc.Peers, addr(j))
			}
		}
		mc.ProbeInterval, mc.GossipInterval, mc.PushPullInterval = 100*time.Millisecond, 20*time.Millisecond, time.Second
		m, err := mesh.New(mc)
		if err == nil {
			err = m.Start("", nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		meshes = append(meshes, m)
		peers := newMeshPeers(slog.New(slog.DiscardHandler))
		cfg := DefaultConfig()
		cfg.StateDir = t.TempDir()
		cfg.Peers = []string{"10.99.0.1", "10.99.0.2", "10.99.0.3"}
		cfg.IPAMBlock = 28
		a, run, err := newIPAM(cfg, nodeState{Name: name, Addr: "10.99.0." + fmt.Sprint(i+1)}, peers, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		peers.attach(m)
		run(ctx)
		if _, err := a.RequestPool(&goipam.RequestPoolRequest{Pool: "10.40.0.0/24"}); err != nil {
			t.Fatal(err)
		}
		allocs[name] = &goipamAlloc{a}
	}
	defer func() {
		cancel()
		for _, m := range meshes {
			_ = m.Close()
		}
	}()
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for _, name := range names {
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := allocs[name].RequestAddress(&goipam.RequestAddressRequest{PoolID: "10.40.0.0/24"})
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if other, dup := got[r.Address]; dup {
					t.Errorf("%s handed to %s and %s", r.Address, other, name)
				}
				got[r.Address] = name
			}()
		}
	}
	wg.Wait()
	if len(got) != 30 {
		t.Fatalf("%d addresses, want 30", len(got))
	}
	// h1 asks for a free address in a block of h2's.
	var h2addr netip.Addr
	for a, h := range got {
		if h == "h2" {
			h2addr = netip.MustParsePrefix(a).Addr()
			break
		}
	}
	want := netip.PrefixFrom(h2addr, 28).Masked().Addr()
	for range 13 { // far into the block, past the addresses h2 handed out
		want = want.Next()
	}
	r, err := allocs["h1"].RequestAddress(&goipam.RequestAddressRequest{PoolID: "10.40.0.0/24", Address: want.String()})
	if err != nil || netip.MustParsePrefix(r.Address).Addr() != want {
		t.Fatalf("h1 asked for %s in h2's block: %v, %v", want, r, err)
	}
	if _, err := allocs["h3"].RequestAddress(&goipam.RequestAddressRequest{PoolID: "10.40.0.0/24", Address: h2addr.String()}); err == nil {
		t.Fatalf("h3 got %s, in use on h2", h2addr)
	}
}

type goipamAlloc struct{ goipam.Ipam }
