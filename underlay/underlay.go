// Package underlay knows this host's place on the underlay network, in one
// place, and follows it: its address (where the mesh listens and VXLAN
// arrives), the swarm managers' addresses (the mesh's way in), and the MTU
// of the path VXLAN takes to the other hosts.
//
// The address, by precedence: the setting (WEFT_ADVERTISE_ADDR); in local
// mode, the source address the kernel's routing picks toward the first of
// WEFT_PEERS it has a route to; in swarm mode, the engine's swarm node
// address; until one of those answers, the address of the last run, so a
// rebooted host's mesh starts before its engine's API does.
//
// The MTU is the smallest of the routes' toward the other hosts' VTEPs; with
// no other host known, that of the interface holding this host's address;
// with no address yet, a safe lower bound (the smallest MTU of the host's
// interfaces that carry IPv4). It never comes from the default route: a
// host may route by default through a jumbo-frame interface while VXLAN
// runs on another.
package underlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/engine"
)

// Engine answers what the engine knows of the swarm: *engine.Client.
type Engine interface {
	Info(ctx context.Context) (engine.Info, error)
}

// Paths measures MTUs in this host's namespace: *dataplane.Kernel.
type Paths interface {
	// PathMTU is the MTU of the path from local to the remotes; ok is
	// false when nothing is known.
	PathMTU(local net.IP, remotes []net.IP) (mtu int, ok bool)
	// FallbackMTU is a safe lower bound while no path is known.
	FallbackMTU() int
}

// Config configures an Underlay.
type Config struct {
	// Advertise is the address set by hand; it wins over everything else.
	Advertise netip.Addr
	// Last is the address of the last run.
	Last netip.Addr
	// Scope is "global" (swarm) or "local".
	Scope string
	// Peers are WEFT_PEERS: in local mode, the route toward them gives the
	// address.
	Peers []string
	// MeshPort is the mesh's port, joined on the managers' addresses.
	MeshPort int
	// Engine is asked for the swarm's node address and managers; may be
	// nil in local mode.
	Engine Engine
	// Paths measures MTUs. Required.
	Paths Paths
	// Remotes returns the other hosts' VTEPs (the mesh's members).
	Remotes func() []netip.Addr
	// Interval is how often the engine and the MTU are looked at again
	// (default 5 s; faster until the address is known).
	Interval time.Duration
	// Logger receives the package's log; nil discards it.
	Logger *slog.Logger
}

// State is what the package knows at one time.
type State struct {
	// Addr is this host's underlay address; invalid until known.
	Addr netip.Addr
	// Settled says Addr comes from the setting, the routing or the engine,
	// not from the last run.
	Settled bool
	// Managers are the swarm managers' mesh addresses ("ip:port").
	Managers []string
	// MTU is the underlay path's MTU.
	MTU int
}

// Underlay follows this host's underlay. Its methods are safe for
// concurrent use.
type Underlay struct {
	cfg Config
	log *slog.Logger

	// mu guards the fields below.
	mu      sync.Mutex
	state   State
	notify  []chan struct{}
	warnedE string // last engine error logged
}

// New returns an Underlay that knows what the settings and the last run
// say; Run follows the rest.
func New(cfg Config) *Underlay {
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &Underlay{cfg: cfg, log: log}
	switch {
	case cfg.Advertise.IsValid():
		u.state.Addr, u.state.Settled = cfg.Advertise, true
	case cfg.Last.IsValid():
		u.state.Addr = cfg.Last
	}
	u.state.MTU = u.measure(u.state.Addr)
	return u
}

// State returns what is known now.
func (u *Underlay) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.state
	s.Managers = slices.Clone(s.Managers)
	return s
}

// MTU returns the underlay path's MTU.
func (u *Underlay) MTU() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state.MTU
}

// Changed returns a new channel that receives a value, coalesced,
// whenever the state changes. Each consumer asks for its own.
func (u *Underlay) Changed() <-chan struct{} {
	c := make(chan struct{}, 1)
	u.mu.Lock()
	u.notify = append(u.notify, c)
	u.mu.Unlock()
	return c
}

