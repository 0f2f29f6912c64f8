package wg

// The two paths of the interface, one configuration: a kernel WireGuard
// link where the kernel has the type, wireguard-go on a TUN otherwise,
// serving WireGuard's configuration protocol on its socket
// (/var/run/wireguard/<name>.sock); wgctrl then configures either.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	wgdevice "golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Paths of the interface, as status names them.
const (
	PathKernel    = "kernel"
	PathUserspace = "userspace"
)

// device is an open WireGuard interface.
type device interface {
	path() string
	// existingKey returns the private key the interface already has (a
	// kernel link that outlived the last run).
	existingKey() (wgtypes.Key, bool)
	// configure sets the key and port, and makes the peers want (and,
	// with prune, only want), touching only the peers that differ, so
	// sessions of the others go on.
	configure(priv wgtypes.Key, port int, keepalive time.Duration, want map[wgtypes.Key]peer, prune bool) error
	stats() map[wgtypes.Key]wgtypes.Peer
	close()
}

type wgDev struct {
	name   string
	kernel bool
	client *wgctrl.Client
	// userspace only
	dev  *wgdevice.Device
	uapi net.Listener
}

// openDevice opens the interface name on the kernel path if it can, on
// the userspace path otherwise.
func openDevice(name string, links Links, log *slog.Logger) (device, error) {
	kernel, err := links.EnsureWireGuardLink(name)
	if err != nil {
		return nil, err
	}
	d := &wgDev{name: name, kernel: kernel}
	if !kernel {
		if err := d.openUserspace(log); err != nil {
			return nil, err
		}
	}
	if d.client, err = wgctrl.New(); err != nil {
		d.close()
		return nil, fmt.Errorf("open WireGuard control: %w", err)
	}
	return d, nil
}

// openUserspace makes the TUN and runs wireguard-go on it in this
// process, with its configuration socket.
func (d *wgDev) openUserspace(log *slog.Logger) error {
	td, err := tun.CreateTUN(d.name, 1420)
	if err != nil {
		// A link of that name that is not a TUN (left by someone else)
		// is not ours to remove: say so.
		return fmt.Errorf("create TUN %s for userspace WireGuard: %w", d.name, err)
	}
	logf := func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...), "device", d.name) }
	d.dev = wgdevice.NewDevice(td, conn.NewDefaultBind(), &wgdevice.Logger{Verbosef: logf, Errorf: logf})
	f, err := ipc.UAPIOpen(d.name)
	if err != nil {
		d.dev.Close()
		return fmt.Errorf("open the configuration socket of %s: %w", d.name, err)
	}
	if d.uapi, err = ipc.UAPIListen(d.name, f); err != nil {
		d.dev.Close()
		return fmt.Errorf("listen on the configuration socket of %s: %w", d.name, err)
	}
	go func(l net.Listener, dev *wgdevice.Device) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}(d.uapi, d.dev)
	return nil
}

func (d *wgDev) path() string {
	if d.kernel {
		return PathKernel
	}
	return PathUserspace
}

func (d *wgDev) existingKey() (wgtypes.Key, bool) {
	if !d.kernel {
		return wgtypes.Key{}, false
	}
	dv, err := d.client.Device(d.name)
	if err != nil || dv.PrivateKey == (wgtypes.Key{}) {
		return wgtypes.Key{}, false
	}
	return dv.PrivateKey, true
}

func (d *wgDev) configure(priv wgtypes.Key, port int, keepalive time.Duration, want map[wgtypes.Key]peer, prune bool) error {
	dv, err := d.client.Device(d.name)
	if err != nil {
		return fmt.Errorf("read WireGuard device %s: %w", d.name, err)
	}
	made, sets, removes := planPeers(dv.Peers, want, keepalive, prune)
	base := wgtypes.Config{}
	if dv.PrivateKey != priv {
		base.PrivateKey = &priv
	}
	if dv.ListenPort != port {
		base.ListenPort = &port
	}
	for _, peers := range [][]wgtypes.PeerConfig{made, sets, removes} {
		cfg := base
		cfg.Peers = peers
		if cfg.PrivateKey == nil && cfg.ListenPort == nil && len(peers) == 0 {
			continue
		}
		if err := d.client.ConfigureDevice(d.name, cfg); err != nil {
			return fmt.Errorf("configure WireGuard device %s: %w", d.name, err)
		}
		base = wgtypes.Config{} // the key and port go with the first write
	}
	return nil
}

