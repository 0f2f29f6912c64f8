// Package ipam is weft's IPAM driver for networks whose addresses do not
// come from swarm (`--ipam-driver weft-local:latest` in local mode): every
// host of the mesh allocates from the same pools, with no central store,
// and no two live containers ever get one address.
//
// Design notes:
//
//   - Blocks. A pool (the network's subnet, the same on every host) is cut
//     into blocks (/26 unless set). A host hands out addresses only inside
//     blocks it has claimed. The pool's first address is the gateway on
//     every host; it, the network and the broadcast address are never
//     handed out.
//   - Claims need a majority. Claims and votes are entries of a replicated
//     table (the mesh's "ipam" table), each written by its own host. Every
//     host votes for at most one claim per address range and keeps its
//     votes across restarts; a claim holds once a majority of the voters
//     vote for it, the voters being max(ExpectedHosts, hosts known), so two
//     claims on one block never both hold: any two majorities share a
//     voter. Claims that race for one block are settled deterministically:
//     a claim that does not hold yet yields to one with more votes, or as
//     many and a smaller host name; its voters move on.
//   - Windows. A holder hands out only the first Limit addresses of its
//     block, and raises Limit only once a majority has seen the raise (each
//     vote carries the Limit its voter saw). Every address a host may use is
//     therefore known to every majority. Cut off from the majority, a host
//     goes on allocating inside its acknowledged windows, and only there.
//   - Reclaim. A host that sees another one dead (not a live mesh member)
//     for Reclaim says so in a dead record; when a majority has, the dead
//     host is removed: its claims are void, its blocks free for others, but
//     its windows stay quarantined (a new holder of such a block never hands
//     out an address below the largest Limit the majority saw). A minority
//     removes no one.
//   - Partitions. Hence no two live containers share an address, whatever
//     the partition and however long: a minority claims nothing and
//     allocates only in windows that no one else may use; a majority takes
//     back a cut-off host's blocks but not its windows. A removed host that
//     comes back learns it from the others' dead records, starts a new
//     epoch, claims its old blocks again where they are still free, and
//     lists its addresses in blocks others now hold as foreign addresses in
//     its host entry; then the others lift its quarantine. The price: the
//     windows of a host gone for good stay quarantined (not its blocks).
//   - Specific addresses (`--ip`): in a block of this host, allocated if
//     free; in a free block, the block is claimed first; in another host's
//     block, this host lists it as a want and the holder lends it (a grant
//     entry) or refuses. Taken, quarantined, or the holder unreachable:
//     refused with a sentence saying why.
//   - Restarts. What this host decided (pools, claims, votes, dead and
//     removed hosts, lent and foreign addresses) and its last copy of the
//     other hosts' entries (the mesh withdraws a dead host's) are kept in
//     ipam.json in the state directory. Docker replays RequestPool and
//     RequestAddress when it restarts: the gateway is always answered, and
//     an address this host held before it started is answered once, within
//     ReplayWindow; any later request for an address in use is refused.
//
// One step (stepLocked) brings the allocator up to date with the table:
// it runs on every change of the table, on a timer, and inside requests
// that wait for the others.
//
// Lock order: Allocator.mu, then the Table's own locks.
package ipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
)

// AddressSpace is the one address space weft's IPAM offers.
const AddressSpace = "weft"

// OptBlock is the IPAM option (`--ipam-opt weft.block=28`) that sets the
// prefix length of a pool's blocks.
const OptBlock = "weft.block"

// Docker's option naming the gateway request in RequestAddress.
const requestAddressType = "RequestAddressType"
const gatewayType = "com.docker.network.gateway"

