package mesh

// This file owns the rules of the replicated table and of membership:
// which version of a key wins, tombstones and reaping, owner repair, which
// entries are visible, digests and deltas, and the life of a member
// (alive, down while its host answers, dead). It does no locking and no
// I/O (Mesh.mu guards it; liveness.go runs the probes it asks for), so
// each rule is tested on its own (state_test.go). Every change of what is
// visible is reported to the watchers where it happens (store, memberUp,
// memberFailed, memberDown, memberLeaving).

import (
	"bytes"
	"math"
	"math/bits"
	"sort"
	"strings"
	"time"
)

// state is the replicated table plus what the mesh knows of its members.
// It does no locking and no I/O: Mesh.mu guards it, and every method assumes
// the caller holds that lock. Keeping the rules here, away from memberlist,
// lets them be tested one by one.
type state struct {
	self string
	ttl  time.Duration // tombstone lifetime
	// orphanTTL is how long entries of an owner never seen alive are kept.
	orphanTTL time.Duration
	// graceUntil: until then, stale copies of our own entries that we do not
	// hold are remembered in pending instead of being deleted at once, to
	// give a restarted caller time to put its entries back.
	graceUntil time.Time

	clock uint64

	tables  map[string]map[string]*record // table -> key -> newest version
	owners  map[string]*ownerSet          // owner -> its entries
	tombs   map[*record]struct{}          // every tombstone, for reaping
	pending map[tkey]uint64               // own stale keys seen in grace -> their clock
	members map[string]*member            // by node name, self included
	alive   int                           // members alive, self included
	names   map[string]string             // interned table and owner names

	// lim bounds what one member can make the others hold (see admit).
	lim limits
	// strangers counts the owners held that are not in members.
	strangers int

	// watch receives every change of what Entries and Members show, at the
	// point where it happens (see watch.go); nil: nobody listens.
	watch *watchers
}

type tkey struct{ table, key string }

// limits bounds what a member can make the others hold. Every member
// holds the same gossip key, so the mesh cannot tell who wrote an entry:
// a member can write under any owner's name. These limits bound what such
// a writer costs; the owner's repair undoes what it writes under a live
// owner's name, and the consumers check what an entry says.
type limits struct {
	// perTable is how many entries (tombstones included) an owner may have
	// in one table; 0: no limit.
	perTable int
	// bytes bounds the keys and values an owner may have, all tables
	// together; 0: no limit.
	bytes int
	// strangers is how many owners that are not known members may have
	// entries held (hidden until they are alive); 0: no limit.
	strangers int
	// keyOwner names the owner a key of table belongs to (Config.KeyOwner).
	keyOwner func(table, key string) (owner string, ok bool)
}

// maxClockLead is how far ahead of this member's clock a received entry's
// clock may be. A Lamport clock advances by one per write of any member,
// so a lead of 2^40 is a trillion writes: only a forger's entry is that
// far ahead. Without the bound one entry with a clock of 2^64-1 would win
// its key for ever and stop every member's clock.
const maxClockLead = 1 << 40

// refusal says why a received entry was not taken in.
type refusal uint8

const (
	refusedNone  refusal = iota
	refusedClock         // clock more than maxClockLead ahead
	refusedKey           // the key names another owner (Config.KeyOwner)
	refusedQuota         // over its owner's limits
)

func (r refusal) String() string {
	switch r {
	case refusedClock:
		return "clock too far ahead"
	case refusedKey:
		return "key names another owner"
	case refusedQuota:
		return "owner over its quota"
	}
	return ""
}

// record is the newest version of one (table, key) that this node holds.
type record struct {
	Entry
	hash   uint64    // this version's share of its owner's digest hash
	reapAt time.Time // tombstones only
	idx    int       // position in its owner's ownerSet.recs
}

// ownerSet holds the entries of one owner and their digest, kept up to date
// incrementally except for maxClock, which is recomputed lazily when an
// entry leaves the set. recs is in no order: a record leaves it by
// swapping places with the last one (record.idx keeps each one's place).
type ownerSet struct {
	recs        []*record
	perTable    map[string]int // entries per table
	bytes       int            // keys and values
	hash        uint64
	maxClock    uint64
	maxStale    bool
	hiddenSince time.Time // set while the owner is not an alive member
}

