// Package keyservice keys weft's mesh from the swarm's own trust, with
// nothing set by hand. Every swarm node holds a certificate signed by the
// swarm's CA (O = the cluster ID, OU = swarm-manager or swarm-worker, CN =
// the node ID), which swarm renews by itself. With it, members prove
// their membership over mutual TLS (1.3) to a small service every manager
// runs, which hands out the mesh's gossip keyring and rotates it. The
// package owns that service, its client, the rules that make all keyrings
// one, and what each member reports of its keyring in the mesh.
//
// Design notes:
//
//   - Trust. A peer is accepted when its chain leads to the swarm's root CA
//     (swarm-root-ca.crt, through the intermediates it sends), its O is
//     this node's cluster ID and its OU a swarm role; a client must also
//     be a node the engine still lists (managers ask their engine), so a
//     node removed from the swarm is refused although its certificate has
//     not expired. Clients accept only a manager's certificate.
//   - Authority. Only managers make keys and merge what they are sent;
//     workers only fetch. Managers exchange keyrings with every other
//     manager; a worker fetches from one manager at a time.
//   - Bootstrap. A manager with no key asks the other managers; when none
//     has one (or none answers), it makes generation 1. Managers that do so
//     at once converge: the merged keyring holds both keys (both accepted
//     meanwhile), and the primary settles on the greater (generation,
//     origin) everywhere.
//   - Rotation. A manager makes generation N+1 every RotateEvery, on `weft
//     key rotate`, and when a node leaves the swarm. A new key is first
//     accepted everywhere; each member makes it its primary once every
//     alive member of the mesh reports holding it (or it is older than
//     Spread), and drops the older keys once every alive member reports
//     sending with it (or it is older than twice Spread): the old key is
//     kept until every member has the new one. Retired keys stay retired:
//     the keyring's floor only rises. Reports travel in the mesh's table
//     "keys", one entry per member, by fingerprint only.
//   - Before a key. A member whose keyring is empty keeps its mesh off (the
//     plugin serves its own containers), and retries every second until a
//     manager answers; a member that notices, in another's report, a key it
//     lacks fetches at once.
//   - Certificates. The files are read again whenever they change (swarm
//     renews node certificates, rotates its root CA, or the node leaves and
//     joins again); each connection uses what they hold then. A worker
//     promoted to manager starts serving, a demoted manager stops.
//   - Firewall. Addresses that proved membership here (clients on a
//     manager, managers on a client) are what Authenticated returns, so
//     that a joining host is let through weft's ports before it is a member
//     of the mesh.
//
// Concurrency: Run's loop does the syncing, generating and settling; the
// server's handlers merge what managers send. Service.mu serialises every
// read-merge-write of the keyring and is never held across the network.
// Service.authMu guards the authenticated addresses.
package keyservice

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
)

// DefaultPort is the key service's TCP port.
const DefaultPort = 7952

// Mesh is what the service needs of the mesh: *mesh.Mesh.
type Mesh interface {
	LocalNode() string
	Members() []mesh.Member
	Entries(table string) []mesh.Entry
	Put(table, key string, value []byte)
	Synced() bool
	Watch(table string, members bool) *feed.Sub[mesh.Event]
}

// Nodes lists the swarm's nodes; only a manager's engine answers
// (*engine.Client).
type Nodes interface {
	NodeIDs(ctx context.Context) ([]string, error)
}