// Config holds the IPAM driver's settings.
type Config struct {
	// StateDir is where the allocator's state is persisted; empty keeps it
	// in memory only.
	StateDir string
	// Logger receives the driver's log; nil discards it.
	Logger *slog.Logger
	// Table is shared with the other hosts; nil serves this host alone.
	Table Table
	// ExpectedHosts is the number of hosts the mesh is meant to have (the
	// plugin counts WEFT_PEERS and this host). A claim needs a majority of
	// max(ExpectedHosts, hosts known), so hosts started apart from each
	// other never claim alone.
	ExpectedHosts int
	// BlockBits is the prefix length of blocks (default 26), for pools
	// created without OptBlock. Pools too small for four such blocks are
	// cut into four.
	BlockBits int
	// Reclaim is how long a host must be unreachable from a majority
	// before its blocks are taken back (default 10 min).
	Reclaim time.Duration
	// Timeout bounds how long a request from Docker waits for the other
	// hosts (default 20 s; Docker gives up on a plugin after 30 s).
	Timeout time.Duration
	// ReplayWindow is how long after start an address held before the
	// start is handed out again, once, to Docker's replayed request
	// (default 2 min).
	ReplayWindow time.Duration
	// AbsentGrace is how long an entry of an alive host may be missing
	// from the table before it counts as deleted (default 10 s).
	AbsentGrace time.Duration
	// Tick is how often the allocator steps without a change (default 1 s).
	Tick time.Duration
}

// DefaultConfig returns the settings weft runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{
		BlockBits:    26,
		Reclaim:      10 * time.Minute,
		Timeout:      20 * time.Second,
		ReplayWindow: 2 * time.Minute,
		AbsentGrace:  10 * time.Second,
		Tick:         time.Second,
	}
}

// Allocator implements ipam.Ipam.
type Allocator struct {
	cfg     Config
	log     *slog.Logger
	table   Table
	self    string
	started time.Time
	kick    chan struct{}

	// mu guards the fields below.
	mu         sync.Mutex
	st         *persisted
	dirty      bool // st changed since it was saved
	cacheDirty bool // st.Cache changed since it was saved
	gen        int  // counts changes to st, so a step knows to rebuild its view
	signalled  int  // gen when progress was last closed
	v          *view
	alive      map[string]bool
	deadSince  map[string]time.Time
	absent     map[string]time.Time // owner\x00key -> first step it was missing
	wants      map[netip.Addr]*want // addresses asked of other hosts
	refused    map[netip.Addr]grantRec
	replay     map[netip.Addr]bool // held before start, not yet asked for again
	progress   chan struct{}       // closed and replaced by a step that changed something

	// pick, if set (by tests), chooses among the free blocks.
	pick func([]netip.Prefix) netip.Prefix
}

var _ ipam.Ipam = (*Allocator)(nil)

// want is an address asked of the host whose block holds it.
type want struct {
	holder string
	done   bool
	err    error
}

// New returns an allocator with its state directory loaded. Run must run
// for the allocator to follow the other hosts.
func New(cfg Config) (*Allocator, error) {
	def := DefaultConfig()
	if cfg.BlockBits == 0 {
		cfg.BlockBits = def.BlockBits
	}
	if cfg.BlockBits < 8 || cfg.BlockBits > 30 {
		return nil, fmt.Errorf("IPAM block size /%d: want /8 to /30", cfg.BlockBits)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.Reclaim, def.Reclaim}, {&cfg.Timeout, def.Timeout}, {&cfg.ReplayWindow, def.ReplayWindow}, {&cfg.AbsentGrace, def.AbsentGrace}, {&cfg.Tick, def.Tick}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	table := cfg.Table
	if table == nil {
		table = newLoneTable()
	}
	a := &Allocator{
		cfg: cfg, log: log, table: table, self: table.Self(), started: time.Now(),
		kick:      make(chan struct{}, 1),
		alive:     map[string]bool{},
		deadSince: map[string]time.Time{},
		absent:    map[string]time.Time{},
		wants:     map[netip.Addr]*want{},
		refused:   map[netip.Addr]grantRec{},
		replay:    map[netip.Addr]bool{},
		progress:  make(chan struct{}),
	}
	if a.self == "" || strings.Contains(a.self, "/") {
		return nil, fmt.Errorf("IPAM host name %q: want a name without /", a.self)
	}
	st, err := load(cfg.StateDir, a.self)
	if err != nil {
		log.Error("IPAM state unreadable; starting from what the other hosts publish", "err", err)
	}
	if st.Node != a.self {
		log.Warn("IPAM state was written under another host name; starting this host's claims afresh", "was", st.Node, "now", a.self)
		fresh := newPersisted(a.self)
		fresh.Pools, fresh.Cache, fresh.Removed = st.Pools, st.Cache, st.Removed
		st = fresh
	}
	a.st = st
	for _, p := range st.Pools {
		p.Refs = 0 // Docker's replayed RequestPool counts them again
	}
	for _, c := range st.Claims {
		for off := range size(c.Block) {
			if x := at(c.Block, off); c.Used.has(off) && st.Lent[x] == "" {
				a.replay[x] = true
			}
		}
	}
	for x := range st.Foreign {
		a.replay[x] = true
	}
	return a, nil
}