// member is what the mesh knows of one node.
type member struct {
	Member
	port  uint16
	since time.Time // last state change
	// returned is set when a member we had seen dead or gone is alive again,
	// so anti-entropy syncs with it at once.
	returned bool
	// leaving is set by the member's leave notice: when it goes, it left.
	leaving bool
	// While the member is down: when it went down (which also names this
	// spell of it, for the probes' answers), whether a probe of its host
	// is running, and when the last one started.
	downSince time.Time
	probing   bool
	probedAt  time.Time
}

// Member states as reported by Members.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	// StateDown: memberlist found the member dead (no goodbye), but its
	// host still answers (Config.HostProbe): weft is down there (disabled,
	// restarting, being upgraded) while its kernel entries and containers
	// carry traffic on. Its entries stay visible for Config.DownGrace, or
	// until its host stops answering; then it is dead.
	StateDown = "down"
	StateDead = "dead"
	StateLeft = "left"
)

// isAlive reports whether a member state counts as alive: it gossips.
func isAlive(st string) bool { return st == StateAlive || st == StateSuspect }

func newState(self string, ttl time.Duration, now time.Time, grace time.Duration) *state {
	s := &state{
		self:       self,
		ttl:        ttl,
		orphanTTL:  ttl,
		graceUntil: now.Add(grace),
		tables:     make(map[string]map[string]*record),
		owners:     make(map[string]*ownerSet),
		tombs:      make(map[*record]struct{}),
		pending:    make(map[tkey]uint64),
		members:    make(map[string]*member),
		names:      make(map[string]string),
	}
	return s
}

// intern returns a shared string for a table or owner name, so that
// thousands of entries do not each hold a copy. v may be a view into a
// received message: what it stores is a copy.
func (s *state) intern(v string) string {
	if w, ok := s.names[v]; ok {
		return w
	}
	v = strings.Clone(v)
	s.names[v] = v
	return v
}

// supersedes reports whether a should replace b: the newer clock wins; on a
// tie the greater owner name, then a tombstone over a live entry, then the
// greater value. Every node picks the same winner whatever the order of
// arrival.
func supersedes(a, b *Entry) bool {
	if a.Clock != b.Clock {
		return a.Clock > b.Clock
	}
	if a.Owner != b.Owner {
		return a.Owner > b.Owner
	}
	if a.Deleted != b.Deleted {
		return a.Deleted
	}
	return bytes.Compare(a.Value, b.Value) > 0
}

// entryHash is the share of one version in its owner's digest: a 64-bit
// hash of its table, key, clock, tombstone flag and value, eight bytes at a
// time. It must be the same on every member, whatever the process, version
// or platform (so not hash/maphash), and it runs for every entry stored, so
// it is word-wise rather than FNV's byte by byte.
func entryHash(e *Entry) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	h = hashBytes(h, e.Table)
	h = hashBytes(h, e.Key)
	flag := uint64(0)
	if e.Deleted {
		flag = 1
	}
	h = hashWord(hashWord(h, e.Clock), flag)
	h = hashBytes(h, e.Value)
	// Final avalanche (murmur3's), so XOR-ing many hashes keeps its spread.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

func hashWord(h, w uint64) uint64 {
	w *= 0x87c37b91114253d5
	w = bits.RotateLeft64(w, 31)
	w *= 0x4cf5ad432745937f
	h ^= w
	return bits.RotateLeft64(h, 27)*5 + 0x52dce729
}

// hashBytes hashes the length, then b in little-endian words, the last
// one zero-padded.
func hashBytes[T string | []byte](h uint64, b T) uint64 {
	h = hashWord(h, uint64(len(b)))
	for len(b) >= 8 {
		h = hashWord(h, uint64(b[0])|uint64(b[1])<<8|uint64(b[2])<<16|uint64(b[3])<<24|
			uint64(b[4])<<32|uint64(b[5])<<40|uint64(b[6])<<48|uint64(b[7])<<56)
		b = b[8:]
	}
	if len(b) > 0 {
		var w uint64
		for i := len(b) - 1; i >= 0; i-- {
			w = w<<8 | uint64(b[i])
		}
		h = hashWord(h, w)
	}
	return h
}

