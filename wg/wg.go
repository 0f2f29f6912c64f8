// Package wg owns the encryption of weft's encrypted networks
// (`-o encrypted`): each host's WireGuard interfaces, their keys, their
// peers, and the rule that drops plaintext VXLAN of those networks on
// arrival.
//
// Kernel model, on a host with at least one encrypted network:
//
//   - addresses: three per host, each the upper 16 bits of a /16 and the
//     low 16 bits of the host's underlay address, so that every host
//     derives every other host's addresses from its VTEP with no lookup.
//     Config.Subnet (default 10.250.0.0/16) holds the hosts' home addresses
//     (198.18.65.3 -> 10.250.65.3), where the others send to; the two /16s
//     after it (10.251/16, 10.252/16) the source addresses of the host's
//     two interfaces, slot 0 and slot 1. Two hosts whose underlay addresses
//     share their low 16 bits collide: the later one (by name) is left out
//     and logged;
//   - one WireGuard interface, "weftwg0" (slot 0) or "weftwg1" (slot 1),
//     each slot with its own private key and UDP port (Config.Port, and the
//     one after it); two at once only while a key rotates. The interface
//     holds the home address and its slot's source address (/32s); the
//     routes to the three /16s go through the interface of the slot in use,
//     from its source address;
//   - an encrypted network's VXLAN device sends to the peers' home
//     addresses (the driver writes them as FDB destinations), so its
//     packets are routed through the slot in use, and ride inside
//     WireGuard. MTU: underlay − 60 (WireGuard) for the interfaces, − 50
//     more (VXLAN) for the network;
//   - a peer per key another host published (mesh table "wg", one entry per
//     host, keyed by its name): its newest key with the host's home address
//     and that key's source address as allowed addresses, and, while the
//     host rotates, its previous key with its own source address only.
//     Every interface of this host has the same peers. A host opens its
//     interface and publishes while it has an endpoint on an encrypted
//     network (the catalog's local records), closes it and withdraws when
//     it has none; a member that leaves or is found dead has its entry
//     hidden by the mesh, and its peers removed;
//   - table ip weft_sealed: VXLAN for an encrypted network's VNI arriving on
//     any interface but weft's WireGuard ones is dropped (a plaintext frame,
//     forged or from a misconfigured host, never reaches the device).
//
// Key rotation, make before break (nothing in flight is lost): the host
// opens the other slot's interface with a new key and publishes both keys.
// A peer that reads it sends to the host under the new key at once (the
// home address moves to the new key's peer; the new interface is up to
// take it), and still accepts the host's packets under the old key (they
// come from the old slot's source address). Once every peer has made a
// handshake with the new interface (or after Config.SwitchTimeout), the
// host moves its routes to the new interface in one replace per route:
// each packet leaves either under the old key from the old source, or
// under the new key from the new source, and either is accepted. The old
// interface stays open Config.Drain for what is in flight, then closes,
// and the host publishes its new key alone.
//
// Where the kernel has WireGuard the interfaces are kernel links;
// otherwise TUNs served by wireguard-go inside this process. Both are then
// configured by wgctrl, the same code either way. The private keys live in
// memory and in the devices only, never on disk: a new key at every start
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
	"strconv"
	"strings"
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
	// Key is the host's newest WireGuard public key (base64): the peers
	// send to the host's home address under it.
	Key string `json:"key"`
	// VTEP is the host's underlay address, the peers' endpoint address
	// and the source of its tunnel addresses.
	VTEP string `json:"vtep"`
	// Port is the UDP port of Key's interface.
	Port int `json:"port"`
	// Path is "kernel" or "userspace", for status.
	Path string `json:"path,omitempty"`
	// Slot is Key's interface, 0 or 1: the host's packets under Key come
	// from that slot's source address. Absent: 0.
	Slot int `json:"slot,omitempty"`
	// Old is the key the host is rotating away from: it may still send
	// under it (from its slot's source address) until it has moved, and
	// takes what was in flight. Absent when no rotation is under way.
	Old *OldKey `json:"old,omitempty"`
}

