// Package wg owns the encryption of weft's encrypted networks
// (`-o encrypted`): one WireGuard interface per host, its keys, its peers,
// and the rule that drops plaintext VXLAN of those networks on arrival.
//
// Kernel model, on a host with at least one encrypted network:
//
//   - one WireGuard interface "weftwg0" with the host's tunnel address, a /16
//     of its own (Config.Subnet): the subnet's upper bits, the low 16 bits of
//     the host's underlay address (198.18.65.3 -> 10.250.65.3), so that every
//     host derives every other host's tunnel address from its VTEP with no
//     lookup. Two hosts whose underlay addresses share their low 16 bits
//     collide: the later one (by name) is left out and logged;
//   - an encrypted network's VXLAN device sends to the peers' tunnel
//     addresses (the driver writes them as FDB destinations), so its packets
//     are routed through weftwg0 with the tunnel address as source, and ride
//     inside WireGuard. MTU: underlay − 60 (WireGuard) for weftwg0, − 50 more
//     (VXLAN) for the network;
//   - a peer per other host that published a key (mesh table "wg", one entry
//     per host, keyed by its name): public key, underlay endpoint, allowed
//     address its tunnel address only. A host opens the interface and
//     publishes while it has an endpoint on an encrypted network (the
//     catalog's local records), closes it and withdraws when it has none;
//     a member that leaves or is found dead has its entry hidden by the
//     mesh, and its peer removed;
//   - table ip weft_sealed: VXLAN for an encrypted network's VNI arriving on
//     any interface but weftwg0 is dropped (a plaintext frame, forged or from
//     a misconfigured host, never reaches the device).
//
// Where the kernel has WireGuard the interface is a kernel link; otherwise
// it is a TUN served by wireguard-go inside this process. Both are then
// configured by wgctrl, the same code either way. The private key lives in
// memory and in the device only, never on disk: a new key at every start
// on the userspace path (the device dies with the process), the device's
// own key kept on the kernel path; a new key every Config.Rotate.
package wg

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

// Table is the mesh table of the hosts' WireGuard keys; key: host name.
const Table = "wg"

// KeyOwner names the host an entry of Table belongs to: its key.
func KeyOwner(key string) string { return key }

// Record is one host's entry in Table. JSON field names are wire format:
// add fields, never rename them.
type Record struct {
	// Key is the host's WireGuard public key (base64).
	Key string `json:"key"`
	// VTEP is the host's underlay address, the peers' endpoint address
	// and the source of its tunnel address.
	VTEP string `json:"vtep"`
	// Port is the host's WireGuard UDP port.
	Port int `json:"port"`
	// Path is "kernel" or "userspace", for status.
	Path string `json:"path,omitempty"`
}

// Store is the mesh as the tunnel uses it; *mesh.Mesh implements it.
type Store interface {
	LocalNode() string
	Put(table, key string, value []byte)
	Delete(table, key string)
	Watch(table string, members bool) *feed.Sub[mesh.Event]
	// Synced reports whether the table is complete; until then peers the
	// device has are kept (a kernel device that outlived the last run
	// keeps carrying traffic while the mesh catches up).
	Synced() bool
}

// Links is the kernel side of the interface; *dataplane.Kernel
// implements it.
type Links interface {
	EnsureWireGuardLink(name string) (bool, error)
	ConfigureTunnel(name string, addr netip.Prefix, mtu int) error
	DeleteLink(name string) error
}

