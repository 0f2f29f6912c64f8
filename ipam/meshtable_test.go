package ipam

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goipam "github.com/docker/go-plugins-helpers/ipam"

	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/mesh/meshtest"
)

func TestExpectedHosts(t *testing.T) {
	if n := ExpectedHosts([]string{"198.18.6.1", "198.18.6.2:7950", "198.18.6.3"}, "198.18.6.1"); n != 3 {
		t.Fatalf("expected hosts = %d, want 3 (this host listed too)", n)
	}
	if n := ExpectedHosts([]string{"198.18.6.2", "198.18.6.3"}, "198.18.6.1"); n != 3 {
		t.Fatalf("expected hosts = %d, want 3", n)
	}
}

// Three allocators on real meshes (over an in-memory network), their
// tables fed by the mesh's events: concurrent requests on every host never
// share an address, and an address of another host's block is lent.
func TestAllocatorsOverMesh(t *testing.T) {
	names := []string{"h1", "h2", "h3"}
	c := meshtest.New(t, names, nil)
	ctx, cancel := context.WithCancel(context.Background())
	// The loops end, and write no more state, before the test's state
	// directories are removed (a loop still writing failed the cleanup).
	var loops sync.WaitGroup
	defer func() { cancel(); loops.Wait() }()
	allocs := map[string]*goipamAlloc{}
	for i, name := range names {
		table := NewMeshTable(c.Members[i])
		loops.Go(func() { table.Run(ctx) })
		cfg := DefaultConfig()
		cfg.StateDir = t.TempDir()
		cfg.Table = table
		cfg.ExpectedHosts = 3
		cfg.BlockBits = 28
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		loops.Go(func() { a.Run(ctx) })
		if _, err := a.RequestPool(&goipam.RequestPoolRequest{Pool: "10.40.0.0/24"}); err != nil {
			t.Fatal(err)
		}
		allocs[name] = &goipamAlloc{a}
	}
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

// TestAliveOnePerAddress: members posing as several (extra mesh nodes on
// other ports of one address, with the gossip key) give no voter; the
// hosts at addresses of their own do (the positive control).
func TestAliveOnePerAddress(t *testing.T) {
	c := meshtest.New(t, []string{"h1", "h2", "h3"}, nil)
	table := NewMeshTable(c.Members[0])
	want := "h1 h2 h3"
	if got := strings.Join(slices.Sorted(slices.Values(table.Alive())), " "); got != want {
		t.Fatalf("alive voters %q, want %q", got, want)
	}
	// Two fakes on h3's address, another port each.
	host, _, _ := net.SplitHostPort(c.Addr(2))
	for i, name := range []string{"fake1", "fake2"} {
		addr := net.JoinHostPort(host, strconv.Itoa(mesh.DefaultPort+1+i))
		tr, err := c.Net.NewTransport(addr)
		if err != nil {
			t.Fatal(err)
		}
		cfg := meshtest.Config(name)
		cfg.Transport = tr
		m, err := mesh.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		if err := m.Start(addr, []string{c.Addr(0)}); err != nil {
			t.Fatal(err)
		}
	}
	meshtest.WaitFor(t, 10*time.Second, "the fakes alive on h1", func() error {
		if n := len(c.Members[0].Members()); n != 5 {
			return fmt.Errorf("h1 knows %d members", n)
		}
		return nil
	})
	want = "h1 h2"
	if got := strings.Join(slices.Sorted(slices.Values(table.Alive())), " "); got != want {
		t.Fatalf("alive voters with fakes at h3's address %q, want %q", got, want)
	}
}

func TestKeyOwner(t *testing.T) {
	b := netip.MustParsePrefix("10.1.0.0/28")
	for _, k := range []string{hostKey("h1"), claimKey("h1", b), voteKey("h1", b), deadKey("h1", "h2"), grantKey("h1", "h2", b.Addr())} {
		if o := KeyOwner(k); o != "h1" {
			t.Fatalf("owner of %s: %q", k, o)
		}
	}
}
