package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/docker/go-plugins-helpers/network"
)

// localAdvertise finds this host's underlay address in local scope, where
// no swarm tells it: unless WEFT_ADVERTISE_ADDR is set, it is the source
// address the kernel's routing picks toward the first WEFT_PEERS entry it
// has a route to (this host's own address when the entry is this host).
// No packet is sent. It returns the zero address when it does not apply.
func localAdvertise(cfg Config) (netip.Addr, error) {
	if cfg.Scope != network.LocalScope || cfg.AdvertiseAddr.IsValid() || len(cfg.Peers) == 0 {
		return netip.Addr{}, nil
	}
	var errs []error
	for _, p := range cfg.Peers {
		host, port := p, strconv.Itoa(cfg.MeshPort)
		if h, pt, err := net.SplitHostPort(p); err == nil {
			host, port = h, pt
		}
		// A connected UDP socket only asks the routing table.
		conn, err := net.Dial("udp4", net.JoinHostPort(host, port))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		la, _ := conn.LocalAddr().(*net.UDPAddr)
		_ = conn.Close()
		if la == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(la.IP); ok && a.Unmap().Is4() && !a.Unmap().IsUnspecified() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no route toward any of WEFT_PEERS %v: %w", cfg.Peers, errors.Join(errs...))
}
