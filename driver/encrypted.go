package driver

// Encrypted networks (-o encrypted). The driver's model and the catalog
// know hosts by their underlay address (VTEP); an encrypted network's
// device must send to the host's home address in the tunnel instead, so
// that VXLAN rides inside WireGuard (package wg). The translation happens
// at the edges, here, and nowhere else: the dataplane and the table of
// sources are wrapped, and for an encrypted VNI every VTEP going to the
// kernel is replaced: by the home address in FDB entries, and in the
// table of sources by the host's two source addresses (decrypted VXLAN
// arrives from the one of the interface the host sends through, which a
// key rotation changes). An address already inside the home subnet is
// left as it is, so entries read back from the kernel can be written
// again.
//
// Lock order: Driver.mu, then sealed.mu.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/weftnet/weft/antispoof"
	"github.com/weftnet/weft/dataplane"
)

// Tunnel gives each host's tunnel addresses.
type Tunnel interface {
	// Overlay returns the home address of the host at vtep.
	Overlay(vtep netip.Addr) (netip.Addr, error)
	// Sources returns the addresses the host at vtep sends from.
	Sources(vtep netip.Addr) ([]netip.Addr, error)
	// Subnet holds every home address.
	Subnet() netip.Prefix
}

// errNoTunnel refuses to write an encrypted network's entry in clear.
var errNoTunnel = errors.New("this host has no tunnel for encrypted networks")

// parseEncrypted reads -o encrypted's value: empty (the option alone)
// and true mean on.
func parseEncrypted(v string) (bool, error) {
	if v == "" {
		return true, nil
	}
	return strconv.ParseBool(v)
}

// encrypted reports whether n was created with -o encrypted.
func encrypted(n *Network) bool {
	o, err := parseOptions(n.Options)
	return err == nil && o.Encrypted
}

// tunnelOverhead is what n's packets lose to the tunnel.
func tunnelOverhead(n *Network) int {
	if encrypted(n) {
		return dataplane.WireGuardOverhead
	}
	return 0
}

// checkEncryption refuses an encrypted network on a host without a
// tunnel.
func (d *Driver) checkEncryption(o netOptions) error {
	if o.Encrypted && d.cfg.Tunnel == nil {
		return fmt.Errorf("weft cannot encrypt networks on this host: its WireGuard tunnel is off (WEFT_WG_PORT=0); turn it on or create the network without -o %s", OptEncrypted)
	}
	return nil
}

// sealed holds the VNIs of the encrypted networks here.
type sealed struct {
	tunnel Tunnel // nil: none

	mu   sync.Mutex
	vnis map[uint32]bool
}

// seal wraps the dataplane and the table of sources; called by New.
func (d *Driver) seal() {
	d.sealed = &sealed{tunnel: d.cfg.Tunnel, vnis: map[uint32]bool{}}
	d.dp = sealedDataplane{Dataplane: d.dp, s: d.sealed}
	if d.cfg.Sources != nil {
		d.cfg.Sources = sealedSources{Sources: d.cfg.Sources, s: d.sealed}
	}
}

func (s *sealed) mark(n *Network) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if encrypted(n) {
		s.vnis[n.VNI] = true
	} else {
		delete(s.vnis, n.VNI)
	}
}

func (s *sealed) unmark(vni uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vnis, vni)
}

func (s *sealed) on(vni uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vnis[vni]
}

// via returns vtep's tunnel address, or vtep itself when it is one.
func (s *sealed) via(vtep netip.Addr) (netip.Addr, error) {
	if s.tunnel == nil {
		return netip.Addr{}, errNoTunnel
	}
	vtep = vtep.Unmap()
	if s.tunnel.Subnet().Contains(vtep) {
		return vtep, nil
	}
	return s.tunnel.Overlay(vtep)
}

// remote returns r with its VTEP replaced by the tunnel address; a nil
// VTEP stays nil (DeleteRemote's "leave the FDB alone").
func (s *sealed) remote(r dataplane.RemoteEndpoint) (dataplane.RemoteEndpoint, error) {
	if r.VTEP == nil {
		return r, nil
	}
	a, ok := netip.AddrFromSlice(r.VTEP)
	if !ok {
		return r, fmt.Errorf("VTEP %v is not an address", r.VTEP)
	}
	o, err := s.via(a)
	if err != nil {
		return r, fmt.Errorf("tunnel address of %s: %w", a, err)
	}
	r.VTEP = net.IP(o.AsSlice())
	return r, nil
}

// entries returns es with an encrypted VNI's entries replaced by one per
// source address of their host.
func (s *sealed) entries(es []antispoof.Entry) []antispoof.Entry {
	out := make([]antispoof.Entry, 0, len(es))
	for _, e := range es {
		if !s.on(e.VNI) {
			out = append(out, e)
			continue
		}
		if s.tunnel == nil {
			continue // unreachable in clear; nothing may come from it
		}
		srcs, err := s.tunnel.Sources(e.VTEP.Unmap())
		if err != nil {
			continue
		}
		for _, a := range srcs {
			e.VTEP = a
			out = append(out, e)
		}
	}
	return out
}

// sealedDataplane sends an encrypted VNI's remote entries to tunnel
// addresses.
type sealedDataplane struct {
	Dataplane
	s *sealed
}

func (p sealedDataplane) SetRemote(vni uint32, r dataplane.RemoteEndpoint) error {
	if p.s.on(vni) {
		var err error
		if r, err = p.s.remote(r); err != nil {
			return err
		}
	}
	return p.Dataplane.SetRemote(vni, r)
}

func (p sealedDataplane) DeleteRemote(vni uint32, r dataplane.RemoteEndpoint) error {
	if p.s.on(vni) {
		var err error
		if r, err = p.s.remote(r); err != nil {
			r.VTEP, r.MAC = nil, nil // its FDB entry was never written
		}
	}
	return p.Dataplane.DeleteRemote(vni, r)
}

func (p sealedDataplane) SetRemotes(vni uint32, want []dataplane.RemoteEndpoint) (dataplane.Repair, error) {
	if !p.s.on(vni) {
		return p.Dataplane.SetRemotes(vni, want)
	}
	out := make([]dataplane.RemoteEndpoint, 0, len(want))
	var errs []error
	for _, r := range want {
		t, err := p.s.remote(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, t)
	}
	rep, err := p.Dataplane.SetRemotes(vni, out)
	return rep, errors.Join(append(errs, err)...)
}

// sealedSources checks an encrypted VNI's remote sources against the
// tunnel address they arrive from.
type sealedSources struct {
	Sources
	s *sealed
}

func (t sealedSources) Change(add, del antispoof.Sources) error {
	add.Remote, del.Remote = t.s.entries(add.Remote), t.s.entries(del.Remote)
	return t.Sources.Change(add, del)
}

func (t sealedSources) Sync(want antispoof.Sources, prune bool) (antispoof.Diff, error) {
	want.Remote = t.s.entries(want.Remote)
	return t.Sources.Sync(want, prune)
}