// Config configures a Tunnel.
type Config struct {
	// Name of the WireGuard interface; default "weftwg0".
	Name string
	// Port is WireGuard's UDP port; default 51820.
	Port int
	// Subnet holds the hosts' tunnel addresses: a /16 (default
	// 10.250.0.0/16) that no weft network and no route of the hosts uses.
	Subnet netip.Prefix
	// VXLANPort is weft's VXLAN port, for the plaintext drop rule.
	VXLANPort int
	// Rotate is how often the private key is replaced; default 24 h,
	// negative never.
	Rotate time.Duration
	// Keepalive is the peers' persistent keepalive: a handshake at once
	// when a peer is configured, and handshake ages that tell liveness.
	// Default 25 s.
	Keepalive time.Duration
	// Store is the mesh. Required.
	Store Store
	// Links makes the interface. Required.
	Links Links
	// Networks streams this host's weft networks. Required.
	Networks *feed.Sub[driver.NetworkEvent]
	// Endpoints streams the catalog; its local records say which
	// encrypted networks have an endpoint here. Nil: a network here is
	// enough (tests).
	Endpoints *feed.Sub[catalog.Event]
	// Self returns this host's underlay address (invalid until known);
	// Changed wakes the tunnel when it, or MTU, may have changed.
	Self    func() netip.Addr
	MTU     func() int
	Changed <-chan struct{}
	// Filter writes the plaintext drop rule; nil leaves it out (tests).
	Filter Filter
	// Logger receives the log; nil discards it.
	Logger *slog.Logger
}

// DefaultConfig returns the settings weft runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Name:      "weftwg0",
		Port:      51820,
		Subnet:    netip.MustParsePrefix("10.250.0.0/16"),
		VXLANPort: 4790,
		Rotate:    24 * time.Hour,
		Keepalive: 25 * time.Second,
	}
}

// Overlay returns the tunnel address of the host whose underlay address
// is vtep: subnet's upper 16 bits, vtep's lower 16. It fails for
// addresses that are not IPv4, or whose low bits make the subnet's first
// or last address.
func Overlay(subnet netip.Prefix, vtep netip.Addr) (netip.Addr, error) {
	vtep = vtep.Unmap()
	if !vtep.Is4() || !subnet.Addr().Is4() || subnet.Bits() != 16 {
		return netip.Addr{}, fmt.Errorf("no tunnel address for %s in %s: IPv4 and a /16 only", vtep, subnet)
	}
	s, v := subnet.Masked().Addr().As4(), vtep.As4()
	a := [4]byte{s[0], s[1], v[2], v[3]}
	if (a[2] == 0 && a[3] == 0) || (a[2] == 255 && a[3] == 255) {
		return netip.Addr{}, fmt.Errorf("no tunnel address for %s in %s: its low 16 bits are all zeros or ones", vtep, subnet)
	}
	return netip.AddrFrom4(a), nil
}

// Link is one encrypted link, as status shows it.
type Link struct {
	Peer      string        `json:"peer"`
	VTEP      string        `json:"vtep"`
	Tunnel    string        `json:"tunnel"`
	Path      string        `json:"path"`
	Handshake time.Duration `json:"handshake_age_ns"` // 0: none yet
	Received  int64         `json:"rx_bytes"`
	Sent      int64         `json:"tx_bytes"`
}

// peer is another host's published record, with its member address.
type peer struct {
	rec  Record
	key  wgtypes.Key
	addr netip.Addr // tunnel address
	vtep netip.Addr
}

// Tunnel keeps this host's WireGuard interface, key and peers in step
// with the mesh and the encrypted networks here.
type Tunnel struct {
	cfg Config
	log *slog.Logger

	// mu guards the fields below; taken by Run and Links.
	mu        sync.Mutex
	dev       device // nil while no endpoint on an encrypted network is here
	priv      wgtypes.Key
	rotatedAt time.Time
	peers     map[string]peer // by host name, as configured
	// published is the record last written to the mesh; empty: none.
	published []byte
}