// OldKey is a host's previous key during a rotation.
type OldKey struct {
	Key  string `json:"key"`
	Port int    `json:"port"`
	Slot int    `json:"slot"`
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

// Links is the kernel side of the interfaces; *dataplane.Kernel
// implements it.
type Links interface {
	EnsureWireGuardLink(name string) (bool, error)
	ConfigureTunnel(name string, addrs []netip.Addr, mtu int) error
	RouteTunnel(name string, dsts []netip.Prefix, src netip.Addr) error
	TunnelRoute(dst netip.Prefix) (string, bool)
	DeleteLink(name string) error
}

// Config configures a Tunnel.
type Config struct {
	// Name of slot 0's WireGuard interface; default "weftwg0". Slot 1's is
	// the same name ending in 1 instead of 0 (or with 1 appended).
	Name string
	// Port is slot 0's WireGuard UDP port, slot 1's the one after it;
	// default 51820.
	Port int
	// Subnet holds the hosts' home addresses: a /16 (default
	// 10.250.0.0/16); the two /16s after it hold their source addresses.
	// No weft network and no route of the hosts may use any of the three.
	Subnet netip.Prefix
	// VXLANPort is weft's VXLAN port, for the plaintext drop rule.
	VXLANPort int
	// Rotate is how often the private key is replaced; default 24 h,
	// negative never.
	Rotate time.Duration
	// SwitchTimeout bounds a rotation's wait for every peer's handshake
	// with the new interface (a peer that has not made one by then has
	// not read the new key, and loses this host's packets until it does);
	// default 30 s.
	SwitchTimeout time.Duration
	// Drain is how long the old interface stays open after the routes
	// moved, for what was in flight; default 10 s.
	Drain time.Duration
	// Keepalive is the peers' persistent keepalive: a handshake at once
	// when a peer is configured, and handshake ages that tell liveness.
	// Default 25 s.
	Keepalive time.Duration
	// Store is the mesh. Required.
	Store Store
	// Links makes the interfaces. Required.
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
		Name:          "weftwg0",
		Port:          51820,
		Subnet:        netip.MustParsePrefix("10.250.0.0/16"),
		VXLANPort:     4790,
		Rotate:        24 * time.Hour,
		SwitchTimeout: 30 * time.Second,
		Drain:         10 * time.Second,
		Keepalive:     25 * time.Second,
	}
}

// Overlay returns the home address of the host whose underlay address is
// vtep: subnet's upper 16 bits, vtep's lower 16. It fails for addresses
// that are not IPv4, or whose low bits make the subnet's first or last
// address.
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

// Subnets returns the tunnel's three /16s for the home subnet subnet:
// the home addresses', then slot 0's and slot 1's source addresses'. It
// fails when subnet is not an IPv4 /16 with two more after it.
func Subnets(subnet netip.Prefix) ([3]netip.Prefix, error) {
	var out [3]netip.Prefix
	if !subnet.Addr().Is4() || subnet.Bits() != 16 {
		return out, fmt.Errorf("tunnel subnet %s is not an IPv4 /16", subnet)
	}
	a := subnet.Masked().Addr().As4()
	if a[1] > 253 {
		return out, fmt.Errorf("tunnel subnet %s leaves no room for the two /16s after it (the hosts' source addresses)", subnet)
	}
	for i := range out {
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{a[0], a[1] + byte(i), 0, 0}), 16)
	}
	return out, nil
}