// Run follows the table until ctx ends: a step on every change, on every
// request that needs one, and every Tick.
func (a *Allocator) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.Tick)
	defer t.Stop()
	for {
		a.mu.Lock()
		changed := a.stepLocked(time.Now())
		a.mu.Unlock()
		if changed {
			a.trigger() // one more round settles what this one wrote
		}
		select {
		case <-ctx.Done():
			return
		case <-a.table.Changes():
		case <-a.kick:
		case <-t.C:
		}
	}
}

func (a *Allocator) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Allocator) touch() {
	a.dirty = true
	a.gen++
}

func (a *Allocator) saveLocked() {
	if err := a.st.save(a.cfg.StateDir); err != nil {
		a.log.Error("persist IPAM state", "err", err)
		return
	}
	a.dirty, a.cacheDirty = false, false
}

// waitLocked lets the other hosts make progress: it releases a.mu until a
// step changes something or the deadline passes, and reports whether time
// is left.
func (a *Allocator) waitLocked(deadline time.Time) bool {
	ch := a.progress
	a.trigger()
	a.mu.Unlock()
	t := time.NewTimer(max(time.Until(deadline), 0))
	select {
	case <-ch:
	case <-t.C:
	}
	t.Stop()
	a.mu.Lock()
	return time.Now().Before(deadline)
}

// GetCapabilities reports that weft does not need MACs to allocate.
func (a *Allocator) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{}, nil
}

// GetDefaultAddressSpaces names weft's address space.
func (a *Allocator) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: AddressSpace, GlobalDefaultAddressSpace: AddressSpace}, nil
}

// defaultBits is the block size of a pool created without OptBlock: the
// configured one, or smaller so that the pool has four blocks.
func defaultBits(pool netip.Prefix, bits int) int {
	return max(bits, min(pool.Bits()+2, 30))
}