// New returns a tunnel; nothing happens until Run.
func New(cfg Config) (*Tunnel, error) {
	def := DefaultConfig()
	if cfg.Name == "" {
		cfg.Name = def.Name
	}
	if cfg.Port == 0 {
		cfg.Port = def.Port
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = def.Subnet
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = def.VXLANPort
	}
	if cfg.Rotate == 0 {
		cfg.Rotate = def.Rotate
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = def.Keepalive
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Subnet.Bits() != 16 || !cfg.Subnet.Addr().Is4() {
		return nil, fmt.Errorf("tunnel subnet %s is not an IPv4 /16", cfg.Subnet)
	}
	if cfg.Store == nil || cfg.Links == nil || cfg.Networks == nil || cfg.Self == nil {
		return nil, fmt.Errorf("tunnel: Store, Links, Networks and Self are required")
	}
	cfg.Subnet = cfg.Subnet.Masked()
	return &Tunnel{cfg: cfg, log: cfg.Logger, peers: map[string]peer{}}, nil
}

// Overlay is Overlay in the tunnel's subnet: what the driver writes as an
// encrypted network's FDB destination for a host's VTEP.
func (t *Tunnel) Overlay(vtep netip.Addr) (netip.Addr, error) { return Overlay(t.cfg.Subnet, vtep) }

// Subnet is the tunnel's subnet.
func (t *Tunnel) Subnet() netip.Prefix { return t.cfg.Subnet }

// Run keeps the tunnel until ctx ends; then it closes a userspace device
// (a kernel one stays, with its key and peers) and leaves the mesh entry,
// which the peers keep using across a restart.
func (t *Tunnel) Run(ctx context.Context) {
	watch := t.cfg.Store.Watch(Table, true)
	defer watch.Close()
	defer t.cfg.Networks.Close()
	encrypted := map[string]uint32{} // network ID -> VNI
	local := map[string]uint32{}     // local endpoint ID -> VNI
	var endpointsReady <-chan struct{}
	if t.cfg.Endpoints != nil {
		defer t.cfg.Endpoints.Close()
		endpointsReady = t.cfg.Endpoints.Ready()
	}
	records := map[string]Record{}
	members := map[string]netip.Addr{} // alive or suspect members' addresses
	repair := time.NewTicker(10 * time.Second)
	defer repair.Stop()
	var rotate <-chan time.Time
	if t.cfg.Rotate > 0 {
		tk := time.NewTicker(t.cfg.Rotate)
		defer tk.Stop()
		rotate = tk.C
	}
	defer t.close()
	networks := func() {
		for _, ev := range t.cfg.Networks.Take() {
			if ev.Up && ev.Encrypted {
				encrypted[ev.ID] = ev.VNI
			} else {
				delete(encrypted, ev.ID)
			}
		}
	}
	endpoints := func() {
		if t.cfg.Endpoints == nil {
			return
		}
		for _, ev := range t.cfg.Endpoints.Take() {
			if !ev.Local {
				continue
			}
			if ev.Kind == catalog.Removed {
				delete(local, ev.Record.Endpoint)
			} else {
				local[ev.Record.Endpoint] = ev.Record.VNI
			}
		}
	}
	active := func() bool {
		for _, v := range encrypted {
			if t.cfg.Endpoints == nil {
				return true
			}
			for _, lv := range local {
				if lv == v {
					return true
				}
			}
		}
		return false
	}
	entries := func() {
		for _, ev := range watch.Take() {
			switch ev.Kind {
			case mesh.EntryPut:
				var r Record
				if err := json.Unmarshal(ev.Entry.Value, &r); err != nil {
					t.log.Warn("ignoring malformed tunnel record", "peer", ev.Entry.Key, "err", err)
					delete(records, ev.Entry.Key)
					continue
				}
				records[ev.Entry.Key] = r
			case mesh.EntryGone:
				delete(records, ev.Entry.Key)
			case mesh.MemberChanged:
				m := ev.Member
				ap, err := netip.ParseAddrPort(m.Addr)
				if err == nil && (m.State == mesh.StateAlive || m.State == mesh.StateSuspect || m.State == mesh.StateDown) {
					members[m.Name] = ap.Addr().Unmap()
				} else {
					delete(members, m.Name)
				}
			}
		}
	}
	// The snapshots first: the networks this host has, the records and
	// members known, before anything is decided (a first pass without
	// them would remove a kernel device that outlived the last run).
	networks()
	endpoints()
	entries()
	t.reconcile(encrypted, active(), records, members)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.cfg.Networks.Ready():
			networks()
		case <-watch.Ready():
			entries()
		case <-endpointsReady:
			endpoints()
		case <-t.cfg.Changed:
		case <-repair.C:
		case <-rotate:
			t.rotate()
		}
		t.reconcile(encrypted, active(), records, members)
	}
}