// memberShown reports whether entries of owner may be shown: ours, and
// those of members alive, suspect or down (their hosts still carry their
// endpoints' traffic).
func (s *state) memberShown(owner string) bool {
	if owner == s.self {
		return true
	}
	m := s.members[owner]
	return m != nil && (isAlive(m.State) || m.State == StateDown)
}

// memberAlive reports whether owner is ourselves or an alive member: only
// their entries are compared and exchanged by anti-entropy. Those of a
// down member do not change while it is down; a member that finds it dead
// would refuse them at every exchange.
func (s *state) memberAlive(owner string) bool {
	if owner == s.self {
		return true
	}
	m := s.members[owner]
	return m != nil && isAlive(m.State)
}

// memberGone reports whether owner is known to be dead or to have left.
func (s *state) memberGone(owner string) bool {
	m := s.members[owner]
	return m != nil && (m.State == StateDead || m.State == StateLeft)
}

func (s *state) visible(r *record) bool {
	return r != nil && !r.Deleted && s.memberShown(r.Owner)
}

func (s *state) lookup(table, key string) *record {
	return s.tables[table][key]
}

// store makes e the version held for its key, replacing old (which may be
// nil) and keeping the indexes and digests right. It copies e's strings
// and value, which may be views into a received message.
func (s *state) store(old *record, e Entry, reapAt time.Time, now time.Time) *record {
	watched := s.watch.watching(e.Table)
	wasVisible := watched && s.visible(old)
	if old != nil {
		s.unlink(old)
	}
	e.Table = s.intern(e.Table)
	e.Owner = s.intern(e.Owner)
	if e.Deleted {
		e.Key, e.Value = strings.Clone(e.Key), nil
	} else {
		// One allocation, without pointers, for the key and the value (the
		// value is never modified in place, so the key stays immutable).
		k := len(e.Key)
		buf := make([]byte, k+len(e.Value))
		copy(buf, e.Key)
		copy(buf[k:], e.Value)
		e.Key, e.Value = viewString(buf[:k]), buf[k:len(buf):len(buf)] // never nil
	}
	r := &record{Entry: e, hash: entryHash(&e)}
	t := s.tables[e.Table]
	if t == nil {
		t = make(map[string]*record)
		s.tables[e.Table] = t
	}
	t[e.Key] = r
	set := s.owners[e.Owner]
	if set == nil {
		set = &ownerSet{perTable: make(map[string]int, 1)}
		s.owners[e.Owner] = set
		if s.members[e.Owner] == nil {
			s.strangers++
		}
	}
	set.perTable[e.Table]++
	set.bytes += len(e.Key) + len(e.Value)
	if !s.memberShown(e.Owner) && set.hiddenSince.IsZero() {
		set.hiddenSince = now
	}
	r.idx = len(set.recs)
	set.recs = append(set.recs, r)
	set.hash ^= r.hash
	if e.Clock > set.maxClock {
		set.maxClock = e.Clock
	}
	if e.Deleted {
		r.reapAt = reapAt
		s.tombs[r] = struct{}{}
	}
	switch {
	case !watched:
	case s.visible(r):
		s.watch.entry(EntryPut, &r.Entry)
	case wasVisible:
		s.watch.entry(EntryGone, &old.Entry)
	}
	return r
}

// has reports whether r is in the set.
func (set *ownerSet) has(r *record) bool {
	return r.idx < len(set.recs) && set.recs[r.idx] == r
}

// unlink removes r from every index.
func (s *state) unlink(r *record) {
	if t := s.tables[r.Table]; t != nil && t[r.Key] == r {
		delete(t, r.Key)
		if len(t) == 0 {
			delete(s.tables, r.Table)
		}
	}
	if set := s.owners[r.Owner]; set != nil {
		if set.has(r) {
			last := set.recs[len(set.recs)-1]
			set.recs[r.idx], last.idx = last, r.idx
			set.recs[len(set.recs)-1] = nil
			set.recs = set.recs[:len(set.recs)-1]
			set.hash ^= r.hash
			if set.perTable[r.Table]--; set.perTable[r.Table] <= 0 {
				delete(set.perTable, r.Table)
			}
			set.bytes -= len(r.Key) + len(r.Value)
			if r.Clock >= set.maxClock {
				set.maxStale = true
			}
			if len(set.recs) == 0 {
				delete(s.owners, r.Owner)
				if s.members[r.Owner] == nil {
					s.strangers--
				}
			}
		}
	}
	delete(s.tombs, r)
}