// RequestPool registers the subnet the user named. Every host of a
// network must create it with the same subnet (and block size).
func (a *Allocator) RequestPool(req *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if req.V6 {
		return a.requestPool6(req)
	}
	if req.Pool == "" {
		return nil, errors.New("weft IPAM: name the network's subnet with --subnet, the same on every host; weft does not pick one")
	}
	if req.SubPool != "" {
		return nil, errors.New("weft IPAM: --ip-range is not supported yet")
	}
	pfx, err := netip.ParsePrefix(req.Pool)
	if err != nil || !pfx.Addr().Is4() {
		return nil, fmt.Errorf("weft IPAM: subnet %q is not an IPv4 CIDR", req.Pool)
	}
	pfx = pfx.Masked()
	if pfx.Bits() > 30 {
		return nil, fmt.Errorf("weft IPAM: subnet %s is too small; use /30 or larger", pfx)
	}
	bits := defaultBits(pfx, a.cfg.BlockBits)
	explicit := false
	for _, k := range slices.Sorted(maps.Keys(req.Options)) {
		v := req.Options[k]
		switch {
		case k == OptBlock:
			n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(v), "/"))
			if err != nil || n < pfx.Bits() || n > 30 || n-pfx.Bits() > 16 {
				return nil, fmt.Errorf("weft IPAM: option %s=%q: want a prefix length from %d to 30 (at most 65536 blocks)", OptBlock, v, pfx.Bits())
			}
			bits, explicit = n, true
		case strings.HasPrefix(k, "com.docker."):
		default:
			return nil, fmt.Errorf("weft IPAM: unknown option %q (known: %s)", k, OptBlock)
		}
	}
	if bits-pfx.Bits() > 16 {
		bits = pfx.Bits() + 16
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	id := pfx.String()
	for oid, p := range a.st.Pools {
		if oid != id && p.Prefix.Overlaps(pfx) {
			return nil, fmt.Errorf("weft IPAM: subnet %s overlaps %s, already in use", pfx, p.Prefix)
		}
	}
	p, ok := a.st.Pools[id]
	if ok && explicit && p.Bits != bits {
		return nil, fmt.Errorf("weft IPAM: subnet %s is in use here with /%d blocks, not /%d", pfx, p.Bits, bits)
	}
	if !ok {
		p = &pool{Prefix: pfx, Bits: bits}
		a.st.Pools[id] = p
	}
	p.Refs++
	a.touch()
	a.saveLocked()
	if a.dirty {
		return nil, errors.New("weft IPAM: cannot save its state; see the plugin's log")
	}
	a.log.Info("pool requested", "pool", id, "block_bits", p.Bits)
	return &ipam.RequestPoolResponse{PoolID: id, Pool: id}, nil
}

// ReleasePool drops one reference to a pool; the last one frees it and
// gives up this host's empty blocks of it.
func (a *Allocator) ReleasePool(req *ipam.ReleasePoolRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p6, ok := a.st.Pools6[req.PoolID]; ok {
		a.releasePool6(req.PoolID, p6)
		return nil
	}
	p, ok := a.st.Pools[req.PoolID]
	if !ok {
		return nil
	}
	p.Refs--
	if p.Refs <= 0 {
		delete(a.st.Pools, req.PoolID)
		for _, c := range a.st.Claims {
			if c.Pool == req.PoolID && !c.Released && c.Used.count() == 0 {
				c.Released = true
				if vr := a.st.Votes[c.Block.String()]; vr != nil && vr.For == a.self {
					delete(a.st.Votes, c.Block.String())
				}
			}
		}
		a.log.Info("pool released", "pool", req.PoolID)
	}
	a.touch()
	a.saveLocked()
	a.trigger()
	return nil
}

// RequestAddress hands out the gateway (the pool's first address), the
// address asked for, or a free one of this host's blocks, claiming a
// block first if it has to.
func (a *Allocator) RequestAddress(req *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p6, ok := a.st.Pools6[req.PoolID]; ok {
		return a.requestAddress6(p6, req)
	}
	p, ok := a.st.Pools[req.PoolID]
	if !ok {
		return nil, fmt.Errorf("weft IPAM: pool %q is not known on this host", req.PoolID)
	}
	var x netip.Addr
	if req.Address != "" {
		ad, err := netip.ParseAddr(req.Address)
		if err != nil || !p.Prefix.Contains(ad) {
			return nil, fmt.Errorf("weft IPAM: address %q is not in pool %s", req.Address, p.Prefix)
		}
		x = ad
	}
	reply := func(ad netip.Addr) (*ipam.RequestAddressResponse, error) {
		return &ipam.RequestAddressResponse{Address: netip.PrefixFrom(ad, p.Prefix.Bits()).String()}, nil
	}
	if req.Options[requestAddressType] == gatewayType {
		gw := gatewayOf(p.Prefix)
		if x.IsValid() && x != gw {
			return nil, fmt.Errorf("weft IPAM: the gateway of %s is %s on every host; --gateway %s is not supported", p.Prefix, gw, x)
		}
		return reply(gw)
	}
	var (
		ad  netip.Addr
		err error
	)
	if x.IsValid() {
		ad, err = a.requestSpecificLocked(p, x)
	} else {
		ad, err = a.requestAnyLocked(p)
	}
	if err != nil {
		return nil, err
	}
	a.saveLocked()
	if a.dirty {
		a.releaseLocked(ad)
		return nil, errors.New("weft IPAM: cannot save its state; see the plugin's log")
	}
	a.trigger()
	a.log.Debug("address handed out", "pool", p.Prefix, "address", ad)
	return reply(ad)
}

