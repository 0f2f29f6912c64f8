package dataplane

import (
	"slices"
	"strings"
	"testing"
)

// TestInspect builds, with iproute2, what weft and Docker leave in a host
// namespace (a weft VXLAN device with static entries, endpoint children, a
// foreign VXLAN device, a bridge with a veth) and one child moved into
// another namespace, and reads it back.
func TestInspect(t *testing.T) {
	needRoot(t)
	host, _ := newNS(t)
	ctr, _ := newNS(t)
	ip := func(args ...string) { run(t, append([]string{"ip", "-n", host}, args...)...) }
	ip("link", "add", "weft77", "mtu", "1400", "type", "vxlan", "id", "77", "dstport", "4790", "nolearning", "proxy")
	ip("link", "set", "weft77", "up")
	ip("link", "add", "other5", "type", "vxlan", "id", "5", "dstport", "4789")
	ip("link", "add", "wv0123456789ab", "link", "weft77", "address", "02:77:0a:00:00:02", "type", "macvlan", "mode", "bridge")
	ip("link", "add", "wvmoved", "link", "weft77", "type", "macvlan", "mode", "bridge")
	ip("link", "set", "wvmoved", "netns", ctr)
	ip("link", "add", "br9", "type", "bridge")
	ip("link", "add", "vA", "type", "veth", "peer", "name", "vB")
	ip("link", "set", "vA", "master", "br9")
	run(t, "bridge", "-n", host, "fdb", "append", "02:77:0a:00:00:03", "dev", "weft77", "dst", "198.18.0.3", "self", "permanent")
	run(t, "bridge", "-n", host, "fdb", "append", "02:77:0a:00:00:04", "dev", "weft77", "dst", "198.18.0.4", "self", "permanent")
	ip("neigh", "replace", "10.0.0.3", "lladdr", "02:77:0a:00:00:03", "dev", "weft77", "nud", "permanent")
	ip("neigh", "replace", "10.0.0.4", "lladdr", "02:77:0a:00:00:04", "dev", "weft77", "nud", "permanent")

	s, err := Inspect("/run/netns/" + host)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Devices) != 1 {
		t.Fatalf("devices %+v, want weft77 only", s.Devices)
	}
	d := s.Devices[0]
	if d.Name != "weft77" || d.VNI != 77 || d.Port != 4790 || d.MTU != 1400 || d.Learning || !d.Proxy || !d.Up || d.Kind != "vxlan" {
		t.Errorf("device %+v", d)
	}
	var fdb, neigh []string
	for _, e := range d.FDB {
		if e.Permanent {
			fdb = append(fdb, e.String())
		}
	}
	for _, e := range d.Neighbors {
		neigh = append(neigh, e.String()+map[bool]string{true: " permanent"}[e.Permanent])
	}
	if want := []string{"02:77:0a:00:00:03 198.18.0.3", "02:77:0a:00:00:04 198.18.0.4"}; !slices.Equal(fdb, want) {
		t.Errorf("static FDB %q, want %q", fdb, want)
	}
	if want := []string{"10.0.0.3 02:77:0a:00:00:03 permanent", "10.0.0.4 02:77:0a:00:00:04 permanent"}; !slices.Equal(neigh, want) {
		t.Errorf("neighbours %q, want %q", neigh, want)
	}

	mv := s.Link("wv0123456789ab")
	if mv == nil || mv.Kind != "macvlan" || mv.Parent != "weft77" || mv.MacvlanMode != "bridge" || mv.MTU != 1400 || mv.MAC.String() != "02:77:0a:00:00:02" {
		t.Errorf("macvlan child %+v", mv)
	}
	if l := s.LinksOfKind("macvlan"); len(l) != 1 {
		t.Errorf("macvlans in the host namespace %+v, want one", l)
	}
	if a := s.Link("vA"); a == nil || a.Kind != "veth" || a.Master != "br9" || a.Parent != "vB" {
		t.Errorf("veth %+v", a)
	}
	if b := s.Link("br9"); b == nil || b.Kind != "bridge" || b.Up {
		t.Errorf("bridge %+v", b)
	}
	if o := s.Link("other5"); o == nil || o.Kind != "vxlan" {
		t.Errorf("foreign VXLAN device %+v", o)
	}

	// In the other namespace: the child, whose parent is elsewhere.
	c, err := Inspect("/run/netns/" + ctr)
	if err != nil {
		t.Fatal(err)
	}
	moved := c.Link("wvmoved")
	if moved == nil || moved.Kind != "macvlan" || moved.Parent != "" || moved.MTU != 1400 || len(c.Devices) != 0 {
		t.Errorf("moved child %+v, devices %+v", moved, c.Devices)
	}
	if _, err := Inspect("/run/netns/nosuch-weft-ns"); err == nil {
		t.Error("Inspect of a missing namespace succeeded")
	}
}

// TestWatchEntries: the watch records the entries set and deleted on weft
// devices after it starts, and nothing of other devices.
func TestWatchEntries(t *testing.T) {
	needRoot(t)
	host, _ := newNS(t)
	ip := func(args ...string) { run(t, append([]string{"ip", "-n", host}, args...)...) }
	fdb := func(args ...string) { run(t, append([]string{"bridge", "-n", host, "fdb"}, args...)...) }
	ip("link", "add", "weft8", "type", "vxlan", "id", "8", "dstport", "4790", "nolearning", "proxy")
	ip("link", "add", "other8", "type", "vxlan", "id", "9", "dstport", "4790", "nolearning", "proxy")
	for _, dev := range []string{"weft8", "other8"} {
		fdb("append", "02:77:0a:00:00:03", "dev", dev, "dst", "198.18.0.3", "self", "permanent")
		ip("neigh", "replace", "10.0.0.3", "lladdr", "02:77:0a:00:00:03", "dev", dev, "nud", "permanent")
	}

	w, err := WatchEntries("/run/netns/" + host)
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{"weft8", "other8"} {
		fdb("del", "02:77:0a:00:00:03", "dev", dev, "self")
		ip("neigh", "del", "10.0.0.3", "dev", dev)
		fdb("append", "02:77:0a:00:00:05", "dev", dev, "dst", "198.18.0.5", "self", "permanent")
	}
	// Entries that go with their device are reported too.
	ip("link", "del", "weft8")
	changes, err := w.Stop()
	if err != nil {
		t.Fatal(err)
	}
	// A neighbour entry's deletion comes after a change to "failed",
	// and neither names the MAC.
	var got []string
	for _, c := range changes {
		if c.FDB || c.Deleted {
			got = append(got, c.String())
		}
	}
	want := []string{
		"deleted fdb 02:77:0a:00:00:03 dst 198.18.0.3 dev weft8",
		"deleted neighbour 10.0.0.3 lladdr - dev weft8",
		"set fdb 02:77:0a:00:00:05 dst 198.18.0.5 dev weft8",
		"deleted fdb 02:77:0a:00:00:05 dst 198.18.0.5 dev weft8",
	}
	if !slices.Equal(got, want) {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if again, err := w.Stop(); err != nil || len(again) != len(changes) {
		t.Errorf("second Stop: %d changes, %v", len(again), err)
	}
}
