package dataplane

import (
	"math/rand/v2"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// segmentKernel returns a Kernel of a fresh namespace holding the segment
// vni.
func segmentKernel(t testing.TB, vni uint32) *Kernel {
	t.Helper()
	needRoot(t)
	_, h := newNS(t)
	k := newKernel(t, h)
	if err := k.EnsureSegment(Segment{VNI: vni, MTU: 1450, Port: 4790}); err != nil {
		t.Fatal(err)
	}
	return k
}

func remote(ip, m, vtep string) RemoteEndpoint {
	return RemoteEndpoint{IP: net.ParseIP(ip).To4(), MAC: mac(m), VTEP: net.ParseIP(vtep).To4()}
}

// TestSetRemotesStates applies a sequence of desired states in random
// order and checks after every step that the kernel holds exactly the
// desired entries, that SetRemotes reported what it changed, and that a
// second call with the same state changes nothing.
func TestSetRemotesStates(t *testing.T) {
	k := segmentKernel(t, 99)
	a := remote("10.9.0.2", "02:77:0a:09:00:02", "198.18.0.2")
	b := remote("10.9.0.3", "02:77:0a:09:00:03", "198.18.0.3")
	c := remote("10.9.0.4", "02:77:0a:09:00:04", "198.18.0.2")
	bMoved := remote("10.9.0.3", "02:77:0a:09:00:03", "198.18.0.9")
	bNewMAC := remote("10.9.0.3", "02:77:0a:09:00:33", "198.18.0.3")
	states := [][]RemoteEndpoint{{}, {a}, {a, b}, {a, b, c}, {b}, {bMoved, c}, {bNewMAC}, {a, c}}
	order := rand.Perm(len(states))
	order = append(order, rand.Perm(len(states))...)
	var prev []RemoteEndpoint
	for _, i := range order {
		want := states[i]
		rep, err := k.SetRemotes(99, want)
		if err != nil {
			t.Fatalf("SetRemotes(state %d): %v", i, err)
		}
		if exp := expectedRepair(prev, want); rep != exp {
			t.Fatalf("state %d after %v: repair %+v, want %+v", i, keys(prev), rep, exp)
		}
		checkRemotes(t, k, 99, want)
		if rep, err := k.SetRemotes(99, want); err != nil || rep != (Repair{}) {
			t.Fatalf("state %d applied again: repair %+v, err %v; want nothing changed", i, rep, err)
		}
		prev = want
	}
	if _, err := k.SetRemotes(12345, nil); err == nil {
		t.Fatal("SetRemotes on a missing device succeeded")
	}
}

// expectedRepair is what SetRemotes must report going from the entries of
// prev to those of want.
func expectedRepair(prev, want []RemoteEndpoint) Repair {
	var r Repair
	prevFDB, prevARP := map[string]string{}, map[string]string{}
	for _, p := range prev {
		prevFDB[p.MAC.String()] = p.VTEP.String()
		prevARP[p.IP.String()] = p.MAC.String()
	}
	wantFDB, wantARP := map[string]bool{}, map[string]bool{}
	for _, w := range want {
		wantFDB[w.MAC.String()], wantARP[w.IP.String()] = true, true
		if prevFDB[w.MAC.String()] != w.VTEP.String() {
			r.FDBAdded++
		}
		if prevARP[w.IP.String()] != w.MAC.String() {
			r.NeighAdded++
		}
	}
	for m := range prevFDB {
		if !wantFDB[m] {
			r.FDBRemoved++
		}
	}
	for ip := range prevARP {
		if !wantARP[ip] {
			r.NeighRemoved++
		}
	}
	return r
}

// checkRemotes fails t unless the device of vni holds exactly the entries
// of want, and no other static entry of either kind.
func checkRemotes(t *testing.T, k *Kernel, vni uint32, want []RemoteEndpoint) {
	t.Helper()
	got, err := k.Remotes(vni)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys(got), keys(want)) {
		t.Fatalf("kernel has %v, want %v", keys(got), keys(want))
	}
	link, err := k.h.LinkByName(DeviceName(vni))
	if err != nil {
		t.Fatal(err)
	}
	fdb, _ := k.h.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	arp, _ := k.h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if n := countPermanent(fdb); n != len(want) {
		t.Fatalf("%d permanent FDB entries, want %d", n, len(want))
	}
	if n := countPermanent(arp); n != len(want) {
		t.Fatalf("%d permanent neighbours, want %d", n, len(want))
	}
}

