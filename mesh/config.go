package mesh

// This file owns the configuration: Config, its defaults, and its
// translation for memberlist.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the gossip port (TCP and UDP). It stays clear of Docker's
// swarm ports (2377 management, 7946 gossip, 4789 VXLAN).
const DefaultPort = 7950

// Config configures a Mesh. Start from DefaultConfig and set NodeName and
// Peers; every duration left at zero takes its default.
type Config struct {
	// NodeName names this host in the mesh; it must be unique and stable
	// across restarts, since entries are owned by name. Required.
	NodeName string
	// Version is this build of weft, shown to every member in
	// Member.Version (at most maxVersionLen bytes).
	Version string
	// BindAddr is the address to listen on. Empty: the address given to
	// Start, or 0.0.0.0 if that is empty too. Ignored when Transport is set.
	BindAddr string
	// AdvertiseAddr is the address other hosts reach us on, normally the
	// underlay address. Empty: the address given to Start; if that is empty
	// too, memberlist picks BindAddr or a private address.
	AdvertiseAddr string
	// Port is the gossip port, TCP and UDP, both listened on and advertised
	// (default DefaultPort). Also the port assumed for peers given without one.
	Port int
	// Peers are addresses ("ip" or "ip:port", or a resolvable host name) to
	// join. They are tried from Start on, every RejoinInterval while they are
	// not alive members, so a partitioned or rebooted host rejoins by itself.
	Peers []string
	// StateDir, if set, keeps the last known peers (peers.json), tried at
	// start until a join succeeds, and a ceiling of the local Lamport clock
	// (clock.json), so a restarted host writes with newer clocks than
	// before. Missing or corrupt files are logged once and ignored.
	StateDir string
	// Logger receives the mesh's and memberlist's logs (default: discard).
	Logger *slog.Logger
	// Transport carries memberlist's packets and streams. Nil: memberlist's
	// UDP/TCP transport on BindAddr:Port. Tests inject a MemNetwork one.
	Transport memberlist.Transport
	// TombstoneTTL is how long deletes are kept before they are reaped, and
	// how long entries of an owner never seen alive are kept hidden
	// (default 2 min). It must exceed the time a change takes to reach every
	// member, or a reaped delete can be undone by a late copy (the owner
	// repairs that too, but later).
	TombstoneTTL time.Duration
	// RepairGrace is how long, after start, the owner waits for its caller
	// to put its entries back before it deletes stale copies of its entries
	// that it does not hold (default 10 s; negative: no grace). Keeps a
	// restarted host's endpoints from blinking out on every other host.
	RepairGrace time.Duration

	// Failure detection. With the defaults a member whose weft stops
	// answering is found dead by everyone within about 3 s on a LAN of up
	// to ten hosts: it is probed within a round (ProbeInterval × hosts /
	// (hosts-1)), fails ProbeTimeout and the indirect probes, then stays
	// suspect for SuspicionMult × ProbeInterval × max(1, log10(hosts)).
	// Its host is then probed (HostProbe): a host that does not answer
	// within HostProbeTimeout is gone, and the member dead; one that
	// answers is only without weft, and the member is down (see
	// DownGrace).

	// ProbeInterval is the time between failure probes (default 500 ms).
	ProbeInterval time.Duration
	// ProbeTimeout is how long to wait for a probe's ack (default 250 ms).
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect has to refute (default 2).
	SuspicionMult int
	// SuspicionMaxTimeoutMult caps the suspicion time when confirmations are
	// expected (SuspicionMult > 2) (default 3).
	SuspicionMaxTimeoutMult int

	// DownGrace is how long the other members keep this member's entries
	// while it is down: found dead, its host still answering HostProbe (its
	// weft disabled, restarting or being upgraded, its kernel entries and
	// containers still carrying traffic). Past it, or as soon as its host
	// stops answering, it is dead and its entries are withdrawn everywhere.
	// Each member announces its own (node metadata), so a host about to be
	// down for long can ask for more; members of builds that announce none
	// get this member's. Default 10 min; negative: none, the others find
	// this member dead at once.
	DownGrace time.Duration
	// HostProbe tells whether the host of a member answers, with nothing
	// of weft's needed there; addr is the member's gossip address
	// ("ip:port") and ctx ends after HostProbeTimeout. It returns nil if
	// the host answered. It is called from the mesh's own goroutine, at
	// most a few at a time, and must return when ctx ends. Nil: the
	// transport's ProbeHost if it has one (MemTransport emulates hosts),
	// else TCPProbe.
	HostProbe func(ctx context.Context, addr string) error
	// HostProbeInterval is how often the host of a down member is probed
	// again (default 1 s): a host lost while its weft is down is found
	// gone within HostProbeInterval + HostProbeTimeout.
	HostProbeInterval time.Duration
	// HostProbeTimeout bounds one probe (default 1 s): on a LAN a live
	// kernel answers in well under a millisecond.
	HostProbeTimeout time.Duration

	// Dissemination.

	// GossipInterval is the time between gossip rounds (default 200 ms).
	GossipInterval time.Duration
	// GossipNodes is how many members each round sends to (default 3).
	GossipNodes int
	// RetransmitMult: each broadcast is sent RetransmitMult × log10(n+1)
	// times (default 4).
	RetransmitMult int
	// PushPullInterval is the time between memberlist's state exchanges with
	// a random member (default 10 s; memberlist stretches it above 32
	// members). The exchange carries a digest; the differences follow over
	// TCP.
	PushPullInterval time.Duration
	// SyncInterval is how often, while the table is changing in bulk (more
	// than a broadcast queue can carry), the mesh runs an extra anti-entropy
	// exchange with a random member, one at a time; and how often it syncs
	// with members that came back (default 200 ms). Each round is a digest
	// exchange (tens of bytes per member) plus what the two sides lack.
	SyncInterval time.Duration
	// RejoinInterval is the time between attempts to join peers that are not
	// alive members (default 1 s).
	RejoinInterval time.Duration
	// TCPTimeout bounds a join, a state exchange or a TCP send (default 5 s).
	TCPTimeout time.Duration
	// MaxQueuedBroadcasts caps the broadcast queue; beyond it the oldest
	// broadcasts are dropped and anti-entropy carries the changes
	// (default 4096).
	MaxQueuedBroadcasts int
	// UDPBufferSize is the largest gossip packet (default 1400, fits an
	// Ethernet MTU). Entries too large for a packet travel over TCP.
	UDPBufferSize int

	// Security and isolation.

	// SecretKey, if set, encrypts all gossip (AES, 16, 24 or 32 bytes); it
	// is handed to memberlist's keyring.
	SecretKey []byte
	// Keyring, if set, encrypts all gossip with its primary key and
	// accepts any of its keys (LoadKeyring); the caller keeps it to rotate
	// keys while the mesh runs (Keyring.Apply). It takes precedence over
	// SecretKey.
	Keyring *Keyring
	// Label, if set, is attached to every packet and stream; members with
	// another label are ignored, which keeps two clusters on one network
	// apart.
	Label string
	// KeyOwner names the owner a key of table belongs to, for tables whose
	// keys name their owner (ok false: the table's keys do not). An entry
	// whose owner is not the one its key names is refused on receipt, never
	// stored nor passed on, so it cannot displace the owner's own entry of
	// that key; Put refuses such a key too. Every member must use the same
	// rule. It is called under the mesh's lock and must not block. Nil: no
	// table's keys name their owner.
	KeyOwner func(table, key string) (owner string, ok bool)
	// MaxEntriesPerOwner bounds the entries (tombstones included) one owner
	// may have in one table, on every member: a key new to an owner beyond
	// it is refused (logged), Put's included (default 65536; negative: no
	// limit).
	MaxEntriesPerOwner int
	// MaxBytesPerOwner bounds the bytes of keys and values one owner may
	// have, all tables together (default 64 MiB; negative: no limit).
	MaxBytesPerOwner int

	// EnableCompression turns on memberlist's LZW compression of packets
	// and TCP messages. Off by default: on a LAN the bandwidth saved is
	// small, while memberlist allocates a fresh dictionary per packet, which
	// costs every host CPU and garbage collection.
	EnableCompression bool
}