// Addresses returns every tunnel address of the host at vtep: home, then
// the sources of slot 0 and slot 1.
func Addresses(subnet netip.Prefix, vtep netip.Addr) ([]netip.Addr, error) {
	subs, err := Subnets(subnet)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(subs))
	for _, s := range subs {
		a, err := Overlay(s, vtep)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
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

// peer is one key another host published, as the interfaces have it.
type peer struct {
	host     string
	key      wgtypes.Key
	endpoint netip.AddrPort
	allowed  []netip.Addr
	vtep     netip.Addr
	home     netip.Addr
	// newest: the host's newest key (its home address is allowed here).
	newest bool
}

// slot is one of this host's two interfaces.
type slot struct {
	dev  device // nil: closed
	priv wgtypes.Key
}

// rotation is a key rotation under way: from one slot to the other.
type rotation struct {
	from, to int
	opened   time.Time // the new interface's
	switched time.Time // the routes moved; zero until then
}

// Tunnel keeps this host's WireGuard interfaces, keys and peers in step
// with the mesh and the encrypted networks here.
type Tunnel struct {
	cfg  Config
	log  *slog.Logger
	subs [3]netip.Prefix
	// names are the slots' interface names.
	names [2]string

	// mu guards the fields below; taken by Run and Links.
	mu        sync.Mutex
	slots     [2]slot
	cur       int       // the slot the routes go through
	rot       *rotation // nil: none under way
	rotatedAt time.Time
	peers     map[wgtypes.Key]peer // as configured
	// published is the record last written to the mesh; empty: none.
	published []byte
	// kick wakes Run for a rotation asked from outside.
	kick chan struct{}
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
	if cfg.SwitchTimeout <= 0 {
		cfg.SwitchTimeout = def.SwitchTimeout
	}
	if cfg.Drain <= 0 {
		cfg.Drain = def.Drain
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = def.Keepalive
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	subs, err := Subnets(cfg.Subnet)
	if err != nil {
		return nil, err
	}
	if cfg.Port < 1 || cfg.Port > 65534 {
		return nil, fmt.Errorf("tunnel port %d: WireGuard takes it and the one after it, so 1 to 65534", cfg.Port)
	}
	if cfg.Store == nil || cfg.Links == nil || cfg.Networks == nil || cfg.Self == nil {
		return nil, fmt.Errorf("tunnel: Store, Links, Networks and Self are required")
	}
	cfg.Subnet = cfg.Subnet.Masked()
	t := &Tunnel{cfg: cfg, log: cfg.Logger, subs: subs, peers: map[wgtypes.Key]peer{}, kick: make(chan struct{}, 1)}
	t.names = [2]string{cfg.Name, SlotName(cfg.Name, 1)}
	for _, n := range t.names {
		if len(n) > 15 {
			return nil, fmt.Errorf("tunnel interface name %q is longer than 15 bytes", n)
		}
	}
	return t, nil
}

// SlotName returns the name of slot's interface when slot 0's is name.
func SlotName(name string, slot int) string {
	if slot == 0 {
		return name
	}
	if strings.HasSuffix(name, "0") {
		return name[:len(name)-1] + strconv.Itoa(slot)
	}
	return name + strconv.Itoa(slot)
}

// Overlay is Overlay in the tunnel's subnet: what the driver writes as an
// encrypted network's FDB destination for a host's VTEP.
func (t *Tunnel) Overlay(vtep netip.Addr) (netip.Addr, error) { return Overlay(t.cfg.Subnet, vtep) }

// Subnet is the tunnel's home subnet.
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
	// step wakes the loop while a rotation is under way: its next step
	// (the routes' switch, the old interface's close) is found by looking.
	step := time.NewTimer(time.Hour)
	defer step.Stop()
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
	pass := func() {
		if d := t.reconcile(encrypted, active(), records, members); d > 0 {
			step.Reset(d)
		}
	}
	// The snapshots first: the networks this host has, the records and
	// members known, before anything is decided (a first pass without
	// them would remove a kernel device that outlived the last run).
	networks()
	endpoints()
	entries()
	pass()
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
		case <-step.C:
		case <-t.kick:
		case <-rotate:
			t.rotate()
		}
		pass()
	}
}