// reconcile brings the device, the published record, the peers and the
// drop rule in line with what is wanted: the rule for every encrypted
// network here, the rest while one of them has an endpoint here (active).
func (t *Tunnel) reconcile(encrypted map[string]uint32, active bool, records map[string]Record, members map[string]netip.Addr) {
	self := t.cfg.Self()
	vnis := slices.Sorted(func(yield func(uint32) bool) {
		for _, v := range encrypted {
			if !yield(v) {
				return
			}
		}
	})
	if t.cfg.Filter != nil {
		if err := t.cfg.Filter.Set(t.cfg.Name, t.cfg.VXLANPort, vnis); err != nil {
			t.log.Error("write the plaintext drop rule of encrypted networks", "err", err)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !active {
		if t.dev != nil {
			t.log.Info("no endpoint on an encrypted network here; tunnel closed", "device", t.cfg.Name)
		}
		t.closeLocked(true)
		return
	}
	if !self.IsValid() {
		return // the underlay address comes: the next pass
	}
	addr, err := Overlay(t.cfg.Subnet, self)
	if err != nil {
		t.log.Error("this host has no tunnel address; its encrypted networks reach no other host", "err", err)
		return
	}
	if t.dev == nil {
		if t.priv == (wgtypes.Key{}) {
			t.priv, _ = wgtypes.GeneratePrivateKey()
			t.rotatedAt = time.Now()
		}
		dev, err := openDevice(t.cfg.Name, t.cfg.Links, t.log)
		if err != nil {
			t.log.Error("open the WireGuard interface; encrypted networks reach no other host", "device", t.cfg.Name, "err", err)
			return
		}
		t.dev = dev
		if k, ok := dev.existingKey(); ok {
			t.priv = k // a kernel device that outlived the last run keeps its key
		}
		t.peers = map[string]peer{}
		t.log.Info("tunnel open", "device", t.cfg.Name, "path", dev.path(), "addr", addr.String(), "port", t.cfg.Port)
	}
	mtu := 1500
	if t.cfg.MTU != nil {
		mtu = t.cfg.MTU()
	}
	if err := t.cfg.Links.ConfigureTunnel(t.cfg.Name, netip.PrefixFrom(addr, 16), mtu-dataplane.WireGuardOverhead); err != nil {
		t.log.Error("configure the WireGuard interface", "device", t.cfg.Name, "err", err)
	}
	want := t.wantPeersLocked(records, members, addr)
	if err := t.dev.configure(t.priv, t.cfg.Port, t.cfg.Keepalive, want, t.cfg.Store.Synced()); err != nil {
		// The interface may be gone (deleted by hand, or its TUN
		// closed): the next pass opens it again.
		t.log.Error("configure WireGuard peers; the tunnel is opened again", "device", t.cfg.Name, "err", err)
		t.closeLocked(false)
		return
	}
	t.peers = want
	rec, _ := json.Marshal(Record{Key: t.priv.PublicKey().String(), VTEP: self.String(), Port: t.cfg.Port, Path: t.dev.path()})
	if string(rec) != string(t.published) {
		t.cfg.Store.Put(Table, t.cfg.Store.LocalNode(), rec)
		t.published = rec
	}
}

// wantPeersLocked returns the peers the device should have: every other
// member's record whose VTEP is the member's own address, with a tunnel
// address no earlier host (by name) holds.
func (t *Tunnel) wantPeersLocked(records map[string]Record, members map[string]netip.Addr, self netip.Addr) map[string]peer {
	names := make([]string, 0, len(records))
	for n := range records {
		names = append(names, n)
	}
	sort.Strings(names)
	taken := map[netip.Addr]string{self: t.cfg.Store.LocalNode()}
	out := map[string]peer{}
	for _, name := range names {
		if name == t.cfg.Store.LocalNode() {
			continue
		}
		r := records[name]
		vtep, err := netip.ParseAddr(r.VTEP)
		if err != nil || members[name] != vtep.Unmap() {
			t.log.Debug("tunnel record of a host not (or not at that address) in the mesh", "peer", name, "vtep", r.VTEP)
			continue
		}
		key, err := wgtypes.ParseKey(r.Key)
		if err != nil || r.Port <= 0 || r.Port > 65535 {
			t.log.Warn("ignoring tunnel record with a bad key or port", "peer", name)
			continue
		}
		addr, err := Overlay(t.cfg.Subnet, vtep)
		if err != nil {
			t.log.Warn("peer has no tunnel address", "peer", name, "err", err)
			continue
		}
		if other, ok := taken[addr]; ok {
			t.log.Error("two hosts share the low 16 bits of their underlay address, so one tunnel address; the later is left out", "peer", name, "holder", other, "tunnel", addr.String())
			continue
		}
		taken[addr] = name
		out[name] = peer{rec: r, key: key, addr: addr, vtep: vtep.Unmap()}
	}
	return out
}

// rotate replaces the private key; the next reconcile writes it to the
// device and publishes its public half. Peers take the new key as the
// mesh brings it; until then their handshakes with this host fail and
// are retried (WireGuard's own 5 s retry), while the data keys of the
// running session are dropped by the device at once.
func (t *Tunnel) rotate() {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.log.Error("generate a WireGuard key", "err", err)
		return
	}
	t.priv, t.rotatedAt = k, time.Now()
	t.log.Info("WireGuard key rotated", "public", k.PublicKey().String())
}

// Rotate replaces the private key now (tests, and the rotation timer's
// work done early).
func (t *Tunnel) Rotate() { t.rotate() }

// PublicKey returns the public key in use; zero before the first.
func (t *Tunnel) PublicKey() wgtypes.Key {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.priv == (wgtypes.Key{}) {
		return wgtypes.Key{}
	}
	return t.priv.PublicKey()
}

func (t *Tunnel) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeLocked(false)
}

