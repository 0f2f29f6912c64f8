package wg

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The writes of a rotation as another host sees it: the new key's peer is
// made with its source address only, then given the home address (which
// leaves the old key in that step), and no list is replaced; when the
// rotation ends the old key's peer goes, in the last write. Neither the
// home address nor a source is ever left without a peer.
func TestPlanMovesAddressesByAdding(t *testing.T) {
	k0, _ := wgtypes.GeneratePrivateKey()
	k1, _ := wgtypes.GeneratePrivateKey()
	old, nw := k0.PublicKey(), k1.PublicKey()
	home, s0, s1 := netip.MustParseAddr("10.250.0.2"), netip.MustParseAddr("10.251.0.2"), netip.MustParseAddr("10.252.0.2")
	ka := 25 * time.Second
	ep0 := netip.MustParseAddrPort("198.18.0.2:51820")
	ep1 := netip.MustParseAddrPort("198.18.0.2:51821")
	have := []wgtypes.Peer{{PublicKey: old, Endpoint: net.UDPAddrFromAddrPort(ep0), PersistentKeepaliveInterval: ka,
		AllowedIPs: []net.IPNet{host32(home), host32(s0)}}}
	want := map[wgtypes.Key]peer{
		nw:  {key: nw, endpoint: ep1, allowed: []netip.Addr{home, s1}, newest: true},
		old: {key: old, endpoint: ep0, allowed: []netip.Addr{s0}},
	}
	made, sets, removes := planPeers(have, want, ka, true)
	if len(made) != 1 || made[0].PublicKey != nw || !slices.Equal(ipStrings(made[0].AllowedIPs), []string{s1.String() + "/32"}) {
		t.Fatalf("made %+v; want the new key with its source only", made)
	}
	if len(sets) != 1 || sets[0].PublicKey != nw || sets[0].ReplaceAllowedIPs || !slices.Equal(ipStrings(sets[0].AllowedIPs), []string{home.String() + "/32"}) {
		t.Fatalf("sets %+v; want the home address added to the new key, nothing replaced", sets)
	}
	if len(removes) != 0 {
		t.Fatalf("removes %+v during the rotation", removes)
	}

	// The rotation over: the old key's peer goes, nothing else is written.
	have = []wgtypes.Peer{
		{PublicKey: nw, Endpoint: net.UDPAddrFromAddrPort(ep1), PersistentKeepaliveInterval: ka, AllowedIPs: []net.IPNet{host32(home), host32(s1)}},
		{PublicKey: old, Endpoint: net.UDPAddrFromAddrPort(ep0), PersistentKeepaliveInterval: ka, AllowedIPs: []net.IPNet{host32(s0)}},
	}
	delete(want, old)
	made, sets, removes = planPeers(have, want, ka, true)
	if len(made)+len(sets) != 0 || len(removes) != 1 || removes[0].PublicKey != old || !removes[0].Remove {
		t.Fatalf("made %+v, sets %+v, removes %+v; want the old key removed alone", made, sets, removes)
	}
	// Without prune (the mesh not yet whole) nothing is removed.
	if _, _, removes = planPeers(have, want, ka, false); len(removes) != 0 {
		t.Fatalf("removed %+v before the mesh was whole", removes)
	}

	// An address no peer is to have any more is dropped by replacing
	// that peer's list.
	have = []wgtypes.Peer{{PublicKey: nw, Endpoint: net.UDPAddrFromAddrPort(ep1), PersistentKeepaliveInterval: ka, AllowedIPs: []net.IPNet{host32(home), host32(s1), host32(s0)}}}
	_, sets, _ = planPeers(have, want, ka, true)
	if len(sets) != 1 || !sets[0].ReplaceAllowedIPs || len(sets[0].AllowedIPs) != 2 {
		t.Fatalf("sets %+v; want the list replaced by home and its source", sets)
	}
}

func ipStrings(ns []net.IPNet) []string {
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		out = append(out, n.String())
	}
	slices.Sort(out)
	return out
}
