package dataplane

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The probe port lives apart from the host: nothing of it in the host's
// namespace (no device, no address), yet its packets leave by the host's
// VXLAN socket on the networks' port; its entries follow SetPeers; and
// once closed, the VNI is free for a new port at once (a plugin restart).
func TestProbePort(t *testing.T) {
	needRoot(t)
	l := newHosts(t, 98)
	a4, b4 := netip.AddrFrom4([4]byte(l.vtep[0])), netip.AddrFrom4([4]byte(l.vtep[1]))
	pa, err := l.k[0].OpenProbe(a4, 4790)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { pa.Close() }()
	pb, err := l.k[1].OpenProbe(b4, 4790)
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	for i, h := range l.ns {
		nh, err := netlink.NewHandleAt(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nh.LinkByName(probeDevice); err == nil {
			t.Fatalf("host %d: the probe device is in the host's namespace", i)
		}
		nh.Close()
	}
	exchange := func(size int) bool {
		t.Helper()
		b := make([]byte, size-28)
		if _, err := pa.Conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(b4, ProbeUDPPort)); err != nil {
			return false
		}
		// Earlier probes may arrive first: one sent before its peer's
		// entries existed waits in the neighbour's queue until they do.
		_ = pb.Conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, from, err := pb.Conn.ReadFromUDPAddrPort(make([]byte, 65536))
			if err != nil {
				return false
			}
			if n == size-28 && from.Addr() == a4 {
				return true
			}
		}
	}
	if exchange(100) {
		t.Fatal("a probe passed before any entry was written (flooding?)")
	}
	for _, p := range []*ProbePort{pa, pb} {
		if err := p.SetPeers([]netip.Addr{a4, b4}); err != nil {
			t.Fatal(err)
		}
		if err := p.SetPeers([]netip.Addr{b4, a4}); err != nil { // again: nothing to do
			t.Fatal(err)
		}
	}
	if !exchange(100) || !exchange(1450) {
		t.Fatal("probes of 100 and 1450 bytes do not pass between the hosts")
	}
	if err := pa.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	nh, err := netlink.NewHandleAt(pa.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	link, err := nh.LinkByName(probeDevice)
	if err != nil {
		t.Fatal(err)
	}
	if fdb, _ := nh.NeighList(link.Attrs().Index, unix.AF_BRIDGE); countPermanent(fdb) != 0 {
		t.Fatalf("FDB entries left after SetPeers(nil): %v", fdb)
	}
	if exchange(100) {
		t.Fatal("a probe passed with the entries removed")
	}
	// A restart: closed, and at once made again on the same VNI.
	pa.Close()
	if pa, err = l.k[0].OpenProbe(a4, 4790); err != nil {
		t.Fatalf("the probe port made again after Close: %v", err)
	}
	if err := pa.SetPeers([]netip.Addr{b4}); err != nil || !exchange(100) {
		t.Fatalf("the new probe port does not pass probes: %v", err)
	}
	if mac := ProbeMAC(b4); mac.String() != "02:70:c6:12:62:02" {
		t.Fatalf("ProbeMAC(%s) = %s", b4, mac)
	}
}