// tick advances the Lamport clock for a local write. It never wraps: a
// clock at 2^64-1 stays there (maxClockLead keeps received clocks from
// getting it there in fewer than 2^24 forged steps).
func (s *state) tick() uint64 {
	if s.clock < math.MaxUint64 {
		s.clock++
	}
	return s.clock
}

// admit says why a received entry must be refused before anything is
// done with it, or refusedNone: a clock absurdly ahead of ours, or a key
// that names another owner than the entry's.
func (s *state) admit(e *Entry) refusal {
	if e.Clock > s.clock && e.Clock-s.clock > maxClockLead {
		return refusedClock
	}
	return s.keyRefused(e.Table, e.Key, e.Owner)
}

// keyRefused reports refusedKey if the key of table names another owner.
func (s *state) keyRefused(table, key, owner string) refusal {
	if s.lim.keyOwner != nil {
		if o, ok := s.lim.keyOwner(table, key); ok && o != owner {
			return refusedKey
		}
	}
	return refusedNone
}

// overQuota reports whether storing e in place of old (nil if absent)
// would take e's owner over its limits: a key new to the owner beyond its
// entries in the table, any entry beyond its bytes, or an owner that is
// not a member while as many strangers are held as allowed. Replacing a
// key the owner holds never costs an entry.
func (s *state) overQuota(e *Entry, old *record) bool {
	set := s.owners[e.Owner]
	if set == nil {
		if s.lim.strangers > 0 && s.members[e.Owner] == nil && s.strangers >= s.lim.strangers {
			return true
		}
		return s.lim.bytes > 0 && len(e.Key)+len(e.Value) > s.lim.bytes
	}
	same := old != nil && old.Owner == e.Owner
	if !same && s.lim.perTable > 0 && set.perTable[e.Table] >= s.lim.perTable {
		return true
	}
	size := len(e.Key) + len(e.Value)
	if same {
		size -= len(old.Key) + len(old.Value)
	}
	return s.lim.bytes > 0 && set.bytes+size > s.lim.bytes
}

// refusePut says why a local write must be refused, or refusedNone: the
// members would refuse it (its key names another owner, or it takes this
// member over its own quota).
func (s *state) refusePut(table, key string, value []byte) refusal {
	if r := s.keyRefused(table, key, s.self); r != refusedNone {
		return r
	}
	e := Entry{Table: table, Key: key, Owner: s.self, Value: value}
	if s.overQuota(&e, s.lookup(table, key)) {
		return refusedQuota
	}
	return refusedNone
}

// observe advances the Lamport clock past a clock seen on the wire.
func (s *state) observe(c uint64) {
	if c > s.clock {
		s.clock = c
	}
}

// put writes a local entry. It returns the new record, or nil if the same
// value is already live under our name (so repeated puts cost nothing).
func (s *state) put(table, key string, value []byte, now time.Time) *record {
	old := s.lookup(table, key)
	if old != nil && old.Owner == s.self && !old.Deleted && bytes.Equal(old.Value, value) {
		return nil
	}
	delete(s.pending, tkey{table, key})
	e := Entry{Table: table, Key: key, Owner: s.self, Clock: s.tick(), Value: value}
	return s.store(old, e, time.Time{}, now)
}

// del tombstones a local entry. Only the owner deletes: the call does
// nothing if the key is absent, already deleted, or held under another
// owner's name.
func (s *state) del(table, key string, now time.Time) *record {
	old := s.lookup(table, key)
	if old == nil || old.Deleted || old.Owner != s.self {
		return nil
	}
	e := Entry{Table: table, Key: key, Owner: s.self, Clock: s.tick(), Deleted: true}
	return s.store(old, e, now.Add(s.ttl), now)
}

// applyResult says what merging one received entry did.
type applyResult struct {
	rec     *record // the stored version when the table changed, else nil
	visible bool    // what Entries shows changed
	repair  bool    // rec is our own entry re-issued to correct a stale copy
	refused refusal // why the entry was not taken in, if it was refused
}

