package labtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/status"
	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/wg"
)

// dockerEndpoint is one container's interface on a weft network, as Docker
// has it.
type dockerEndpoint struct {
	host    *lab.Host
	vni     uint32
	ip, mac string
	ip6     string // on a dual-stack network
}

// dockerNetwork is a weft network as one engine has it. The VNI is in its
// options when swarm allocated it; a local network's is known to weft only.
type dockerNetwork struct {
	id        string
	vni       uint32 // 0: not in Docker's options
	multicast bool   // -o weft.multicast=true
	encrypted bool   // -o encrypted
	endpoints []dockerEndpoint
}

// dockerView is what Docker has on one host.
type dockerView struct {
	nets []dockerNetwork
}

func readDocker(ctx context.Context, h *lab.Host) (dockerView, error) {
	var v dockerView
	ids, err := h.Docker(ctx, "network", "ls", "-q", "--filter", "driver="+h.Config().PluginName)
	if err != nil {
		return v, err
	}
	if f := strings.Fields(ids); len(f) > 0 {
		out, err := h.Docker(ctx, append([]string{"network", "inspect", "--format", "{{json .}}"}, f...)...)
		if err != nil {
			return v, err
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var n struct {
				ID         string `json:"Id"`
				Name       string
				Options    map[string]string
				Containers map[string]struct {
					MacAddress  string
					IPv4Address string
					IPv6Address string
				}
			}
			if err := json.Unmarshal([]byte(line), &n); err != nil {
				return v, fmt.Errorf("%s: network inspect: %w", h.Name, err)
			}
			// A swarm manager lists every swarm network, also those its
			// engine has not made here (no container of this host on
			// them, so the driver was never asked): their Containers are
			// null, never {}. weft has nothing of theirs on this host.
			if n.Containers == nil {
				continue
			}
			dn := dockerNetwork{id: n.ID, multicast: n.Options["weft.multicast"] == "true"}
			if v, ok := n.Options["encrypted"]; ok && v != "false" {
				dn.encrypted = true
			}
			if s, ok := n.Options["weft.vni"]; ok {
				vni, err := strconv.ParseUint(s, 10, 32)
				if err != nil {
					return v, fmt.Errorf("%s: network %s has weft.vni %q", h.Name, n.Name, s)
				}
				dn.vni = uint32(vni)
			}
			for _, c := range n.Containers {
				ip, _, _ := strings.Cut(c.IPv4Address, "/")
				ip6, _, _ := strings.Cut(c.IPv6Address, "/")
				dn.endpoints = append(dn.endpoints, dockerEndpoint{host: h, ip: ip, ip6: ip6, mac: c.MacAddress})
			}
			v.nets = append(v.nets, dn)
		}
	}
	return v, nil
}

// entryDiff describes how have differs from want (both lists of entries),
// naming duplicates too.
func entryDiff(what string, have, want []string) []string {
	var out []string
	count := map[string]int{}
	for _, e := range have {
		count[e]++
		if count[e] == 2 {
			out = append(out, what+" duplicated: "+e)
		}
	}
	wanted := map[string]bool{}
	for _, e := range want {
		wanted[e] = true
		if count[e] == 0 {
			out = append(out, what+" missing: "+e)
		}
	}
	for e := range count {
		if !wanted[e] {
			out = append(out, what+" stale: "+e)
		}
	}
	slices.Sort(out)
	return out
}