// reconcile brings the interfaces, the routes, the published record, the
// peers and the drop rule in line with what is wanted: the rule for every
// encrypted network here, the rest while one of them has an endpoint here
// (active); and takes a rotation under way one step further when it can.
// It returns when to look again for a rotation under way (0: none).
func (t *Tunnel) reconcile(encrypted map[string]uint32, active bool, records map[string]Record, members map[string]netip.Addr) time.Duration {
	self := t.cfg.Self()
	vnis := slices.Sorted(func(yield func(uint32) bool) {
		for _, v := range encrypted {
			if !yield(v) {
				return
			}
		}
	})
	if t.cfg.Filter != nil {
		if err := t.cfg.Filter.Set(t.names[:], t.cfg.VXLANPort, vnis); err != nil {
			t.log.Error("write the plaintext drop rule of encrypted networks", "err", err)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !active {
		if t.slots[0].dev != nil || t.slots[1].dev != nil {
			t.log.Info("no endpoint on an encrypted network here; tunnel closed", "device", t.names[t.cur])
		}
		t.closeLocked(true)
		return 0
	}
	if !self.IsValid() {
		return 0 // the underlay address comes: the next pass
	}
	addrs, err := Addresses(t.cfg.Subnet, self)
	if err != nil {
		t.log.Error("this host has no tunnel address; its encrypted networks reach no other host", "err", err)
		return 0
	}
	home := addrs[0]
	if t.slots[0].dev == nil && t.slots[1].dev == nil {
		t.adoptLocked()
	}
	mtu := 1500
	if t.cfg.MTU != nil {
		mtu = t.cfg.MTU()
	}
	want := t.wantPeersLocked(records, members, home)
	for s := range t.slots {
		if t.slots[s].dev == nil && (s == t.cur || (t.rot != nil && s == t.rot.to)) {
			if !t.openLocked(s) {
				return t.nextStepLocked()
			}
		}
		if t.slots[s].dev == nil {
			continue
		}
		if err := t.cfg.Links.ConfigureTunnel(t.names[s], []netip.Addr{home, addrs[1+s]}, mtu-dataplane.WireGuardOverhead); err != nil {
			t.log.Error("configure the WireGuard interface", "device", t.names[s], "err", err)
		}
		if err := t.slots[s].dev.configure(t.slots[s].priv, t.cfg.Port+s, t.cfg.Keepalive, want, t.cfg.Store.Synced()); err != nil {
			// The interface may be gone (deleted by hand, or its TUN
			// closed): the next pass opens it again.
			t.log.Error("configure WireGuard peers; the interface is opened again", "device", t.names[s], "err", err)
			t.closeSlotLocked(s, false)
			return t.nextStepLocked()
		}
	}
	t.peers = want
	t.stepLocked(want, addrs)
	if err := t.cfg.Links.RouteTunnel(t.names[t.cur], t.subs[:], addrs[1+t.cur]); err != nil {
		t.log.Error("route the tunnel's subnets", "device", t.names[t.cur], "err", err)
	}
	t.publishLocked(self)
	return t.nextStepLocked()
}

// adoptLocked picks the slot to start from: a kernel interface that
// outlived the last run and carries the routes, else slot 0. The other
// slot's interface, left by a run that stopped during a rotation, is
// deleted (it would hold its port and a key no peer is told of).
func (t *Tunnel) adoptLocked() {
	t.cur, t.rot = 0, nil
	if name, ok := t.cfg.Links.TunnelRoute(t.subs[0]); ok && name == t.names[1] {
		t.cur = 1
	}
	if err := t.cfg.Links.DeleteLink(t.names[1-t.cur]); err != nil {
		t.log.Warn("delete the WireGuard interface left by a rotation of the last run", "device", t.names[1-t.cur], "err", err)
	}
}

// openLocked opens slot s's interface, with a new key unless it has one
// (a kernel interface that outlived the last run keeps its own). It
// reports whether the interface is open.
func (t *Tunnel) openLocked(s int) bool {
	dev, err := openDevice(t.names[s], t.cfg.Links, t.log)
	if err != nil {
		t.log.Error("open the WireGuard interface; encrypted networks reach no other host", "device", t.names[s], "err", err)
		return false
	}
	if k, ok := dev.existingKey(); ok && t.rot == nil {
		t.slots[s].priv = k // a kernel device that outlived the last run keeps its key
	}
	if t.slots[s].priv == (wgtypes.Key{}) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			dev.close()
			t.log.Error("generate a WireGuard key", "err", err)
			return false
		}
		t.slots[s].priv, t.rotatedAt = k, time.Now()
	}
	t.slots[s].dev = dev
	t.log.Info("tunnel open", "device", t.names[s], "path", dev.path(), "port", t.cfg.Port+s)
	return true
}