// apply merges one entry received from the network.
func (s *state) apply(in wireEntry, now time.Time) applyResult {
	if why := s.admit(&in.Entry); why != refusedNone {
		return applyResult{refused: why}
	}
	s.observe(in.Clock)
	old := s.lookup(in.Table, in.Key)
	if in.Owner == s.self {
		return s.applyOwn(in, old, now)
	}
	if old != nil && !supersedes(&in.Entry, &old.Entry) {
		return applyResult{}
	}
	// A member known dead or gone keeps its entries withdrawn until it is
	// back; copies still travelling are not taken in.
	if s.memberGone(in.Owner) {
		return applyResult{}
	}
	var reapAt time.Time
	if in.Deleted {
		res := min(in.Residual, s.ttl)
		if old == nil && res <= 0 {
			// A tombstone reaped elsewhere for a key we never had.
			return applyResult{}
		}
		reapAt = now.Add(res)
	}
	if s.overQuota(&in.Entry, old) {
		return applyResult{refused: refusedQuota}
	}
	wasVisible := s.visible(old)
	r := s.store(old, in.Entry, reapAt, now)
	return applyResult{rec: r, visible: wasVisible || s.visible(r)}
}

// applyOwn handles a received copy of an entry under our own name. We are
// its only writer, so a copy that is newer than what we hold, or that we do
// not hold at all, is stale (from before a restart, or from before a
// tombstone was reaped): answer with our current view under a newer clock.
func (s *state) applyOwn(in wireEntry, old *record, now time.Time) applyResult {
	if old != nil && old.Owner == s.self {
		if !supersedes(&in.Entry, &old.Entry) {
			return applyResult{}
		}
		e := old.Entry
		e.Clock = s.tick()
		reapAt := old.reapAt
		if e.Deleted {
			reapAt = now.Add(s.ttl)
		}
		return applyResult{rec: s.store(old, e, reapAt, now), repair: true}
	}
	if in.Deleted {
		// A tombstone of ours that we no longer hold: nothing to correct.
		return applyResult{}
	}
	if old != nil && !supersedes(&in.Entry, &old.Entry) {
		// Another owner has since written the key; our old copy loses anyway.
		return applyResult{}
	}
	if now.Before(s.graceUntil) {
		k := tkey{s.intern(in.Table), strings.Clone(in.Key)}
		s.pending[k] = max(s.pending[k], in.Clock)
		return applyResult{}
	}
	return s.tombstoneStale(in.Table, in.Key, old, now)
}

// tombstoneStale deletes a stale copy of our entry that we do not hold.
func (s *state) tombstoneStale(table, key string, old *record, now time.Time) applyResult {
	wasVisible := s.visible(old)
	e := Entry{Table: table, Key: key, Owner: s.self, Clock: s.tick(), Deleted: true}
	r := s.store(old, e, now.Add(s.ttl), now)
	return applyResult{rec: r, visible: wasVisible, repair: true}
}

// endGrace deletes the stale copies of our entries seen during the grace
// period that the caller has not put back since.
func (s *state) endGrace(now time.Time) []applyResult {
	if now.Before(s.graceUntil) || len(s.pending) == 0 {
		return nil
	}
	var out []applyResult
	for k, clock := range s.pending {
		delete(s.pending, k)
		old := s.lookup(k.table, k.key)
		if old != nil && old.Owner == s.self && old.Clock > clock {
			continue
		}
		if old != nil && old.Owner != s.self && old.Clock > clock {
			continue
		}
		out = append(out, s.tombstoneStale(k.table, k.key, old, now))
	}
	return out
}

// reap drops tombstones whose time is up and entries of owners that have
// not been seen alive for orphanTTL. Neither is visible, so Entries does
// not change.
func (s *state) reap(now time.Time) (n int) {
	for r := range s.tombs {
		if !now.Before(r.reapAt) {
			s.unlink(r)
			n++
		}
	}
	for owner, set := range s.owners {
		if owner == s.self || s.memberShown(owner) || set.hiddenSince.IsZero() {
			continue
		}
		if now.Sub(set.hiddenSince) >= s.orphanTTL {
			n += s.dropOwner(owner)
		}
	}
	return n
}