// planPeers returns the writes that bring the peers have to want, in
// order: the peers to make, the changes of the others, the peers to
// remove (with prune).
func planPeers(peers []wgtypes.Peer, want map[wgtypes.Key]peer, keepalive time.Duration, prune bool) (made, sets, removes []wgtypes.PeerConfig) {
	// An address is allowed for one peer at a time: adding it to a peer
	// takes it from the one that had it, in one step. So that an address
	// in use never goes without a peer, or to a peer not yet running,
	// addresses move by being added, never by a list replaced: first the
	// new peers are made with the addresses nobody holds (their handshake
	// starts at once), then each peer gets what it lacks, and only then
	// the peers no longer wanted are removed. A list is replaced whole
	// only when it holds an address no peer is to have.
	have := map[wgtypes.Key]wgtypes.Peer{}
	held := map[string]bool{}
	for _, p := range peers {
		have[p.PublicKey] = p
		for _, a := range p.AllowedIPs {
			held[a.String()] = true
		}
	}
	wanted := map[string]bool{}
	for _, p := range want {
		for _, a := range p.allowed {
			n := host32(a)
			wanted[n.String()] = true
		}
	}
	keys := slices.SortedFunc(maps.Keys(want), func(a, b wgtypes.Key) int { return bytes.Compare(a[:], b[:]) })
	ka := keepalive
	for _, k := range keys {
		p := want[k]
		ep := net.UDPAddrFromAddrPort(p.endpoint)
		h, exists := have[k]
		own := map[string]bool{} // what the peer holds once made
		if exists {
			for _, a := range h.AllowedIPs {
				own[a.String()] = true
			}
		} else {
			var free []net.IPNet
			for _, a := range p.allowed {
				if n := host32(a); !held[n.String()] {
					free = append(free, n)
					own[n.String()] = true
				}
			}
			made = append(made, wgtypes.PeerConfig{PublicKey: k, Endpoint: ep, ReplaceAllowedIPs: true, AllowedIPs: free, PersistentKeepaliveInterval: &ka})
		}
		var lack []net.IPNet
		mine := map[string]bool{}
		for _, a := range p.allowed {
			n := host32(a)
			mine[n.String()] = true
			if !own[n.String()] {
				lack = append(lack, n)
			}
		}
		replace := false
		for a := range own {
			if !mine[a] && !wanted[a] {
				replace = true // an address nobody is to have: only a replace drops it
			}
		}
		c := wgtypes.PeerConfig{PublicKey: k, Endpoint: ep, PersistentKeepaliveInterval: &ka}
		switch {
		case replace:
			c.ReplaceAllowedIPs = true
			for _, a := range p.allowed {
				c.AllowedIPs = append(c.AllowedIPs, host32(a))
			}
		case len(lack) > 0:
			c.AllowedIPs = lack
		case !exists:
			continue // made whole by the first write
		case sameEndpoint(h.Endpoint, ep) && h.PersistentKeepaliveInterval == keepalive:
			continue
		}
		sets = append(sets, c)
	}
	for k := range have {
		if _, ok := want[k]; prune && !ok {
			removes = append(removes, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		}
	}
	return made, sets, removes
}

// host32 is a as a /32.
func host32(a netip.Addr) net.IPNet {
	return net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
}

func sameEndpoint(a *net.UDPAddr, b *net.UDPAddr) bool {
	if a == nil || b == nil {
		return a == b
	}
	aa, _ := netip.AddrFromSlice(a.IP)
	bb, _ := netip.AddrFromSlice(b.IP)
	return aa.Unmap() == bb.Unmap() && a.Port == b.Port
}

func (d *wgDev) stats() map[wgtypes.Key]wgtypes.Peer {
	out := map[wgtypes.Key]wgtypes.Peer{}
	dv, err := d.client.Device(d.name)
	if err != nil {
		return out
	}
	for _, p := range dv.Peers {
		out[p.PublicKey] = p
	}
	return out
}

// close closes a userspace device (its TUN goes with it); a kernel link
// stays, still carrying traffic with its key and peers.
func (d *wgDev) close() {
	var errs []error
	if d.client != nil {
		errs = append(errs, d.client.Close())
	}
	if d.uapi != nil {
		errs = append(errs, d.uapi.Close())
	}
	if d.dev != nil {
		d.dev.Close()
	}
	_ = errors.Join(errs...)
}