// DefaultConfig returns the defaults, tuned for hosts on one LAN.
func DefaultConfig() Config {
	return Config{
		Port:                    DefaultPort,
		TombstoneTTL:            2 * time.Minute,
		RepairGrace:             10 * time.Second,
		ProbeInterval:           500 * time.Millisecond,
		ProbeTimeout:            250 * time.Millisecond,
		SuspicionMult:           2,
		SuspicionMaxTimeoutMult: 3,
		DownGrace:               10 * time.Minute,
		HostProbeInterval:       time.Second,
		HostProbeTimeout:        time.Second,
		GossipInterval:          200 * time.Millisecond,
		GossipNodes:             3,
		RetransmitMult:          4,
		PushPullInterval:        10 * time.Second,
		SyncInterval:            200 * time.Millisecond,
		RejoinInterval:          time.Second,
		TCPTimeout:              5 * time.Second,
		MaxQueuedBroadcasts:     4096,
		UDPBufferSize:           1400,
		MaxEntriesPerOwner:      1 << 16,
		MaxBytesPerOwner:        64 << 20,
	}
}

// withDefaults fills zero fields from DefaultConfig and validates.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.NodeName == "" {
		return c, errors.New("mesh config: NodeName is required")
	}
	if len(c.NodeName) > maxOwnerLen {
		return c, fmt.Errorf("mesh config: NodeName is longer than %d bytes", maxOwnerLen)
	}
	if len(c.Version) > maxVersionLen {
		return c, fmt.Errorf("mesh config: Version is %d bytes, the limit is %d", len(c.Version), maxVersionLen)
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return c, fmt.Errorf("mesh config: SecretKey must be 16, 24 or 32 bytes, not %d", len(c.SecretKey))
	}
	if c.Port < 0 || c.Port > 65535 {
		return c, fmt.Errorf("mesh config: bad port %d", c.Port)
	}
	if c.Port == 0 {
		c.Port = d.Port
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	// Zero takes the default, negative means none.
	setGrace := func(v *time.Duration, def time.Duration) {
		if *v < 0 {
			*v = 0
		} else if *v == 0 {
			*v = def
		}
	}
	setDur(&c.TombstoneTTL, d.TombstoneTTL)
	setGrace(&c.RepairGrace, d.RepairGrace)
	setDur(&c.ProbeInterval, d.ProbeInterval)
	setDur(&c.ProbeTimeout, d.ProbeTimeout)
	setInt(&c.SuspicionMult, d.SuspicionMult)
	setInt(&c.SuspicionMaxTimeoutMult, d.SuspicionMaxTimeoutMult)
	setGrace(&c.DownGrace, d.DownGrace)
	setDur(&c.HostProbeInterval, d.HostProbeInterval)
	setDur(&c.HostProbeTimeout, d.HostProbeTimeout)
	if c.HostProbe == nil {
		if p, ok := c.Transport.(HostProber); ok {
			c.HostProbe = p.ProbeHost
		} else {
			c.HostProbe = TCPProbe
		}
	}
	setDur(&c.GossipInterval, d.GossipInterval)
	setInt(&c.GossipNodes, d.GossipNodes)
	setInt(&c.RetransmitMult, d.RetransmitMult)
	setDur(&c.PushPullInterval, d.PushPullInterval)
	setDur(&c.SyncInterval, d.SyncInterval)
	setDur(&c.RejoinInterval, d.RejoinInterval)
	setDur(&c.TCPTimeout, d.TCPTimeout)
	setInt(&c.MaxQueuedBroadcasts, d.MaxQueuedBroadcasts)
	setInt(&c.UDPBufferSize, d.UDPBufferSize)
	setLimit := func(v *int, def int) {
		if *v < 0 {
			*v = 0
		} else if *v == 0 {
			*v = def
		}
	}
	setLimit(&c.MaxEntriesPerOwner, d.MaxEntriesPerOwner)
	setLimit(&c.MaxBytesPerOwner, d.MaxBytesPerOwner)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// memberlistConfig translates c (after withDefaults) for memberlist; addr
// is the address given to Start (see BindAddr and AdvertiseAddr).
func (c *Config) memberlistConfig(d *delegate, addr string) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.NodeName
	mc.BindAddr = cmp.Or(c.BindAddr, addr, "0.0.0.0")
	mc.BindPort = c.Port
	mc.AdvertiseAddr = cmp.Or(c.AdvertiseAddr, addr)
	mc.AdvertisePort = c.Port
	mc.Transport = c.Transport
	mc.Label = c.Label
	mc.TCPTimeout = c.TCPTimeout
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	mc.SuspicionMaxTimeoutMult = c.SuspicionMaxTimeoutMult
	mc.GossipInterval = c.GossipInterval
	mc.GossipNodes = c.GossipNodes
	mc.RetransmitMult = c.RetransmitMult
	mc.PushPullInterval = c.PushPullInterval
	mc.UDPBufferSize = c.UDPBufferSize
	mc.EnableCompression = c.EnableCompression
	// A host that comes back with a new address under the same name may
	// take its name back once the old one has been dead this long.
	mc.DeadNodeReclaimTime = 30 * time.Second
	if len(c.SecretKey) > 0 {
		mc.SecretKey = append([]byte(nil), c.SecretKey...)
	}
	if c.Keyring != nil {
		mc.Keyring = c.Keyring.kr
	}
	mc.Delegate = d
	mc.Events = d
	mc.LogOutput = nil
	mc.Logger = log.New(&logWriter{l: c.Logger}, "", 0)
	return mc
}