// requestAnyLocked allocates the lowest free address of this host's
// windows, growing a window or claiming a block when they are full.
func (a *Allocator) requestAnyLocked(p *pool) (netip.Addr, error) {
	deadline := time.Now().Add(a.cfg.Timeout)
	for {
		changed := a.stepLocked(time.Now())
		grew := false
		if !a.st.Restoring {
			if x, ok := a.allocLocked(p); ok {
				return x, nil
			}
			var err error
			if grew, err = a.growLocked(p, netip.Addr{}); err != nil {
				return netip.Addr{}, err
			}
		}
		if (grew || changed) && time.Now().Before(deadline) {
			continue // settle locally before waiting for the others
		}
		if !a.waitLocked(deadline) {
			return netip.Addr{}, a.stuckErr(p)
		}
	}
}

// allocLocked takes the lowest free address inside this host's
// acknowledged windows of p.
func (a *Allocator) allocLocked(p *pool) (netip.Addr, bool) {
	id := p.Prefix.String()
	for _, c := range a.sortedClaims() {
		if c.Pool != id || c.Released || c.Acked == 0 {
			continue
		}
		for off := range min(c.Limit, c.Acked) {
			if a.free(a.v, p.Prefix, c, off) {
				c.Used.set(off)
				a.touch()
				return at(c.Block, off), true
			}
		}
	}
	return netip.Addr{}, false
}

// sortedClaims returns this host's claims in address order.
func (a *Allocator) sortedClaims() []*claim {
	out := slices.Collect(maps.Values(a.st.Claims))
	slices.SortFunc(out, func(x, y *claim) int { return cmp.Compare(u32(x.Block.Addr()), u32(y.Block.Addr())) })
	return out
}

// growLocked asks for more room in p: a larger window of a block this host
// holds, or a new block (the one holding x, if x is valid). It reports
// whether it asked for something new; false means a request is already
// under way.
func (a *Allocator) growLocked(p *pool, x netip.Addr) (bool, error) {
	id := p.Prefix.String()
	for _, c := range a.st.Claims {
		if c.Pool == id && !c.Released && c.Acked == 0 {
			return false, nil // a claim is under way
		}
	}
	if !x.IsValid() {
		for _, c := range a.st.Claims {
			if c.Pool == id && !c.Released && c.Limit > c.Acked {
				return false, nil // a raise is under way
			}
		}
		for _, c := range a.sortedClaims() {
			if c.Pool == id && !c.Released && c.Limit < size(c.Block) {
				c.Limit = min(size(c.Block), c.Limit+chunkOf(c.Block))
				a.touch()
				return true, nil
			}
		}
	}
	var b netip.Prefix
	if x.IsValid() {
		b = blockOf(x, p.Bits)
		if a.busy(a.v, b, true) {
			return false, nil
		}
	} else {
		free := a.freeBlocks(p)
		if len(free) == 0 {
			return false, fmt.Errorf("weft IPAM: pool %s is full: every /%d block is held by a host and this host's are full; use a larger subnet", p.Prefix, p.Bits)
		}
		b = free[0]
		if a.pick != nil {
			b = a.pick(free)
		}
	}
	limit := chunkOf(b)
	if x.IsValid() {
		limit = max(limit, roundUp(offset(b, x)+1, chunkOf(b)))
	}
	c := &claim{Block: b, claimRec: claimRec{Pool: id, Epoch: a.st.Epoch, Limit: min(limit, size(b)), Used: newBitmap(size(b)), Quar: a.quarantineFor(b)}}
	a.st.Claims[b.String()] = c
	a.st.Votes[b.String()] = &voteRec{For: a.self, Epoch: a.st.Epoch, Seen: c.Limit, Voter: a.st.Epoch}
	a.touch()
	a.log.Debug("claiming a block", "block", b, "pool", id, "quarantined", len(c.Quar))
	return true, nil
}

