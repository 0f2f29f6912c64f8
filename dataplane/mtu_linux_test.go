package dataplane

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestPathMTU: a host whose default route leaves by a 9000-byte interface
// while its VTEP and the other hosts sit on a 1500-byte one (the lab of
// the MTU 8950 bug) gets the 1500 of the VXLAN path, not the default
// route's 9000; a route with its own MTU metric narrows the path; nothing
// known is no answer, and the fallback is the narrowest interface.
func TestPathMTU(t *testing.T) {
	needRoot(t)
	h, hh := newNS(t)
	o, _ := newNS(t) // the other ends
	k := newKernel(t, hh)
	veth := func(name string, mtu, addr string) {
		run(t, "ip", "link", "add", name, "netns", h, "mtu", mtu, "type", "veth", "peer", "name", name+"p", "netns", o, "mtu", mtu)
		run(t, "ip", "-n", h, "addr", "add", addr, "dev", name)
		run(t, "ip", "-n", h, "link", "set", name, "up")
		run(t, "ip", "-n", o, "link", "set", name+"p", "up")
	}
	veth("wbig", "9000", "10.99.0.1/24")
	veth("wvx", "1500", "198.18.95.1/24")
	run(t, "ip", "-n", h, "route", "add", "default", "via", "10.99.0.254")
	run(t, "ip", "-n", h, "route", "add", "198.18.94.0/24", "via", "198.18.95.254", "mtu", "1400")
	// Neither counts for the fallback: one is down, one has no IPv4 address.
	run(t, "ip", "-n", h, "link", "add", "wdown", "mtu", "1280", "type", "veth", "peer", "name", "wdownp")
	run(t, "ip", "-n", h, "addr", "add", "10.98.0.1/24", "dev", "wdown")
	run(t, "ip", "-n", h, "link", "add", "wnoaddr", "mtu", "1280", "type", "veth", "peer", "name", "wnoaddrp")
	run(t, "ip", "-n", h, "link", "set", "wnoaddr", "up")

	ips := func(ss ...string) []net.IP {
		var out []net.IP
		for _, s := range ss {
			out = append(out, net.ParseIP(s))
		}
		return out
	}
	vtep := net.ParseIP("198.18.95.1")
	for _, c := range []struct {
		name    string
		local   net.IP
		remotes []net.IP
		mtu     int
		ok      bool
	}{
		{"remotes on the VXLAN interface", vtep, ips("198.18.95.2", "198.18.95.3"), 1500, true},
		{"VTEP not known yet, remotes known", nil, ips("198.18.95.2"), 1500, true},
		{"no remotes: the VTEP's interface", vtep, nil, 1500, true},
		{"a remote behind a route with an MTU", vtep, ips("198.18.95.2", "198.18.94.5"), 1400, true},
		{"a remote beyond the default route", vtep, ips("192.0.2.9"), 9000, true},
		{"only this host itself", vtep, ips("198.18.95.1"), 1500, true},
		{"nothing known", nil, nil, 0, false},
		{"a VTEP not on this host", net.ParseIP("192.0.2.77"), nil, 0, false},
	} {
		mtu, ok := k.PathMTU(c.local, c.remotes)
		if mtu != c.mtu || ok != c.ok {
			t.Errorf("%s: PathMTU = %d, %v; want %d, %v", c.name, mtu, ok, c.mtu, c.ok)
		}
	}
	if got := k.FallbackMTU(); got != 1500 {
		t.Errorf("FallbackMTU = %d, want 1500 (the narrowest up interface with an address)", got)
	}
}

// TestLoweredMTUReachesContainers: lowering a segment's MTU in place lowers
// its children's, inside the containers' namespaces too; raising it again
// leaves them (only a child made afterwards gets the larger MTU).
func TestLoweredMTUReachesContainers(t *testing.T) {
	needRoot(t)
	l := newHosts(t, 93)
	l.segment(t, 0, 530)
	_, ch := l.container(t, 0, 530, "wc1", mac("02:77:0a:35:00:01"), "10.53.0.1/24")
	childMTU := func() int {
		t.Helper()
		h, err := netlink.NewHandleAt(ch)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		link, err := h.LinkByName("wc1")
		if err != nil {
			t.Fatal(err)
		}
		return link.Attrs().MTU
	}
	ensure := func(mtu int) {
		t.Helper()
		if err := l.k[0].EnsureSegment(Segment{VNI: 530, MTU: mtu, Port: 4790}); err != nil {
			t.Fatal(err)
		}
	}
	ensure(1400)
	if got := childMTU(); got != 1400 {
		t.Fatalf("container's interface MTU %d after the segment went to 1400", got)
	}
	ensure(1450)
	if got := childMTU(); got != 1400 {
		t.Fatalf("container's interface MTU %d after the segment went back to 1450; the kernel leaves it at 1400", got)
	}
	if err := l.k[0].CreateInterface(530, "wc2", mac("02:77:0a:35:00:02")); err != nil {
		t.Fatal(err)
	}
	link, err := l.k[0].h.LinkByName("wc2")
	if err != nil || link.Attrs().MTU != 1450 {
		t.Fatalf("a new interface: %v, %v; want MTU 1450", link, err)
	}
}