// stepLocked takes a rotation one step: the routes move to the new
// interface once every peer has made a handshake with it (or the wait
// timed out); the old interface closes Drain after that.
func (t *Tunnel) stepLocked(want map[wgtypes.Key]peer, addrs []netip.Addr) {
	r := t.rot
	if r == nil || t.slots[r.to].dev == nil {
		return
	}
	if r.switched.IsZero() {
		waiting := t.unshakenLocked(want, r)
		if len(waiting) > 0 && time.Since(r.opened) < t.cfg.SwitchTimeout {
			return
		}
		if len(waiting) > 0 {
			t.log.Warn("key rotation: peers made no handshake with the new interface in time; they lose this host's packets until they read its new key", "peers", waiting)
		}
		if err := t.cfg.Links.RouteTunnel(t.names[r.to], t.subs[:], addrs[1+r.to]); err != nil {
			t.log.Error("key rotation: move the routes to the new interface", "device", t.names[r.to], "err", err)
			return
		}
		t.cur, r.switched = r.to, time.Now()
		t.log.Info("key rotation: routes moved to the new interface", "device", t.names[r.to], "after", time.Since(r.opened).Round(time.Millisecond))
		return
	}
	if time.Since(r.switched) < t.cfg.Drain {
		return
	}
	t.closeSlotLocked(r.from, true)
	t.slots[r.from].priv = wgtypes.Key{}
	t.rot = nil
	t.log.Info("key rotation done; old interface closed", "device", t.names[r.from], "public", t.slots[r.to].priv.PublicKey().String())
}

// nextStepLocked returns when a rotation under way can take its next
// step: soon while it waits for the peers' handshakes, at the end of
// the drain after; 0 when none is under way.
func (t *Tunnel) nextStepLocked() time.Duration {
	r := t.rot
	switch {
	case r == nil:
		return 0
	case r.switched.IsZero():
		return 100 * time.Millisecond
	}
	return max(time.Until(r.switched.Add(t.cfg.Drain)), 10*time.Millisecond)
}

// unshakenLocked returns the hosts whose newest key has made no handshake
// with the new interface of r since it opened.
func (t *Tunnel) unshakenLocked(want map[wgtypes.Key]peer, r *rotation) []string {
	stats := t.slots[r.to].dev.stats()
	var out []string
	for k, p := range want {
		if !p.newest {
			continue
		}
		if s, ok := stats[k]; !ok || !s.LastHandshakeTime.After(r.opened) {
			out = append(out, p.host)
		}
	}
	sort.Strings(out)
	return out
}

// publishLocked writes this host's record when it changed.
func (t *Tunnel) publishLocked(self netip.Addr) {
	s := t.cur
	if t.rot != nil {
		s = t.rot.to
	}
	dev := t.slots[s].dev
	if dev == nil {
		return
	}
	rec := Record{Key: t.slots[s].priv.PublicKey().String(), VTEP: self.String(), Port: t.cfg.Port + s, Path: dev.path(), Slot: s}
	if r := t.rot; r != nil && t.slots[r.from].dev != nil {
		rec.Old = &OldKey{Key: t.slots[r.from].priv.PublicKey().String(), Port: t.cfg.Port + r.from, Slot: r.from}
	}
	b, _ := json.Marshal(rec)
	if string(b) != string(t.published) {
		t.cfg.Store.Put(Table, t.cfg.Store.LocalNode(), b)
		t.published = b
	}
}

// wantPeersLocked returns the peers the interfaces should have: the keys
// of every other member's record whose VTEP is the member's own address,
// with addresses no earlier host (by name) holds.
func (t *Tunnel) wantPeersLocked(records map[string]Record, members map[string]netip.Addr, home netip.Addr) map[wgtypes.Key]peer {
	names := make([]string, 0, len(records))
	for n := range records {
		names = append(names, n)
	}
	sort.Strings(names)
	taken := map[netip.Addr]string{home: t.cfg.Store.LocalNode()}
	out := map[wgtypes.Key]peer{}
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
		vtep = vtep.Unmap()
		addrs, err := Addresses(t.cfg.Subnet, vtep)
		if err != nil {
			t.log.Warn("peer has no tunnel address", "peer", name, "err", err)
			continue
		}
		if other, ok := taken[addrs[0]]; ok {
			t.log.Error("two hosts share the low 16 bits of their underlay address, so one tunnel address; the later is left out", "peer", name, "holder", other, "tunnel", addrs[0].String())
			continue
		}
		key, err := wgtypes.ParseKey(r.Key)
		if err != nil || r.Port <= 0 || r.Port > 65535 || (r.Slot != 0 && r.Slot != 1) {
			t.log.Warn("ignoring tunnel record with a bad key, port or slot", "peer", name)
			continue
		}
		taken[addrs[0]] = name
		out[key] = peer{host: name, key: key, endpoint: netip.AddrPortFrom(vtep, uint16(r.Port)),
			allowed: []netip.Addr{addrs[0], addrs[1+r.Slot]}, vtep: vtep, home: addrs[0], newest: true}
		if o := r.Old; o != nil {
			ok, err := wgtypes.ParseKey(o.Key)
			if err != nil || ok == key || o.Port <= 0 || o.Port > 65535 || (o.Slot != 0 && o.Slot != 1) || o.Slot == r.Slot {
				t.log.Warn("ignoring the previous key of a tunnel record: bad key, port or slot", "peer", name)
				continue
			}
			out[ok] = peer{host: name, key: ok, endpoint: netip.AddrPortFrom(vtep, uint16(o.Port)),
				allowed: []netip.Addr{addrs[1+o.Slot]}, vtep: vtep, home: addrs[0]}
		}
	}
	return out
}