// freeBlocks lists the blocks of p no one holds or is claiming, those
// without quarantined windows first, each group starting at a place of
// its own for every host so that hosts claiming at once rarely collide.
func (a *Allocator) freeBlocks(p *pool) []netip.Prefix {
	all := blocks(p.Prefix, p.Bits)
	h := fnv.New32a()
	h.Write([]byte(a.self))
	shift := int(h.Sum32() % uint32(len(all)))
	var clean, quarantined []netip.Prefix
	for i := range all {
		b := all[(i+shift)%len(all)]
		if a.busy(a.v, b, true) {
			continue
		}
		if len(a.quarantineFor(b)) > 0 {
			quarantined = append(quarantined, b)
		} else {
			clean = append(clean, b)
		}
	}
	return append(clean, quarantined...)
}

// requestSpecificLocked allocates x if it is free anywhere.
func (a *Allocator) requestSpecificLocked(p *pool, x netip.Addr) (netip.Addr, error) {
	if reserved(p.Prefix, x) {
		return netip.Addr{}, fmt.Errorf("weft IPAM: address %s is the network, gateway or broadcast address of %s", x, p.Prefix)
	}
	if a.replay[x] && time.Since(a.started) < a.cfg.ReplayWindow {
		// Docker's replay after a restart of the address it had.
		delete(a.replay, x)
		return x, nil
	}
	deadline := time.Now().Add(a.cfg.Timeout)
	var w *want // this request's, once it asks the holder
	defer func() {
		if w != nil && !w.done && a.wants[x] == w {
			delete(a.wants, x)
			a.touch()
		}
	}()
	for {
		changed := a.stepLocked(time.Now())
		if a.st.Restoring {
			if !a.waitLocked(deadline) {
				return netip.Addr{}, a.stuckErr(p)
			}
			continue
		}
		if w != nil && w.done {
			if w.err != nil {
				return netip.Addr{}, w.err
			}
			return x, nil
		}
		if _, ok := a.st.Foreign[x]; ok {
			return netip.Addr{}, refusedErr(x, "it is in use on host "+a.self)
		}
		if c := a.ownClaim(x); c != nil {
			off := offset(c.Block, x)
			if why := a.unavailable(a.v, p.Prefix, c, x, ""); why != "" {
				return netip.Addr{}, refusedErr(x, why)
			}
			switch {
			case c.Acked == 0:
			case off < min(c.Limit, c.Acked):
				c.Used.set(off)
				a.touch()
				return x, nil
			case c.Limit <= off:
				c.Limit = min(size(c.Block), roundUp(off+1, chunkOf(c.Block)))
				a.touch()
				continue
			}
		} else if holder := a.v.holderOf(x); holder != "" {
			if w == nil {
				if a.wants[x] != nil {
					return netip.Addr{}, refusedErr(x, "another container on this host is asking for it")
				}
				var err error
				if w, err = a.askLocked(x, holder); err != nil {
					return netip.Addr{}, err
				}
			}
		} else if q := a.quarantinedBy(x); q != "" {
			return netip.Addr{}, refusedErr(x, "it may still be in use on host "+q+", which was removed while unreachable")
		} else {
			grew, err := a.growLocked(p, x)
			if err != nil {
				return netip.Addr{}, err
			}
			if grew && time.Now().Before(deadline) {
				continue
			}
		}
		if changed && time.Now().Before(deadline) {
			continue
		}
		if !a.waitLocked(deadline) {
			if w != nil {
				return netip.Addr{}, unansweredErr(x, w.holder)
			}
			return netip.Addr{}, a.stuckErr(p)
		}
	}
}

