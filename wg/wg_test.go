package wg

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

func TestOverlay(t *testing.T) {
	sub := netip.MustParsePrefix("10.250.0.0/16")
	for _, c := range []struct{ vtep, want string }{
		{"198.18.65.3", "10.250.65.3"},
		{"192.168.1.20", "10.250.1.20"},
		{"::ffff:172.16.4.5", "10.250.4.5"},
		{"10.0.0.0", ""},     // the subnet's own address
		{"10.1.255.255", ""}, // its broadcast
		{"2001:db8::1", ""},  // not IPv4
	} {
		got, err := Overlay(sub, netip.MustParseAddr(c.vtep))
		if c.want == "" {
			if err == nil {
				t.Errorf("Overlay(%s) = %s, want an error", c.vtep, got)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("Overlay(%s) = %s, %v; want %s", c.vtep, got, err, c.want)
		}
	}
	if _, err := Overlay(netip.MustParsePrefix("10.250.0.0/24"), netip.MustParseAddr("1.2.3.4")); err == nil {
		t.Error("a /24 subnet accepted")
	}
}

// The tunnel's three /16s follow the home subnet; each host has a home
// address and one source address per slot, all from its VTEP's low bits.
func TestAddresses(t *testing.T) {
	sub := netip.MustParsePrefix("10.250.0.0/16")
	subs, err := Subnets(sub)
	if err != nil || subs[0].String() != "10.250.0.0/16" || subs[1].String() != "10.251.0.0/16" || subs[2].String() != "10.252.0.0/16" {
		t.Fatalf("Subnets: %v, %v", subs, err)
	}
	vtep := netip.MustParseAddr("198.18.65.3")
	all, err := Addresses(sub, vtep)
	if err != nil || len(all) != 3 || all[0].String() != "10.250.65.3" || all[1].String() != "10.251.65.3" || all[2].String() != "10.252.65.3" {
		t.Fatalf("Addresses: %v, %v", all, err)
	}
	if _, err := Subnets(netip.MustParsePrefix("10.254.0.0/16")); err == nil {
		t.Error("10.254.0.0/16 accepted: no room for two /16s after it")
	}
	for _, c := range []struct{ name, want string }{{"weftwg0", "weftwg1"}, {"wgt12a", "wgt12a1"}} {
		if got := SlotName(c.name, 1); got != c.want || SlotName(c.name, 0) != c.name {
			t.Errorf("SlotName(%s, 1) = %s, want %s", c.name, got, c.want)
		}
	}
}

// A host's record during a rotation gives two peers: its new key with
// its home address and the new slot's source, its old key with the old
// slot's source only (an address belongs to one peer).
func TestPeersOfARotatingHost(t *testing.T) {
	k1, _ := wgtypes.GeneratePrivateKey()
	k2, _ := wgtypes.GeneratePrivateKey()
	tun := &Tunnel{cfg: Config{Subnet: netip.MustParsePrefix("10.250.0.0/16"), Store: nameStore("h1")}, log: slog.New(slog.DiscardHandler)}
	rec := Record{Key: k2.PublicKey().String(), VTEP: "198.18.0.2", Port: 51821, Slot: 1,
		Old: &OldKey{Key: k1.PublicKey().String(), Port: 51820, Slot: 0}}
	members := map[string]netip.Addr{"h2": netip.MustParseAddr("198.18.0.2")}
	got := tun.wantPeersLocked(map[string]Record{"h2": rec}, members, netip.MustParseAddr("10.250.0.1"))
	newP, oldP := got[k2.PublicKey()], got[k1.PublicKey()]
	if len(got) != 2 || !newP.newest || oldP.newest {
		t.Fatalf("peers %+v", got)
	}
	if fmt.Sprint(newP.allowed) != "[10.250.0.2 10.252.0.2]" || newP.endpoint.String() != "198.18.0.2:51821" {
		t.Errorf("new key's peer: allowed %v, endpoint %s", newP.allowed, newP.endpoint)
	}
	if fmt.Sprint(oldP.allowed) != "[10.251.0.2]" || oldP.endpoint.String() != "198.18.0.2:51820" {
		t.Errorf("old key's peer: allowed %v, endpoint %s", oldP.allowed, oldP.endpoint)
	}
	// An old key on the same slot as the new one is refused (the two
	// would share a source address): the new key alone is kept.
	rec.Old.Slot = 1
	if got := tun.wantPeersLocked(map[string]Record{"h2": rec}, members, netip.MustParseAddr("10.250.0.1")); len(got) != 1 {
		t.Errorf("an old key on the new key's slot gave peers %+v", got)
	}
}

// nameStore is a Store that knows its own name only.
type nameStore string

func (s nameStore) LocalNode() string                      { return string(s) }
func (nameStore) Put(string, string, []byte)               {}
func (nameStore) Delete(string, string)                    {}
func (nameStore) Watch(string, bool) *feed.Sub[mesh.Event] { return nil }
func (nameStore) Synced() bool                             { return true }