// rotate begins a key rotation: a new key on the other slot, which the
// next reconcile opens and publishes. A rotation under way is let finish.
// It reports whether one began.
func (t *Tunnel) rotate() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rot != nil {
		t.log.Info("key rotation asked while one is under way; it finishes first")
		return false
	}
	if t.slots[t.cur].dev == nil {
		// Closed: the next interface opens with a new key.
		t.slots[t.cur].priv = wgtypes.Key{}
		return false
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.log.Error("generate a WireGuard key", "err", err)
		return false
	}
	to := 1 - t.cur
	t.slots[to].priv, t.rotatedAt = k, time.Now()
	t.rot = &rotation{from: t.cur, to: to, opened: time.Now()}
	t.log.Info("key rotation begun", "from", t.names[t.cur], "to", t.names[to], "public", k.PublicKey().String())
	return true
}

// Rotate begins a key rotation now (`weft tunnel rotate`: the rotation
// timer's work done early). It reports false when one is under way
// already (it finishes first) or the tunnel is closed (its next opening
// takes a new key).
func (t *Tunnel) Rotate() bool {
	began := t.rotate()
	select {
	case t.kick <- struct{}{}:
	default:
	}
	return began
}

// Rotating reports whether a key rotation is under way.
func (t *Tunnel) Rotating() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rot != nil
}

// PublicKey returns the newest public key; zero before the first.
func (t *Tunnel) PublicKey() wgtypes.Key {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.cur
	if t.rot != nil {
		s = t.rot.to
	}
	if t.slots[s].priv == (wgtypes.Key{}) {
		return wgtypes.Key{}
	}
	return t.slots[s].priv.PublicKey()
}

func (t *Tunnel) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeLocked(false)
}

// closeLocked closes the interfaces; withdraw also deletes them (kernel
// ones too) and the mesh record: no endpoint on an encrypted network is
// here. A rotation under way ends with them: the next open starts from
// one interface.
func (t *Tunnel) closeLocked(withdraw bool) {
	for s := range t.slots {
		t.closeSlotLocked(s, withdraw)
	}
	if t.rot != nil {
		t.slots[t.rot.from].priv = wgtypes.Key{}
		t.cur, t.rot = t.rot.to, nil
	}
	if withdraw && t.published != nil {
		t.cfg.Store.Delete(Table, t.cfg.Store.LocalNode())
		t.published = nil
	}
	t.peers = map[wgtypes.Key]peer{}
}

// closeSlotLocked closes slot s's interface; del also deletes the link (a
// kernel one would stay otherwise).
func (t *Tunnel) closeSlotLocked(s int, del bool) {
	if t.slots[s].dev != nil {
		t.slots[s].dev.close()
		t.slots[s].dev = nil
	}
	if del {
		if err := t.cfg.Links.DeleteLink(t.names[s]); err != nil {
			t.log.Warn("delete the WireGuard interface", "device", t.names[s], "err", err)
		}
	}
}

// Links returns the encrypted links of this host, by peer name: each
// host's newest key, as the interface carrying this host's packets sees
// it.
func (t *Tunnel) Links() []Link {
	t.mu.Lock()
	defer t.mu.Unlock()
	dev := t.slots[t.cur].dev
	if dev == nil {
		return nil
	}
	stats := dev.stats()
	out := make([]Link, 0, len(t.peers))
	for _, p := range t.peers {
		if !p.newest {
			continue
		}
		l := Link{Peer: p.host, VTEP: p.vtep.String(), Tunnel: p.home.String(), Path: dev.path()}
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