// askLocked asks the holder of x's block to lend it, unless it is known to
// be taken or the holder cannot answer.
func (a *Allocator) askLocked(x netip.Addr, holder string) (*want, error) {
	for _, c := range a.v.claims {
		if c.owner != holder || !c.block.Contains(x) {
			continue
		}
		if c.Used.has(offset(c.block, x)) {
			return nil, refusedErr(x, "it is in use on host "+holder)
		}
		for _, q := range c.Quar {
			if q.contains(x) {
				return nil, refusedErr(x, "it may still be in use on host "+q.Host+", which was removed while unreachable")
			}
		}
	}
	if who := a.v.taken[x]; who != "" {
		return nil, refusedErr(x, "it is in use on host "+who)
	}
	if !a.alive[holder] {
		return nil, unansweredErr(x, holder)
	}
	w := &want{holder: holder}
	a.wants[x] = w
	a.touch()
	return w, nil
}

// ownClaim returns this host's claim, held or under way, on x's block.
func (a *Allocator) ownClaim(x netip.Addr) *claim {
	for _, c := range a.st.Claims {
		if !c.Released && c.Block.Contains(x) {
			return c
		}
	}
	return nil
}

// quarantinedBy names the removed host whose quarantined window holds x.
func (a *Allocator) quarantinedBy(x netip.Addr) string {
	for host, r := range a.st.Removed {
		if r.Lifted || host == a.self {
			continue
		}
		for _, w := range r.Windows {
			if w.contains(x) {
				return host
			}
		}
	}
	return ""
}

// stuckErr explains why no address could be had in time.
func (a *Allocator) stuckErr(p *pool) error {
	v := a.v
	if a.st.Restoring {
		return errors.New("weft IPAM: this host is re-homing its addresses after the other hosts removed it; try again shortly")
	}
	if up := v.aliveActive(); up < v.q {
		return fmt.Errorf("weft IPAM: this host's blocks of %s are full, and more room needs a majority of the hosts (%d of %d) but only %d are reachable", p.Prefix, v.q, v.n, up)
	}
	return fmt.Errorf("weft IPAM: the other hosts did not acknowledge a claim in %s within %s; try again", p.Prefix, a.cfg.Timeout)
}

func refusedErr(x netip.Addr, why string) error {
	return fmt.Errorf("weft IPAM: address %s is not free: %s", x, why)
}

func unansweredErr(x netip.Addr, holder string) error {
	return fmt.Errorf("weft IPAM: address %s is in a block of host %s, which did not answer; it cannot lend it now", x, holder)
}

// ReleaseAddress returns an address. Releasing an address that is free,
// or the gateway, is not an error.
func (a *Allocator) ReleaseAddress(req *ipam.ReleaseAddressRequest) error {
	x, err := netip.ParseAddr(req.Address)
	if err != nil {
		if pfx, perr := netip.ParsePrefix(req.Address); perr == nil {
			x = pfx.Addr()
		} else {
			return nil
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p6, ok := a.st.Pools6[req.PoolID]; ok {
		a.releaseAddress6(p6, x)
		return nil
	}
	if p := a.st.Pools[req.PoolID]; p != nil && x == gatewayOf(p.Prefix) {
		return nil
	}
	a.releaseLocked(x)
	a.saveLocked()
	a.trigger()
	return nil
}

func (a *Allocator) releaseLocked(x netip.Addr) {
	delete(a.replay, x)
	if _, ok := a.st.Foreign[x]; ok {
		delete(a.st.Foreign, x)
		a.touch()
		return
	}
	for _, c := range a.st.Claims {
		if c.Block.Contains(x) && a.st.Lent[x] == "" && c.Used.has(offset(c.Block, x)) {
			c.Used.clear(offset(c.Block, x))
			a.touch()
		}
	}
	for _, c := range a.st.Old {
		if c.Block.Contains(x) && a.st.Lent[x] == "" && c.Used.has(offset(c.Block, x)) {
			c.Used.clear(offset(c.Block, x))
			a.touch()
		}
	}
}
