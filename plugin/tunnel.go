package plugin

import (
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/status"
	"github.com/weftnet/weft/wg"
)

// tunnelEnv reads the settings of the encrypted networks' tunnel:
// WEFT_WG_PORT (0: off, encrypted networks refused; WireGuard takes it
// and the one after it), WEFT_WG_SUBNET (the hosts' home addresses in the
// tunnel, a /16; their source addresses take the two /16s after it) and
// WEFT_WG_ROTATION (how often each host replaces its WireGuard key, a Go
// duration or never).
func tunnelEnv(c *Config, getenv func(string) string, bad func(string, ...any)) {
	if v := strings.TrimSpace(getenv("WEFT_WG_PORT")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65534 {
			bad("WEFT_WG_PORT=%q is not a port number below 65535 (WireGuard takes it and the one after it), nor 0", v)
		} else {
			c.WGPort = n
		}
	}
	if v := strings.TrimSpace(getenv("WEFT_WG_SUBNET")); v != "" {
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() || p.Bits() != 16 {
			bad("WEFT_WG_SUBNET=%q is not an IPv4 /16", v)
		} else if _, err := wg.Subnets(p); err != nil {
			bad("WEFT_WG_SUBNET=%q leaves no room for the two /16s after it, which hold the hosts' source addresses", v)
		} else {
			c.WGSubnet = p.Masked()
		}
	}
	rotation("WEFT_WG_ROTATION", getenv, bad, &c.WGRotation)
}

// rotation reads a key rotation period: a Go duration of 1m or more, or
// never (-1).
func rotation(name string, getenv func(string) string, bad func(string, ...any), dst *time.Duration) {
	switch v := strings.TrimSpace(getenv(name)); v {
	case "":
	case "never", "0":
		*dst = -1
	default:
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			bad("%s=%q is not a duration of 1m or more, nor never", name, v)
		} else {
			*dst = d
		}
	}
}

// buildTunnel makes the encrypted networks' tunnel; nil when it is off.
func buildTunnel(cfg Config, p *parts, log *slog.Logger) (*wg.Tunnel, error) {
	if cfg.WGPort == 0 {
		return nil, nil
	}
	wcfg := wg.DefaultConfig()
	wcfg.Port, wcfg.Subnet, wcfg.Rotate, wcfg.VXLANPort = cfg.WGPort, cfg.WGSubnet, cfg.WGRotation, cfg.VXLANPort
	wcfg.Store, wcfg.Links, wcfg.Networks = p.mesh, p.kernel, p.driver.SubscribeNetworks()
	wcfg.Endpoints = p.catalog.Subscribe()
	wcfg.Self = func() netip.Addr { return p.underlay.State().Addr }
	wcfg.MTU, wcfg.Changed = p.underlay.MTU, p.underlay.Changed()
	wcfg.Filter = wg.NewNFTFilter(-1)
	wcfg.Logger = log
	return wg.New(wcfg)
}

// tunnelOf returns the firewall's With: a member's tunnel addresses,
// from which decrypted VXLAN arrives; nil while encrypted networks are
// off.
func tunnelOf(t *wg.Tunnel) func(netip.Addr) []netip.Addr {
	if t == nil {
		return nil
	}
	return func(member netip.Addr) []netip.Addr {
		all, err := wg.Addresses(t.Subnet(), member)
		if err != nil {
			return nil
		}
		return all
	}
}

// links turns the tunnel's links into status's.
func links(t *wg.Tunnel) func() []status.Link {
	if t == nil {
		return nil
	}
	return func() []status.Link {
		var out []status.Link
		for _, l := range t.Links() {
			age := -1.0
			if l.Handshake > 0 {
				age = l.Handshake.Seconds()
			}
			out = append(out, status.Link{Peer: l.Peer, VTEP: l.VTEP, Tunnel: l.Tunnel, Path: l.Path,
				HandshakeAgeSeconds: age, RxBytes: l.Received, TxBytes: l.Sent})
		}
		return out
	}
}

// wgAddrs is driver.Tunnel: the hosts' tunnel addresses, which are
// derived from their VTEPs alone.
type wgAddrs struct{ subnet netip.Prefix }

func (a wgAddrs) Overlay(vtep netip.Addr) (netip.Addr, error) { return wg.Overlay(a.subnet, vtep) }
func (a wgAddrs) Subnet() netip.Prefix                        { return a.subnet }
func (a wgAddrs) Sources(vtep netip.Addr) ([]netip.Addr, error) {
	all, err := wg.Addresses(a.subnet, vtep)
	if err != nil {
		return nil, err
	}
	return all[1:], nil
}