// dropOwner forgets every entry of owner and returns how many there were.
func (s *state) dropOwner(owner string) int {
	set := s.owners[owner]
	if set == nil {
		return 0
	}
	n := len(set.recs)
	for i := n - 1; i >= 0; i-- {
		s.unlink(set.recs[i]) // the last one: nothing moves
	}
	delete(s.owners, owner)
	return n
}

// memberUp records a member as alive (or updated), and shows the entries
// of it held hidden. A member that was down is alive again: its entries
// were shown all along, so nothing about them changes. A down member whose
// address the member now holds is dead: weft runs again on its host, under
// another name (see supersede). It reports whether the member was not
// alive before.
func (s *state) memberUp(m Member, port uint16, now time.Time) bool {
	m.State = StateAlive
	cur := s.members[m.Name]
	if cur != nil && isAlive(cur.State) {
		cur.port = port
		if cur.Member != m {
			cur.Member = m
			s.watch.member(cur.Member)
			s.supersede(m, now)
		}
		return false
	}
	wasDown := cur != nil && cur.State == StateDown
	if cur == nil && s.owners[m.Name] != nil {
		s.strangers--
	}
	s.members[m.Name] = &member{Member: m, port: port, since: now, returned: cur != nil && m.Name != s.self}
	s.alive++
	s.watch.member(m)
	s.supersede(m, now)
	if s.earlierSelf(m) {
		// Our own earlier life, still alive in others' news: its entries
		// are ours to publish now, and never shown.
		s.dropOwner(m.Name)
		s.memberDown(m.Name, StateDead, now)
		return false
	}
	if set := s.owners[m.Name]; set != nil && !wasDown {
		set.hiddenSince = time.Time{}
		if m.Name != s.self {
			for _, r := range set.recs {
				if !r.Deleted {
					s.watch.entry(EntryPut, &r.Entry)
				}
			}
		}
	}
	return true
}

// supersede declares dead the other members at the gossip address of m,
// which is alive, when they are earlier lives of weft on m's host: weft
// runs there again under another name (a lost state directory gives a new
// one), so they will not come back, and their endpoints are m's to
// publish now. That is every member down at the address (its host answers
// because m runs there), and every member still alive there that started
// before m did, by the start times both announced from that one host's
// clock: weft came back faster than memberlist found its last life dead,
// and until it does, both would show the same endpoints. A member that
// announced no start time, or a later one, is left to memberlist. We are
// never declared dead.
func (s *state) supersede(m Member, now time.Time) {
	if m.Addr == "" {
		return
	}
	for name, o := range s.members {
		if name == m.Name || name == s.self || o.Addr != m.Addr {
			continue
		}
		earlier := isAlive(o.State) && !o.Started.IsZero() && o.Started.Before(m.Started)
		if o.State == StateDown || earlier {
			s.memberDown(name, StateDead, now)
		}
	}
}

// earlierSelf reports whether m is an earlier life of weft on our own
// host: another name at our gossip address that started before we did.
func (s *state) earlierSelf(m Member) bool {
	me := s.members[s.self]
	return m.Name != s.self && me != nil && me.Addr != "" && m.Addr == me.Addr &&
		!m.Started.IsZero() && !me.Started.IsZero() && m.Started.Before(me.Started)
}

// memberFailed records memberlist's news that a member is dead (found
// dead, not a goodbye). While its host may still answer, the member goes
// down: its entries stay shown, and its host is probed (probesDue,
// hostProbed), for its DownGrace at most. It is dead at once instead, its
// entries withdrawn, without a down grace, for ourselves, for a member that gave notice of its leave
// or has no address, and when an alive member holds its address (see
// supersede). It reports whether the member went down.
func (s *state) memberFailed(name string, now time.Time) (down bool) {
	cur := s.members[name]
	switch {
	case cur == nil || cur.State == StateDown:
		return false
	case cur.DownGrace <= 0 || name == s.self || cur.leaving || cur.Addr == "" || !isAlive(cur.State) || s.addrHeld(cur.Addr, name):
		s.memberDown(name, StateDead, now)
		return false
	}
	s.alive--
	cur.State, cur.since, cur.returned = StateDown, now, false
	cur.downSince, cur.probedAt, cur.probing = now, time.Time{}, false
	s.watch.member(cur.Member)
	return true
}