// Check compares, on every host of side, weft's kernel state and its
// status report with what Docker has on the hosts of side: one VXLAN
// device per weft network Docker has on the host and none other, up, with
// learning off and proxy on, of the MTU weft reports; on it one static FDB
// entry (MAC -> VTEP) and one permanent neighbour entry (IP -> MAC) per
// address (IPv4, and IPv6 on a dual-stack network) per
// endpoint of that network on the other hosts of side, and one flood entry
// (00:00:00:00:00:00 -> VTEP) per other host with endpoints on a network
// created with -o weft.multicast=true, and nothing else (on a network
// created with -o encrypted, the VTEP's home address in the tunnel
// instead of the VTEP); one WireGuard interface on a host with an
// endpoint on an encrypted network, none on the others;
// no endpoint interface left in the host namespace; no bridge but
// Docker's docker_gwbridge; and a status that lists the same
// networks and endpoints, every host of side alive in its mesh.
func Check(ctx context.Context, side []*lab.Host) error {
	views := map[*lab.Host]dockerView{}
	reports := map[*lab.Host]status.Report{}
	byVNI := map[uint32][]dockerEndpoint{}
	var problems []string
	for _, h := range side {
		v, err := readDocker(ctx, h)
		if err != nil {
			return err
		}
		rep, err := FetchStatus(ctx, h)
		if err != nil {
			return err
		}
		// A network whose VNI Docker does not hold (local scope) has the
		// VNI weft reports for it: then only the kernel is checked against
		// it, not weft's report.
		for i := range v.nets {
			n := &v.nets[i]
			if n.vni != 0 {
				continue
			}
			for _, rn := range rep.Networks {
				if rn.ID == n.id {
					n.vni = rn.VNI
				}
			}
			if n.vni == 0 {
				problems = append(problems, fmt.Sprintf("%s: weft status lacks network %.12s, which has no weft.vni option", h.Name, n.id))
			}
		}
		for _, n := range v.nets {
			for _, e := range n.endpoints {
				e.vni = n.vni
				byVNI[n.vni] = append(byVNI[n.vni], e)
			}
		}
		views[h] = v
		reports[h] = rep
	}
	for _, h := range side {
		bad := func(format string, args ...any) {
			problems = append(problems, h.Name+": "+fmt.Sprintf(format, args...))
		}
		v, rep := views[h], reports[h]
		k, err := Kernel(h)
		if err != nil {
			return err
		}
		nets := map[uint32]string{}
		flooding, sealed := map[uint32]bool{}, map[uint32]bool{}
		sealedHere := false
		for _, n := range v.nets {
			if n.vni != 0 {
				nets[n.vni] = n.id
				flooding[n.vni] = n.multicast
				sealed[n.vni] = n.encrypted
			}
			if n.encrypted && len(n.endpoints) > 0 {
				sealedHere = true
			}
		}
		var wgs []string
		for _, l := range k.Links {
			if strings.HasPrefix(l.Name, "weftwg") {
				wgs = append(wgs, l.Name)
			}
		}
		switch {
		case sealedHere && len(wgs) != 1:
			bad("WireGuard interfaces %v; want one (an endpoint on an encrypted network is here)", wgs)
		case !sealedHere && len(wgs) != 0:
			bad("WireGuard interfaces %v; want none (no endpoint on an encrypted network is here)", wgs)
		}
		repNets := map[uint32]status.Network{}
		for _, n := range rep.Networks {
			if _, dup := repNets[n.VNI]; dup {
				bad("status lists VNI %d twice", n.VNI)
			}
			repNets[n.VNI] = n
		}
		vnis := map[uint32]bool{}
		for vni := range nets {
			vnis[vni] = true
		}
		for _, d := range k.Devices {
			vnis[d.VNI] = true
		}
		for vni := range repNets {
			vnis[vni] = true
		}
		for vni := range vnis {
			id, ok := nets[vni]
			dev := k.Device(vni)
			switch {
			case !ok && dev != nil:
				bad("orphaned VXLAN device %s (Docker has no weft network with that VNI here)", dev.Name)
			case ok && dev == nil:
				bad("no VXLAN device for network %.12s (VNI %d)", id, vni)
			case ok && (!dev.Up || dev.Learning || !dev.Proxy):
				bad("VXLAN device %s: up %v, learning %v, proxy %v; want up, no learning, proxy", dev.Name, dev.Up, dev.Learning, dev.Proxy)
			}
			var wantFDB, wantNeigh, wantRemote, wantLocal []string
			for _, e := range byVNI[vni] {
				if e.host == h {
					if ok {
						wantLocal = append(wantLocal, e.ip+" "+e.mac)
					}
					continue
				}
				if !ok {
					continue
				}
				dst := e.host.Addr().String()
				if sealed[vni] {
					home, err := wg.Overlay(wg.DefaultConfig().Subnet, e.host.Addr())
					if err != nil {
						return err
					}
					dst = home.String()
				}
				wantFDB = append(wantFDB, e.mac+" "+dst)
				if flood := "00:00:00:00:00:00 " + e.host.Addr().String(); flooding[vni] && !slices.Contains(wantFDB, flood) {
					wantFDB = append(wantFDB, flood)
				}
				wantNeigh = append(wantNeigh, e.ip+" "+e.mac)
				if e.ip6 != "" {
					wantNeigh = append(wantNeigh, e.ip6+" "+e.mac)
				}
				wantRemote = append(wantRemote, e.ip+" "+e.mac+" "+e.host.Addr().String())
			}
			var haveFDB, haveNeigh []string
			if dev != nil {
				for _, e := range dev.FDB {
					haveFDB = append(haveFDB, e.String())
				}
				for _, e := range dev.Neighbors {
					if e.Permanent {
						haveNeigh = append(haveNeigh, e.String())
					}
				}
			}
			for _, p := range entryDiff("FDB entry on "+dataplane.DeviceName(vni), haveFDB, wantFDB) {
				bad("%s", p)
			}
			for _, p := range entryDiff("neighbour entry on "+dataplane.DeviceName(vni), haveNeigh, wantNeigh) {
				bad("%s", p)
			}
			rn, listed := repNets[vni]
			switch {
			case ok && !listed:
				bad("weft status lacks network %.12s (VNI %d)", id, vni)
			case !ok && listed:
				bad("weft status lists network %.12s (VNI %d), which Docker does not have here", rn.ID, vni)
			case ok && rn.ID != id:
				bad("weft status has network %.12s for VNI %d, Docker has %.12s", rn.ID, vni, id)
			case ok && dev != nil && rn.MTU != dev.MTU:
				bad("weft status says MTU %d for VNI %d, its device has %d", rn.MTU, vni, dev.MTU)
			}
			var haveRemote, haveLocal []string
			for _, e := range rn.Remote {
				haveRemote = append(haveRemote, e.IP+" "+e.MAC+" "+e.VTEP)
			}
			for _, e := range rn.Local {
				haveLocal = append(haveLocal, e.IP+" "+e.MAC)
			}
			for _, p := range entryDiff(fmt.Sprintf("weft status remote endpoint (VNI %d)", vni), haveRemote, wantRemote) {
				bad("%s", p)
			}
			for _, p := range entryDiff(fmt.Sprintf("weft status local endpoint (VNI %d)", vni), haveLocal, wantLocal) {
				bad("%s", p)
			}
		}
		for _, s := range stray(k) {
			bad("%s", s)
		}
		if rep.VTEP != h.Addr().String() {
			bad("weft status says VTEP %s", rep.VTEP)
		}
		alive := map[string]bool{}
		for _, p := range rep.Members {
			if p.State == "alive" {
				host, _, _ := strings.Cut(p.Addr, ":")
				alive[host] = true
			}
		}
		for _, o := range side {
			if !alive[o.Addr().String()] {
				bad("mesh member %s (%s) is not alive here", o.Name, o.Addr())
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// WaitConverged waits until Check passes for side and returns how long it
// took.
func WaitConverged(t testing.TB, side []*lab.Host, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx := context.Background()
	err := lab.WaitFor(ctx, within, 100*time.Millisecond, func() error { return Check(ctx, side) })
	if err != nil {
		t.Fatalf("hosts %s did not converge: %v", hostNames(side), err)
	}
	return time.Since(start)
}

// NoLeaksAfter checks, once the test and its own cleanups are done (call
// it first, so that its cleanup runs last), that no kernel object or entry
// of weft's is left on any host: it waits until no host's Docker has any of
// the test's networks any more (swarm removes them from the workers after
// their tasks, in the background), then until Check passes on every host.
func NoLeaksAfter(t testing.TB, l *lab.Lab, networks ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		err := lab.WaitFor(ctx, 2*time.Minute, 500*time.Millisecond, func() error {
			for _, h := range l.Hosts {
				out, err := h.Docker(ctx, "network", "ls", "--format", "{{.Name}}")
				if err != nil {
					return err
				}
				for _, n := range strings.Fields(out) {
					if slices.Contains(networks, n) {
						return fmt.Errorf("%s still has network %s", h.Name, n)
					}
				}
			}
			return Check(ctx, l.Hosts)
		})
		if err != nil {
			t.Errorf("left behind after the test: %v", err)
		}
	})
}

// MeshComplete reports whether h's mesh has every host of all alive.
func MeshComplete(ctx context.Context, h *lab.Host, all []*lab.Host) error {
	rep, err := FetchStatus(ctx, h)
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	for _, o := range all {
		found := false
		for _, p := range rep.Members {
			if strings.HasPrefix(p.Addr, o.Addr().String()+":") && p.State == "alive" {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s does not see %s alive in its mesh: %+v", h.Name, o.Name, rep.Members)
		}
	}
	return nil
}

// Entries lists every FDB and neighbour entry of weft's devices on the
// hosts, one line each, sorted: to compare before and after an event. With
// devices given, only theirs (see Devices): an earlier test's network that
// the engines remove meanwhile is no change of the test's own.
func Entries(t testing.TB, hosts []*lab.Host, devices ...string) []string {
	t.Helper()
	var out []string
	for _, h := range hosts {
		for _, d := range MustKernel(t, h).Devices {
			if len(devices) > 0 && !slices.Contains(devices, d.Name) {
				continue
			}
			for _, e := range d.FDB {
				out = append(out, fmt.Sprintf("%s %s fdb %s", h.Name, d.Name, e))
			}
			for _, e := range d.Neighbors {
				if e.Permanent {
					out = append(out, fmt.Sprintf("%s %s neigh %s", h.Name, d.Name, e))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// Devices names the VXLAN devices of the swarm networks on the lab's hosts
// ("weft<VNI>"), as the manager's weft status reports them.
func Devices(t testing.TB, l *lab.Lab, networks ...string) []string {
	t.Helper()
	rep := Status(t, l.Manager())
	var out []string
	for _, n := range networks {
		id := strings.TrimSpace(l.Manager().MustDocker(t, "network", "inspect", "-f", "{{.Id}}", n))
		found := false
		for _, rn := range rep.Networks {
			if rn.ID == id {
				out = append(out, dataplane.DeviceName(rn.VNI))
				found = true
			}
		}
		if !found {
			t.Fatalf("%s's weft status has no network %s (%s)", l.Manager().Name, n, id)
		}
	}
	return out
}