// Run follows the underlay until ctx ends.
func (u *Underlay) Run(ctx context.Context) {
	for {
		u.Refresh(ctx)
		every := u.cfg.Interval
		if !u.State().Settled {
			every = min(every, time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// Refresh looks at the settings, the routing, the engine and the paths
// once.
func (u *Underlay) Refresh(ctx context.Context) {
	addr, settled, managers := u.address(ctx)
	old := u.State()
	next := State{Addr: addr, Settled: settled, Managers: managers}
	if !settled {
		next.Addr, next.Settled = old.Addr, old.Settled
	}
	if managers == nil {
		next.Managers = old.Managers
	}
	next.MTU = u.measure(next.Addr)
	u.mu.Lock()
	changed := next.Addr != old.Addr || next.Settled != old.Settled || next.MTU != old.MTU || !slices.Equal(next.Managers, old.Managers)
	u.state = next
	notify := slices.Clone(u.notify)
	u.mu.Unlock()
	if !changed {
		return
	}
	if next.Addr != old.Addr || next.MTU != old.MTU {
		u.log.Info("underlay", "addr", next.Addr.String(), "mtu", next.MTU, "settled", next.Settled)
	}
	for _, c := range notify {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// address finds this host's address: settled is false when no source
// answered (the last run's address stays in use).
func (u *Underlay) address(ctx context.Context) (addr netip.Addr, settled bool, managers []string) {
	if u.cfg.Advertise.IsValid() {
		addr, settled = u.cfg.Advertise, true
	}
	if !settled && u.cfg.Scope == network.LocalScope && len(u.cfg.Peers) > 0 {
		a, err := RouteSource(u.cfg.Peers, u.cfg.MeshPort)
		if err == nil {
			addr, settled = a, true
		} else {
			u.warnOnce(err)
		}
	}
	if u.cfg.Engine != nil && u.cfg.Scope != network.LocalScope {
		ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
		info, err := u.cfg.Engine.Info(ictx)
		cancel()
		if err != nil {
			u.log.Debug("engine API not answering yet", "err", err)
		} else {
			for _, m := range info.Swarm.RemoteManagers {
				if host, _, err := net.SplitHostPort(m.Addr); err == nil {
					managers = append(managers, net.JoinHostPort(host, strconv.Itoa(u.cfg.MeshPort)))
				}
			}
			slices.Sort(managers)
			if managers == nil {
				managers = []string{}
			}
			if a, err := netip.ParseAddr(info.Swarm.NodeAddr); err == nil && a.Is4() && !settled {
				addr, settled = a, true
			}
		}
	}
	return addr, settled, managers
}

func (u *Underlay) warnOnce(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.warnedE == err.Error() {
		return
	}
	u.warnedE = err.Error()
	u.log.Warn("cannot derive this host's underlay address from WEFT_PEERS; set WEFT_ADVERTISE_ADDR", "err", err)
}

// measure returns the path MTU from addr to the other hosts.
func (u *Underlay) measure(addr netip.Addr) int {
	var remotes []net.IP
	if u.cfg.Remotes != nil {
		for _, r := range u.cfg.Remotes() {
			if r.Is4() && r != addr {
				remotes = append(remotes, net.IP(r.AsSlice()))
			}
		}
	}
	var local net.IP
	if addr.IsValid() {
		local = net.IP(addr.AsSlice())
	}
	if mtu, ok := u.cfg.Paths.PathMTU(local, remotes); ok {
		return mtu
	}
	return u.cfg.Paths.FallbackMTU()
}

// RouteSource returns the source address the kernel's routing picks
// toward the first of peers it has a route to ("ip" or "ip:port"; port is
// the default). No packet is sent: a connected UDP socket only asks the
// routing table.
func RouteSource(peers []string, port int) (netip.Addr, error) {
	var errs []error
	for _, p := range peers {
		host, pt := p, strconv.Itoa(port)
		if h, x, err := net.SplitHostPort(p); err == nil {
			host, pt = h, x
		}
		conn, err := net.Dial("udp4", net.JoinHostPort(host, pt))
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
	return netip.Addr{}, fmt.Errorf("no route toward any of WEFT_PEERS %v: %w", peers, errors.Join(errs...))
}