// addrHeld reports whether an alive member other than name has addr.
func (s *state) addrHeld(addr, name string) bool {
	for n, m := range s.members {
		if n != name && isAlive(m.State) && m.Addr == addr {
			return true
		}
	}
	return false
}

// probeTarget is the host of a down member, to be probed.
type probeTarget struct {
	name, addr string
	since      time.Time // the member's downSince: which spell of down
}

// probesDue returns up to limit down members whose host is due a probe
// (none running, and none started for interval), those waiting longest
// first, and marks them probing. A member that just went down is due at
// once.
func (s *state) probesDue(now time.Time, interval time.Duration, limit int) []probeTarget {
	var due []*member
	for _, m := range s.members {
		if m.State == StateDown && !m.probing && (m.probedAt.IsZero() || now.Sub(m.probedAt) >= interval) {
			due = append(due, m)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].probedAt.Equal(due[j].probedAt) {
			return due[i].probedAt.Before(due[j].probedAt)
		}
		return due[i].Name < due[j].Name
	})
	out := make([]probeTarget, 0, min(limit, len(due)))
	for _, m := range due[:min(max(limit, 0), len(due))] {
		m.probing, m.probedAt = true, now
		out = append(out, probeTarget{name: m.Name, addr: m.Addr, since: m.downSince})
	}
	return out
}

// hostProbed records whether the host of a probed member answered. One
// that did not is gone: the member is dead and its entries go. An answer
// about a member no longer down, or down again since the probe started,
// changes nothing. It reports whether the member died.
func (s *state) hostProbed(p probeTarget, answered bool, now time.Time) (dead bool) {
	cur := s.members[p.name]
	if cur == nil || cur.State != StateDown || !cur.downSince.Equal(p.since) || cur.Addr != p.addr {
		return false
	}
	cur.probing = false
	if answered {
		return false
	}
	s.memberDown(p.name, StateDead, now)
	return true
}