// Config configures a Service.
type Config struct {
	// SwarmDir is the engine's swarm directory as the plugin sees it
	// (<data-root>/swarm, holding certificates/). Required.
	SwarmDir string
	// Port is the key service's TCP port, on every manager (default
	// DefaultPort).
	Port int
	// BindAddr is the address a manager listens on; empty: every address
	// (the port stays open to all: TLS decides who is served).
	BindAddr string
	// Keyring is the mesh's keyring, which the service fills and rotates.
	// Required.
	Keyring *mesh.Keyring
	// Mesh carries the members' reports. Required.
	Mesh Mesh
	// Underlay returns this host's underlay address (clients dial from
	// it) and the swarm managers' addresses; invalid or empty while
	// unknown. Required.
	Underlay func() (netip.Addr, []netip.Addr)
	// Nodes, if set, is asked on managers which nodes the swarm has.
	Nodes Nodes
	// RotateEvery is how often managers make a new key (default 24 h;
	// negative: only on request and when a node leaves).
	RotateEvery time.Duration
	// Spread bounds how long a new key waits for every member before it
	// becomes the primary anyway, and the old keys are dropped after
	// twice as long (default 1 min).
	Spread time.Duration
	// SyncEvery is how often a member compares its keyring with a
	// manager's once it has a key (default 10 s).
	SyncEvery time.Duration
	// Logger receives the service's log; nil discards it.
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	if c.SwarmDir == "" || c.Keyring == nil || c.Mesh == nil || c.Underlay == nil {
		return c, errors.New("key service: SwarmDir, Keyring, Mesh and Underlay are required")
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.RotateEvery == 0 {
		c.RotateEvery = 24 * time.Hour
	}
	if c.Spread <= 0 {
		c.Spread = time.Minute
	}
	if c.SyncEvery <= 0 {
		c.SyncEvery = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// authTTL is how long an address that proved membership stays
// authenticated without proving it again.
const authTTL = 10 * time.Minute

// maxConns bounds the connections served at once: a handshake costs CPU,
// and anyone may start one.
const maxConns = 16

// Service hands out and rotates the mesh's keyring over mutual TLS. Its
// methods are safe for concurrent use.
type Service struct {
	cfg Config
	log *slog.Logger
	ids *identities

	rotate chan chan rotated // requests to make a key now
	wake   chan struct{}     // capacity 1: settle and report now
	sem    chan struct{}     // connections being served

	// mu serialises read-merge-write of the keyring and guards the fields
	// below. Never held across the network.
	mu        sync.Mutex
	nodes     map[string]bool // the swarm's nodes, as a manager's engine lists them
	nodeLeft  bool            // a node left since the last key was made
	lastError string          // the last state logged, to log each change once

	// authMu guards the fields below.
	authMu  sync.Mutex
	authed  map[netip.Addr]time.Time
	changed chan struct{} // capacity 1
}

type rotated struct {
	id  mesh.KeyID
	err error
}

// New returns a service; Run serves it.
func New(cfg Config) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg:     cfg,
		log:     cfg.Logger,
		ids:     &identities{dir: cfg.SwarmDir},
		rotate:  make(chan chan rotated),
		wake:    make(chan struct{}, 1),
		sem:     make(chan struct{}, maxConns),
		authed:  map[netip.Addr]time.Time{},
		changed: make(chan struct{}, 1),
	}, nil
}

// Managing reports whether the service holds a usable swarm identity, and
// so manages the keyring (manual key steps would fight it).
func (s *Service) Managing() bool {
	_, err := s.ids.Current()
	return err == nil
}

// Rotate makes a new key now (on a manager) and returns its ID; it spreads
// and becomes the primary as any rotation does.
func (s *Service) Rotate(ctx context.Context) (mesh.KeyID, error) {
	reply := make(chan rotated, 1)
	select {
	case s.rotate <- reply:
	case <-ctx.Done():
		return mesh.KeyID{}, ctx.Err()
	}
	select {
	case r := <-reply:
		return r.id, r.err
	case <-ctx.Done():
		return mesh.KeyID{}, ctx.Err()
	}
}

// Authenticated returns the addresses that proved swarm membership to
// this node, or that this node verified as managers, within the last
// authTTL.
func (s *Service) Authenticated() []netip.Addr {
	now := s.cfg.Now()
	s.authMu.Lock()
	defer s.authMu.Unlock()
	var out []netip.Addr
	for a, at := range s.authed {
		if now.Sub(at) < authTTL {
			out = append(out, a)
		} else {
			delete(s.authed, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Changed receives a value, coalesced, when an address is authenticated
// for the first time (one consumer).
func (s *Service) Changed() <-chan struct{} { return s.changed }

func (s *Service) authenticated(a netip.Addr) {
	a = a.Unmap()
	s.authMu.Lock()
	_, known := s.authed[a]
	s.authed[a] = s.cfg.Now()
	s.authMu.Unlock()
	if !known {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// Run serves and syncs until ctx ends.
func (s *Service) Run(ctx context.Context) {
	watch := s.cfg.Mesh.Watch(reportsTable, true)
	defer watch.Close()
	var srv *server
	defer func() {
		if srv != nil {
			srv.close()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastSync time.Time
	for {
		var reply chan rotated
		syncNow := false
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			syncNow = true
		case <-s.wake:
		case <-watch.Ready():
			// Another member holds a key this one lacks: fetch it now, or
			// as soon as a second has passed since the last round.
			if s.lacksReported(watch.Take()) {
				if since := time.Since(lastSync); since > time.Second {
					syncNow = true
				} else {
					timer.Reset(time.Second - since)
				}
			}
		case reply = <-s.rotate:
		}
		id, err := s.ids.Current()
		if err != nil {
			s.note(fmt.Sprintf("waiting for this node's swarm certificates (%v); the mesh stays off until a manager hands out its key", err))
			if srv != nil {
				srv.close()
				srv = nil
			}
			if reply != nil {
				reply <- rotated{err: fmt.Errorf("this host has no usable swarm identity: %w", err)}
			}
			timer.Reset(time.Second)
			continue
		}
		srv = s.ensureServing(srv, id)
		if syncNow {
			lastSync = time.Now()
			s.syncRound(ctx, id)
			if id.Role == RoleManager {
				s.checkNodes(ctx)
			}
		}
		if id.Role == RoleManager {
			s.maybeGenerate(ctx, id, reply, syncNow)
		} else if reply != nil {
			reply <- rotated{err: errors.New("only a swarm manager makes keys: run weft key rotate on a manager")}
		}
		s.settle()
		if syncNow {
			timer.Reset(s.nextSync())
		}
	}
}

// nextSync is the time until the next round: a second while there is no
// key, SyncEvery (jittered by a tenth) once there is.
func (s *Service) nextSync() time.Duration {
	if s.cfg.Keyring.Empty() {
		return time.Second
	}
	j := time.Duration(rand.Int64N(int64(s.cfg.SyncEvery/10) + 1))
	return s.cfg.SyncEvery - s.cfg.SyncEvery/20 + j
}

// note logs a state of the service once, at each change.
func (s *Service) note(msg string) {
	s.mu.Lock()
	changed := msg != s.lastError
	s.lastError = msg
	s.mu.Unlock()
	if changed && msg != "" {
		s.log.Warn(msg)
	}
}

// ensureServing listens on a manager, and stops listening on a worker.
func (s *Service) ensureServing(srv *server, id *Identity) *server {
	switch {
	case id.Role == RoleManager && srv == nil:
		srv, err := s.listen()
		if err != nil {
			s.note(fmt.Sprintf("key service cannot listen on port %d: %v", s.cfg.Port, err))
			return nil
		}
		s.log.Info("key service serving", "port", s.cfg.Port, "node", id.Node, "cluster", id.Cluster)
		return srv
	case id.Role != RoleManager && srv != nil:
		srv.close()
		s.log.Info("key service stopped: this node is no longer a manager")
		return nil
	}
	return srv
}

// syncRound compares keyrings with the managers: a manager with every
// other manager, a worker with the first manager that answers.
func (s *Service) syncRound(ctx context.Context, id *Identity) {
	local, managers := s.cfg.Underlay()
	managers = slices.DeleteFunc(slices.Clone(managers), func(a netip.Addr) bool { return a == local })
	rand.Shuffle(len(managers), func(i, j int) { managers[i], managers[j] = managers[j], managers[i] })
	var errs []error
	for _, m := range managers {
		var send *mesh.Ring
		if id.Role == RoleManager {
			r := s.cfg.Keyring.Ring()
			send = &r
		}
		start := time.Now()
		remote, peer, err := s.exchange(ctx, id, local, m, send)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
			continue
		}
		s.authenticated(m)
		s.log.Debug("keyring compared", "manager", m.String(), "node", peer.Node, "took", time.Since(start).Round(time.Microsecond), "keys", len(remote.Keys))
		if err := s.mergeIn(remote); err != nil {
			s.log.Warn("keyring from a manager not applied", "manager", m.String(), "err", err)
		}
		if id.Role != RoleManager {
			break
		}
	}
	switch {
	case s.cfg.Keyring.Empty() && id.Role != RoleManager && len(managers) == 0:
		s.note("waiting for the swarm's managers' addresses to fetch the mesh key")
	case s.cfg.Keyring.Empty() && id.Role != RoleManager:
		s.note(fmt.Sprintf("no manager handed out the mesh key yet (key service port %d), retrying: %v", s.cfg.Port, errors.Join(errs...)))
	case len(errs) > 0 && len(errs) == len(managers) && id.Role != RoleManager:
		s.note(fmt.Sprintf("no manager's key service answers (port %d); keeping the keyring: %v", s.cfg.Port, errors.Join(errs...)))
	default:
		s.note("")
		for _, err := range errs {
			s.log.Debug("key service exchange", "err", err)
		}
	}
}

// mergeIn merges a keyring received from a manager into ours.
func (s *Service) mergeIn(remote mesh.Ring) error {
	if len(remote.Keys) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cfg.Keyring.Ring()
	next := merge(cur, remote)
	if sameRing(cur, next) {
		return nil
	}
	if err := s.cfg.Keyring.SetRing(next); err != nil {
		return err
	}
	s.logRing("keyring updated from a manager", next)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// maybeGenerate makes a key on a manager: the first one when no manager
// has any (asked in the round that just ran: synced), the next when the
// newest is due for rotation, a node left, or reply asks.
func (s *Service) maybeGenerate(ctx context.Context, id *Identity, reply chan rotated, synced bool) {
	_, managers := s.cfg.Underlay()
	s.mu.Lock()
	cur := s.cfg.Keyring.Ring()
	why := ""
	switch {
	case reply != nil:
		why = "requested"
	case len(cur.Keys) == 0 && (len(managers) == 0 || !synced):
		// The engine has not told us the managers yet, or they have not
		// been asked: one of them may hold the key.
	case len(cur.Keys) == 0:
		why = "no manager has a key yet"
	case s.cfg.RotateEvery > 0 && !cur.Keys[len(cur.Keys)-1].Created.IsZero() &&
		s.cfg.Now().Sub(cur.Keys[len(cur.Keys)-1].Created) >= s.cfg.RotateEvery:
		why = "rotation due"
	case s.cfg.RotateEvery > 0 && cur.Keys[len(cur.Keys)-1].Created.IsZero():
		why = "the keyring was seeded by hand"
	case s.nodeLeftLocked():
		why = "a node left the swarm"
	}
	if why == "" {
		s.mu.Unlock()
		return
	}
	k, err := newKey(cur, id.Node, s.cfg.Now())
	if err == nil {
		next := merge(cur, mesh.Ring{Keys: []mesh.RingKey{k}, Floor: cur.Floor})
		if len(cur.Keys) == 0 {
			next.Primary = k.Secret
		}
		err = s.cfg.Keyring.SetRing(next)
		if err == nil {
			s.logRing("mesh key made ("+why+")", next)
		}
	}
	s.mu.Unlock()
	if reply != nil {
		reply <- rotated{id: k.ID, err: err}
	}
	if err != nil {
		s.log.Error("make a mesh key", "err", err)
		return
	}
	// Tell the other managers at once; the workers notice it in our report.
	s.syncRound(ctx, id)
}

// checkNodes asks a manager's engine which nodes the swarm has, and
// notes a node that left.
func (s *Service) checkNodes(ctx context.Context) {
	if s.cfg.Nodes == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ids, err := s.cfg.Nodes.NodeIDs(ctx)
	cancel()
	if err != nil {
		s.log.Debug("swarm nodes", "err", err)
		return
	}
	now := map[string]bool{}
	for _, id := range ids {
		now[id] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.nodes {
		if !now[id] {
			s.log.Warn("a node left the swarm: the mesh key is rotated so that the key it holds opens nothing", "node", id)
			s.nodeLeft = true
		}
	}
	s.nodes = now
}

// nodeLeftLocked reports, once, that a node left since the last check.
func (s *Service) nodeLeftLocked() bool {
	left := s.nodeLeft
	s.nodeLeft = false
	return left
}

// isNode reports whether the swarm lists node; true when no list is known.
func (s *Service) isNode(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes == nil || s.nodes[node]
}

// settle applies the rotation rules to the keyring, once the mesh has
// synced (before, a member's view holds only itself), and reports the
// result in the mesh.
func (s *Service) settle() {
	s.mu.Lock()
	cur := s.cfg.Keyring.Ring()
	if len(cur.Keys) == 0 {
		s.mu.Unlock()
		return
	}
	next := cur
	if s.cfg.Mesh.Synced() {
		next = settle(cur, s.reports(cur), s.cfg.Now(), s.cfg.Spread)
		if !sameRing(cur, next) {
			if err := s.cfg.Keyring.SetRing(next); err != nil {
				s.log.Error("settle the mesh keyring", "err", err)
				next = cur
			} else {
				s.logRing("mesh keyring settled", next)
			}
		}
	}
	s.mu.Unlock()
	b, _ := json.Marshal(reportOf(next))
	s.cfg.Mesh.Put(reportsTable, s.cfg.Mesh.LocalNode(), b)
}

// reports returns the reports of the members alive in the mesh, ours
// from cur.
func (s *Service) reports(cur mesh.Ring) map[string]*report {
	self := s.cfg.Mesh.LocalNode()
	out := map[string]*report{}
	for _, m := range s.cfg.Mesh.Members() {
		if m.State == mesh.StateAlive || m.State == mesh.StateSuspect {
			out[m.Name] = nil
		}
	}
	for _, e := range s.cfg.Mesh.Entries(reportsTable) {
		if _, alive := out[e.Owner]; !alive || e.Key != e.Owner {
			continue
		}
		if rep, err := decodeReport(e.Value); err == nil {
			out[e.Owner] = &rep
		}
	}
	mine := reportOf(cur)
	out[self] = &mine
	return out
}

// lacksReported reports whether another member's report, among evs,
// names a key this keyring lacks.
func (s *Service) lacksReported(evs []mesh.Event) bool {
	have := map[string]bool{}
	for _, fp := range s.cfg.Keyring.List() {
		have[fp] = true
	}
	for _, ev := range evs {
		if ev.Kind != mesh.EntryPut || ev.Entry.Owner == s.cfg.Mesh.LocalNode() {
			continue
		}
		rep, err := decodeReport(ev.Entry.Value)
		if err != nil {
			continue
		}
		for _, fp := range rep.Held {
			if !have[fp] {
				return true
			}
		}
	}
	return false
}

func (s *Service) logRing(msg string, r mesh.Ring) {
	var keys []string
	for _, k := range r.Keys {
		keys = append(keys, fmt.Sprintf("%s=%s", k.ID, mesh.Fingerprint(k.Secret)))
	}
	s.log.Info(msg, "primary", mesh.Fingerprint(r.Primary), "keys", keys, "floor", r.Floor.String())
}

// exchange runs one request against a manager's key service: dial from
// local, mutual TLS, send (a manager's keyring, or nothing), read back
// the manager's keyring.
func (s *Service) exchange(ctx context.Context, id *Identity, local, server netip.Addr, send *mesh.Ring) (mesh.Ring, Peer, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(server, uint16(s.cfg.Port)).String())
	if err != nil {
		return mesh.Ring{}, Peer{}, err
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	tc := tls.Client(raw, id.clientConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		return mesh.Ring{}, Peer{}, fmt.Errorf("TLS handshake: %w", err)
	}
	peer := peerOf(tc.ConnectionState().PeerCertificates) // verified by the handshake
	req := request{V: protocol}
	if send != nil {
		req.Ring = encodeRing(*send)
	}
	if err := writeMessage(tc, req); err != nil {
		return mesh.Ring{}, peer, err
	}
	var resp response
	if err := readMessage(tc, &resp); err != nil {
		return mesh.Ring{}, peer, err
	}
	if resp.Err != "" {
		return mesh.Ring{}, peer, fmt.Errorf("refused: %s", resp.Err)
	}
	if resp.Ring == nil {
		return mesh.Ring{}, peer, errors.New("no keyring in the answer")
	}
	r, err := resp.Ring.decode()
	return r, peer, err
}
