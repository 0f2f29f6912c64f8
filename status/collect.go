package status

import (
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/mesh"
)

// Sources are the parts a report is read from.
type Sources struct {
	Version string
	Scope   string
	VTEP    netip.Addr
	Mesh    *mesh.Mesh
	Driver  *driver.Driver
	Catalog *catalog.Catalog
	// Probe is the data-path probe; nil leaves it out of the report.
	Probe ProbeSource
	// VXLANPort and MeshPort are named in the problems.
	VXLANPort, MeshPort int
	// Links returns the encrypted links; nil leaves them out.
	Links func() []Link
}

// Collect reads this host's report from its parts.
func Collect(s Sources) Report {
	rep := Report{Node: s.Mesh.LocalNode(), Version: s.Version, Scope: s.Scope, VXLANPort: s.VXLANPort, MeshPort: s.MeshPort}
	rep.Probe = probeView(s.Probe, time.Now())
	if s.Links != nil {
		rep.Links = s.Links()
	}
	rep.Repairs = repairsOf(s.Driver.RecentRepairs())
	if s.VTEP.IsValid() {
		rep.VTEP = s.VTEP.String()
	}
	for _, mb := range s.Mesh.Members() {
		rep.Members = append(rep.Members, Member{Name: mb.Name, Addr: mb.Addr, State: mb.State, Version: mb.Version})
	}
	names := map[string][]string{}
	for _, r := range s.Catalog.Local() {
		names[r.Endpoint] = r.Names
	}
	remote := s.Catalog.Remote()
	for _, n := range s.Driver.Networks() {
		sn := Network{ID: n.ID, VNI: n.VNI, Subnet: n.Subnet, MTU: n.MTU}
		for _, ep := range n.Endpoints {
			ip := ep.Address
			if p, err := netip.ParsePrefix(ep.Address); err == nil {
				ip = p.Addr().String()
			}
			sn.Local = append(sn.Local, Endpoint{ID: ep.ID, IP: ip, MAC: ep.MAC, Interface: ep.IfName, Names: names[ep.ID]})
		}
		for _, r := range remote {
			if r.VNI == n.VNI {
				sn.Remote = append(sn.Remote, Endpoint{ID: r.Endpoint, IP: r.IP, MAC: r.MAC, Host: r.Host, VTEP: r.VTEP, Names: r.Names, Down: r.Down})
			}
		}
		slices.SortFunc(sn.Local, byIP)
		slices.SortFunc(sn.Remote, byIP)
		rep.Networks = append(rep.Networks, sn)
	}
	rep.Problems = Problems(rep)
	return rep
}

func byIP(a, b Endpoint) int {
	x, err1 := netip.ParseAddr(a.IP)
	y, err2 := netip.ParseAddr(b.IP)
	if err1 != nil || err2 != nil {
		switch {
		case a.IP < b.IP:
			return -1
		case a.IP > b.IP:
			return 1
		}
		return 0
	}
	return x.Compare(y)
}