func countPermanent(ns []netlink.Neigh) int {
	n := 0
	for _, e := range ns {
		if e.IP != nil && e.State&netlink.NUD_PERMANENT != 0 {
			n++
		}
	}
	return n
}

func keys(ps []RemoteEndpoint) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, remoteKey(p))
	}
	slices.Sort(out)
	return out
}

// TestSetRemoteDeleteRemote: the per-change writes add, move and replace
// one endpoint's entries, are idempotent, and DeleteRemote removes only
// what it is given: the FDB entry towards that VTEP, the neighbour of that
// IP, not an entry that points elsewhere now.
func TestSetRemoteDeleteRemote(t *testing.T) {
	k := segmentKernel(t, 98)
	a := remote("10.8.0.2", "02:77:0a:08:00:02", "198.18.0.2")
	b := remote("10.8.0.3", "02:77:0a:08:00:03", "198.18.0.3")
	set := func(r RemoteEndpoint) {
		t.Helper()
		if err := k.SetRemote(98, r); err != nil {
			t.Fatalf("SetRemote(%s): %v", remoteKey(r), err)
		}
	}
	del := func(r RemoteEndpoint) {
		t.Helper()
		if err := k.DeleteRemote(98, r); err != nil {
			t.Fatalf("DeleteRemote(%s): %v", remoteKey(r), err)
		}
	}
	set(a)
	set(a)
	set(b)
	checkRemotes(t, k, 98, []RemoteEndpoint{a, b})

	// b moves to another host: its FDB entry follows; deleting it towards
	// the old host is a no-op.
	bMoved := remote("10.8.0.3", "02:77:0a:08:00:03", "198.18.0.9")
	set(bMoved)
	checkRemotes(t, k, 98, []RemoteEndpoint{a, bMoved})
	del(RemoteEndpoint{MAC: b.MAC, VTEP: b.VTEP})
	checkRemotes(t, k, 98, []RemoteEndpoint{a, bMoved})

	// a is re-created with a new MAC at the same address: the new entry
	// replaces the neighbour; the caller removes the old MAC's FDB entry
	// alone (nil IP), since the IP is held by the new endpoint.
	aNew := remote("10.8.0.2", "02:77:0a:08:00:22", "198.18.0.2")
	set(aNew)
	del(RemoteEndpoint{MAC: a.MAC, VTEP: a.VTEP})
	checkRemotes(t, k, 98, []RemoteEndpoint{aNew, bMoved})

	// Whole deletes, twice: the second finds nothing, which is done.
	for range 2 {
		del(aNew)
		del(bMoved)
	}
	checkRemotes(t, k, 98, nil)

	if err := k.SetRemote(98, RemoteEndpoint{IP: net.ParseIP("10.8.0.9"), MAC: mac("02:77:0a:08:00:09")}); err == nil {
		t.Fatal("SetRemote without a VTEP succeeded")
	}
	if err := k.SetRemote(12345, a); err == nil {
		t.Fatal("SetRemote on a missing device succeeded")
	}
	if err := k.DeleteRemote(12345, a); err != nil {
		t.Fatalf("DeleteRemote on a missing device: %v", err)
	}
}

// BenchmarkPerChange is one remote endpoint added and removed on a device
// that holds 10,000: through the whole-table repair (how every change was
// applied before the per-change writes) and through SetRemote and
// DeleteRemote. make bench reports the same with its spread (bench part
// "kernel").
func BenchmarkPerChange(b *testing.B) {
	k := segmentKernel(b, 97)
	table := make([]RemoteEndpoint, 10_000)
	for i := range table {
		ip := net.IPv4(10, 97, byte(i>>8), byte(i)).To4()
		table[i] = RemoteEndpoint{IP: ip, MAC: net.HardwareAddr{2, 0x77, 10, 97, ip[2], ip[3]}, VTEP: net.IPv4(198, 18, 1, byte(i%200+1)).To4()}
	}
	if _, err := k.SetRemotes(97, table); err != nil {
		b.Fatal(err)
	}
	one := remote("10.98.0.1", "02:77:0a:62:00:01", "198.18.1.1")
	b.Run("SetRemotes", func(b *testing.B) {
		more := append(slices.Clone(table), one)
		for b.Loop() {
			if _, err := k.SetRemotes(97, more); err != nil {
				b.Fatal(err)
			}
			if _, err := k.SetRemotes(97, table); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SetRemote+DeleteRemote", func(b *testing.B) {
		for b.Loop() {
			if err := k.SetRemote(97, one); err != nil {
				b.Fatal(err)
			}
			if err := k.DeleteRemote(97, one); err != nil {
				b.Fatal(err)
			}
		}
	})
}