// closeLocked closes the device; withdraw also deletes the interface (a
// kernel one too) and the mesh record: no endpoint on an encrypted
// network is here.
func (t *Tunnel) closeLocked(withdraw bool) {
	if t.dev != nil {
		t.dev.close()
		t.dev = nil
	}
	if withdraw {
		if err := t.cfg.Links.DeleteLink(t.cfg.Name); err != nil {
			t.log.Warn("delete the WireGuard interface", "device", t.cfg.Name, "err", err)
		}
		if t.published != nil {
			t.cfg.Store.Delete(Table, t.cfg.Store.LocalNode())
			t.published = nil
		}
	}
	t.peers = map[string]peer{}
}

// Links returns the encrypted links of this host, by peer name.
func (t *Tunnel) Links() []Link {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dev == nil {
		return nil
	}
	stats := t.dev.stats()
	out := make([]Link, 0, len(t.peers))
	for name, p := range t.peers {
		l := Link{Peer: name, VTEP: p.vtep.String(), Tunnel: p.addr.String(), Path: t.dev.path()}
		if s, ok := stats[p.key]; ok {
			if !s.LastHandshakeTime.IsZero() {
				l.Handshake = time.Since(s.LastHandshakeTime)
			}
			l.Received, l.Sent = s.ReceiveBytes, s.TransmitBytes
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}
