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
	have := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range dv.Peers {
		have[p.PublicKey] = p
	}
	var removes, sets []wgtypes.PeerConfig
	// The keys losing an address first, then those gaining it: an
	// address belongs to one peer, and a rotating host's home address
	// moves from its old key to its new one in this one write.
	keys := slices.SortedFunc(maps.Keys(want), func(a, b wgtypes.Key) int {
		if want[a].newest != want[b].newest {
			if want[a].newest {
				return 1
			}
			return -1
		}
		return bytes.Compare(a[:], b[:])
	})
	for _, k := range keys {
		p := want[k]
		ep := net.UDPAddrFromAddrPort(p.endpoint)
		allowed := make([]net.IPNet, 0, len(p.allowed))
		for _, a := range p.allowed {
			allowed = append(allowed, net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)})
		}
		if h, ok := have[k]; ok && sameEndpoint(h.Endpoint, ep) && sameAllowed(h.AllowedIPs, allowed) && h.PersistentKeepaliveInterval == keepalive {
			continue
		}
		ka := keepalive
		sets = append(sets, wgtypes.PeerConfig{
			PublicKey: k, Endpoint: ep, ReplaceAllowedIPs: true, AllowedIPs: allowed,
			PersistentKeepaliveInterval: &ka,
		})
	}
	for k := range have {
		if _, ok := want[k]; prune && !ok {
			removes = append(removes, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		}
	}
	if dv.PrivateKey == priv && dv.ListenPort == port && len(removes)+len(sets) == 0 {
		return nil
	}
	cfg := wgtypes.Config{Peers: append(removes, sets...)}
	if dv.PrivateKey != priv {
		cfg.PrivateKey = &priv
	}
	if dv.ListenPort != port {
		cfg.ListenPort = &port
	}
	if err := d.client.ConfigureDevice(d.name, cfg); err != nil {
		return fmt.Errorf("configure WireGuard device %s: %w", d.name, err)
	}
	return nil
}

// sameAllowed reports whether a peer's allowed addresses are want, in any
// order.
func sameAllowed(have, want []net.IPNet) bool {
	if len(have) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h net.IPNet) bool { return h.String() == w.String() }) {
			return false
		}
	}
	return true
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