// expireDown declares dead the members down for their DownGrace or
// longer, and returns their names.
func (s *state) expireDown(now time.Time) []string {
	var out []string
	for name, m := range s.members {
		if m.State == StateDown && now.Sub(m.downSince) >= m.DownGrace {
			s.memberDown(name, StateDead, now)
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// memberDown records a member as dead or left and withdraws its entries.
// It reports whether any visible entry went away.
func (s *state) memberDown(name, st string, now time.Time) (visible bool) {
	cur := s.members[name]
	if cur == nil {
		return false
	}
	if isAlive(cur.State) {
		s.alive--
	}
	if cur.leaving {
		st = StateLeft
	}
	was := cur.State
	cur.State, cur.since, cur.returned, cur.probing = st, now, false, false
	if st != was {
		s.watch.member(cur.Member)
	}
	if name == s.self {
		return false
	}
	if set := s.owners[name]; set != nil {
		for _, r := range set.recs {
			if !r.Deleted {
				visible = true
				s.watch.entry(EntryGone, &r.Entry)
			}
		}
		s.dropOwner(name)
	}
	return visible
}

// memberLeaving records a member's leave notice. A member down (its
// notice late) has left: its entries go. It reports whether the notice
// is news.
func (s *state) memberLeaving(name string, now time.Time) bool {
	cur := s.members[name]
	switch {
	case cur == nil || cur.leaving || cur.State == StateLeft:
		return false
	case cur.State == StateDead:
		cur.State = StateLeft
		s.watch.member(cur.Member)
	case cur.State == StateDown:
		cur.leaving = true
		s.memberDown(name, StateLeft, now)
	}
	cur.leaving = true
	return true
}

// forgetMembers drops members that have been dead or gone for longer than d.
func (s *state) forgetMembers(now time.Time, d time.Duration) {
	for name, m := range s.members {
		if (m.State == StateDead || m.State == StateLeft) && now.Sub(m.since) > d {
			delete(s.members, name)
			if s.owners[name] != nil {
				s.strangers++
			}
		}
	}
}

// live returns copies of the visible entries of table, sorted by key.
func (s *state) live(table string) []Entry {
	t := s.tables[table]
	out := make([]Entry, 0, len(t))
	for _, r := range t {
		if s.visible(r) {
			e := r.Entry
			e.Value = bytes.Clone(e.Value)
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// countLive counts the visible entries of table without copying them.
func (s *state) countLive(table string) int {
	n := 0
	for _, r := range s.tables[table] {
		if s.visible(r) {
			n++
		}
	}
	return n
}

// digest summarises the entries of ourselves and of alive members, in no
// particular order; entries of others are not offered to anyone.
func (s *state) digest() []ownerDigest {
	out := make([]ownerDigest, 0, len(s.owners))
	for owner, set := range s.owners {
		if s.memberAlive(owner) {
			out = append(out, s.ownerDigest(owner, set))
		}
	}
	return out
}

func (s *state) ownerDigest(owner string, set *ownerSet) ownerDigest {
	if set.maxStale {
		set.maxClock = 0
		for _, r := range set.recs {
			set.maxClock = max(set.maxClock, r.Clock)
		}
		set.maxStale = false
	}
	return ownerDigest{Owner: owner, Count: uint64(len(set.recs)), MaxClock: set.maxClock, Hash: set.hash}
}

// delta returns, owner by owner, the entries a peer whose digest is theirs
// lacks, each group with our digest of its owner. Judged per owner (only
// for ourselves and alive members):
//   - peer has nothing of the owner: everything;
//   - peer's newest clock is older than ours: our entries above it;
//   - peer's newest clock is newer: nothing (the peer sends us its own);
//   - same newest clock, different content: everything, from the side that
//     holds more entries of the owner (on a tie, the greater hash) only;
//     the other side then sends back what is still missing, so both end up
//     with the union and the newest version of each key.
//
// differs reports whether the two tables differ for any owner alive here,
// in either direction. Without collect, delta only compares.
func (s *state) delta(theirs []ownerDigest, now time.Time, collect bool) (out []block, differs bool) {
	peer := make(map[string]*ownerDigest, len(theirs))
	for i := range theirs {
		peer[theirs[i].Owner] = &theirs[i]
	}
	for i := range theirs {
		if _, ok := s.owners[theirs[i].Owner]; !ok && s.memberAlive(theirs[i].Owner) {
			differs = true // they have entries of an owner we have none of
		}
	}
	for owner, set := range s.owners {
		if !s.memberAlive(owner) {
			continue
		}
		d := s.ownerDigest(owner, set)
		p := peer[owner]
		var above uint64
		switch {
		case p == nil:
		case p.Count == d.Count && p.Hash == d.Hash:
			continue
		case p.MaxClock < d.MaxClock:
			above = p.MaxClock
		case p.MaxClock > d.MaxClock:
			differs = true
			continue
		case p.Count > d.Count || (p.Count == d.Count && p.Hash > d.Hash):
			// Same newest clock, and they hold more (or as many, with the
			// greater hash): most likely a superset of ours, partial copies
			// spread by gossip being the usual reason for a difference.
			// They send us theirs instead; sending ours would mostly repeat
			// what they hold. The owner and every complete copy hold the
			// most, so what they lack still reaches them.
			differs = true
			continue
		}
		differs = true
		if !collect {
			return nil, true
		}
		bl := block{Digest: d}
		if above == 0 {
			bl.Entries = make([]wireEntry, 0, len(set.recs))
		}
		for _, r := range set.recs {
			if above == 0 || r.Clock > above {
				bl.Entries = append(bl.Entries, s.wire(r, now))
			}
		}
		out = append(out, bl)
	}
	return out, differs
}

// holds reports whether this node's entries of d.Owner match digest d.
func (s *state) holds(d *ownerDigest) bool {
	set := s.owners[d.Owner]
	return set != nil && uint64(len(set.recs)) == d.Count && set.hash == d.Hash
}

// all returns every entry held, for a join's full state exchange. Entries
// of owners that are not alive go too: a restarting owner must see its
// stale copies to correct them.
func (s *state) all(now time.Time) []wireEntry {
	out := make([]wireEntry, 0, 64)
	for _, t := range s.tables {
		for _, r := range t {
			out = append(out, s.wire(r, now))
		}
	}
	return out
}

// wire copies a record for sending. Values are never modified in place
// (every write stores a fresh record), so sharing the slice is safe.
func (s *state) wire(r *record, now time.Time) wireEntry {
	w := wireEntry{Entry: r.Entry}
	if r.Deleted {
		w.Residual = r.reapAt.Sub(now)
	}
	return w
}
