package ipam

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/weftnet/weft/mesh"
)

// view is the picture one step works from: the other hosts' entries
// (alive now, or the last copy of a dead host's) decoded, and this host's
// own state. It is rebuilt whenever either changes; nothing in it is
// modified after it is built.
type view struct {
	now  time.Time
	self string
	// n is the number of voters and q the majority of them.
	n, q   int
	hosts  map[string]*hostView
	claims []*claimView // claims in force, this host's included
	votes  []*voteView  // votes that count, this host's included
	dead   []*deadView  // other hosts' dead records
	grants []*grantView // other hosts' answers to this host's wants
	// taken are addresses hosts use outside their own blocks.
	taken map[netip.Addr]string
}

type hostView struct {
	name  string
	rec   hostRec
	alive bool
	// active: not removed in its current epoch; only active hosts vote,
	// claim and count.
	active bool
}

type claimView struct {
	owner string
	block netip.Prefix
	claimRec
}

type voteView struct {
	voter string
	block netip.Prefix
	voteRec
}

type deadView struct {
	voter, host string
	deadRec
	// counted: from an active host in its current epoch.
	counted bool
}

type grantView struct {
	owner string
	addr  netip.Addr
	grantRec
}

// buildView decodes the cache and the own state. Caller holds a.mu.
func (a *Allocator) buildView(now time.Time) *view {
	self := a.self
	v := &view{now: now, self: self, hosts: map[string]*hostView{}, taken: map[netip.Addr]string{}}
	v.hosts[self] = &hostView{name: self, rec: a.ownHostRec(), alive: true, active: true}
	for owner, kv := range a.st.Cache {
		if owner == self {
			continue
		}
		var h hostRec
		if b, ok := kv[hostKey(owner)]; ok && json.Unmarshal(b, &h) == nil {
			r := a.st.Removed[owner]
			v.hosts[owner] = &hostView{name: owner, rec: h, alive: a.alive[owner], active: r == nil || h.Epoch > r.Epoch}
		}
	}
	active := 0
	for _, h := range v.hosts {
		if h.active {
			active++
		}
	}
	v.n = max(a.cfg.ExpectedHosts, active, 1)
	v.q = v.n/2 + 1

	for owner, kv := range a.st.Cache {
		h := v.hosts[owner]
		if owner == self || h == nil {
			continue
		}
		for _, x := range h.rec.Foreign {
			v.taken[x] = owner
		}
		for key, val := range kv {
			kind, subj, ok := splitKey(owner, key)
			if !ok {
				continue
			}
			switch kind {
			case kindClaim:
				b, err := netip.ParsePrefix(subj)
				var c claimRec
				if err != nil || json.Unmarshal(val, &c) != nil {
					continue
				}
				if h.active && c.Epoch == h.rec.Epoch && !c.Released {
					v.claims = append(v.claims, &claimView{owner: owner, block: b, claimRec: c})
				}
			case kindVote:
				b, err := netip.ParsePrefix(subj)
				var vr voteRec
				if err != nil || json.Unmarshal(val, &vr) != nil {
					continue
				}
				// Only the votes of alive voters count (Table.Alive: one per
				// underlay address), so members posing as many cannot make
				// a majority.
				if h.active && h.alive && vr.Voter == h.rec.Epoch {
					v.votes = append(v.votes, &voteView{voter: owner, block: b, voteRec: vr})
				}
			case kindDead:
				var d deadRec
				if json.Unmarshal(val, &d) != nil {
					continue
				}
				v.dead = append(v.dead, &deadView{voter: owner, host: subj, deadRec: d, counted: h.active && h.alive && d.Voter == h.rec.Epoch})
			case kindGrant:
				to, addr, _ := strings.Cut(subj, "/")
				x, err := netip.ParseAddr(addr)
				var g grantRec
				if err != nil || to != self || json.Unmarshal(val, &g) != nil {
					continue
				}
				if g.To == self {
					v.grants = append(v.grants, &grantView{owner: owner, addr: x, grantRec: g})
				}
			}
		}
	}
	for _, c := range a.st.Claims {
		if !c.Released {
			v.claims = append(v.claims, &claimView{owner: self, block: c.Block, claimRec: c.claimRec})
		}
	}
	for k, vr := range a.st.Votes {
		if b, err := netip.ParsePrefix(k); err == nil {
			v.votes = append(v.votes, &voteView{voter: self, block: b, voteRec: *vr})
		}
	}
	sort.Slice(v.claims, func(i, j int) bool {
		if v.claims[i].block != v.claims[j].block {
			return u32(v.claims[i].block.Addr()) < u32(v.claims[j].block.Addr())
		}
		return v.claims[i].owner < v.claims[j].owner
	})
	return v
}

// claim returns the claim in force of owner on block in epoch, or nil.
func (v *view) claim(owner string, block netip.Prefix, epoch uint64) *claimView {
	for _, c := range v.claims {
		if c.owner == owner && c.block == block && c.Epoch == epoch {
			return c
		}
	}
	return nil
}

// seen returns, for each vote that counts for owner's claim on block in
// epoch, the Limit its voter saw.
func (v *view) seen(owner string, block netip.Prefix, epoch uint64) []int {
	var out []int
	for _, vt := range v.votes {
		if vt.For == owner && vt.block == block && vt.Epoch == epoch {
			out = append(out, vt.Seen)
		}
	}
	return out
}

// aliveActive counts the active hosts alive now.
func (v *view) aliveActive() int {
	n := 0
	for _, h := range v.hosts {
		if h.active && h.alive {
			n++
		}
	}
	return n
}

// step brings the allocator up to date with the table: it refreshes the
// cache, then runs each rule once (removals, votes, own claims, lending,
// wants, restoring), publishes this host's entries and saves. It reports
// whether anything changed, and then wakes the requests that wait.
// Caller holds a.mu.
func (a *Allocator) stepLocked(now time.Time) bool {
	entries := a.table.Entries()
	changed := a.refreshLocked(entries, now)
	if changed || a.dirty || a.v == nil {
		a.v = a.buildView(now)
	}
	rules := []func(*view){a.checkSelfRemoved, a.updateDead, a.updateVotes, a.updateClaims, a.updateGrants, a.updateWants, a.updateRestore}
	for _, rule := range rules {
		before := a.gen
		rule(a.v)
		if a.gen != before {
			a.v = a.buildView(now)
		}
	}
	a.v.now = now
	a.publishLocked(entries)
	if a.dirty || a.cacheDirty {
		a.saveLocked()
	}
	if a.gen != a.signalled {
		changed = true
	}
	if changed {
		a.signalled = a.gen
		close(a.progress)
		a.progress = make(chan struct{})
	}
	return changed
}

// refreshLocked copies the other hosts' entries into the cache and
// records who is alive. An entry of an alive host that is no longer shown
// was deleted by it; it is dropped after AbsentGrace, which covers the
// moment a returning host's entries are still on their way back.
func (a *Allocator) refreshLocked(entries []mesh.Entry, now time.Time) bool {
	changed := false
	alive := map[string]bool{a.self: true}
	for _, n := range a.table.Alive() {
		alive[n] = true
	}
	if !maps.Equal(alive, a.alive) {
		a.alive = alive
		changed = true
	}
	shown := map[string]map[string][]byte{}
	for _, e := range entries {
		if e.Owner == a.self || e.Owner == "" || strings.Contains(e.Owner, "/") {
			continue
		}
		if shown[e.Owner] == nil {
			shown[e.Owner] = map[string][]byte{}
		}
		shown[e.Owner][e.Key] = e.Value
	}
	for owner, kv := range shown {
		c := a.st.Cache[owner]
		if c == nil {
			c = map[string]json.RawMessage{}
			a.st.Cache[owner] = c
		}
		for k, val := range kv {
			if !bytes.Equal(c[k], val) {
				c[k] = bytes.Clone(val)
				changed = true
			}
			delete(a.absent, owner+"\x00"+k)
		}
	}
	for owner, c := range a.st.Cache {
		if owner == a.self {
			delete(a.st.Cache, owner)
			continue
		}
		if !alive[owner] {
			continue
		}
		for k := range c {
			if _, ok := shown[owner][k]; ok {
				continue
			}
			id := owner + "\x00" + k
			since, ok := a.absent[id]
			if !ok {
				a.absent[id] = now
				continue
			}
			if now.Sub(since) >= a.cfg.AbsentGrace {
				delete(c, k)
				delete(a.absent, id)
				changed = true
			}
		}
		if len(c) == 0 {
			delete(a.st.Cache, owner)
		}
	}
	if changed {
		a.cacheDirty = true
	}
	return changed
}

// checkSelfRemoved notices that the majority removed this host: it starts
// a new epoch, keeps the addresses it uses to re-home them (updateRestore)
// and drops its votes and dead records, which were an older voter's.
func (a *Allocator) checkSelfRemoved(v *view) {
	my := a.st.Epoch
	removed, at := false, my
	count := 0
	for _, d := range v.dead {
		if d.host != a.self {
			continue
		}
		if d.Removed && d.Epoch >= my {
			removed, at = true, max(at, d.Epoch)
		}
		if d.counted && d.Epoch == my {
			count++
		}
	}
	if count >= v.q {
		removed = true
	}
	if !removed {
		return
	}
	a.log.Warn("the other hosts removed this one after it was unreachable; keeping its addresses and claiming its blocks again",
		"epoch", my, "new_epoch", at+1)
	a.st.Epoch = at + 1
	a.st.Restoring = true
	for k, c := range a.st.Claims {
		if !c.Released && c.Used.count() > 0 {
			if old := a.st.Old[k]; old != nil {
				for i := range old.Used {
					old.Used[i] |= c.Used[i]
				}
				old.Limit = max(old.Limit, c.Limit)
			} else {
				a.st.Old[k] = c
			}
		}
		delete(a.st.Claims, k)
	}
	clear(a.st.Votes)
	clear(a.st.Dead)
	a.touch()
}

// updateDead tracks the hosts that are not alive: after Reclaim this host
// says so in a dead record; once a majority has, the dead host is removed,
// its claims void and its windows quarantined. It also lifts the
// quarantine of a removed host that is back and has re-homed what it uses.
func (a *Allocator) updateDead(v *view) {
	for name, h := range v.hosts {
		if name == a.self || !h.active {
			continue
		}
		if r := a.st.Removed[name]; r != nil && !r.Lifted && h.rec.Epoch > r.Epoch && !h.rec.Restoring {
			r.Lifted, r.Windows = true, nil
			if d := a.st.Dead[name]; d != nil && d.Epoch <= r.Epoch {
				delete(a.st.Dead, name)
			}
			a.touch()
			a.log.Info("removed host is back and has listed its addresses; quarantine lifted", "peer", name, "epoch", h.rec.Epoch)
		}
		if h.alive {
			delete(a.deadSince, name)
			if d := a.st.Dead[name]; d != nil && !d.Removed {
				delete(a.st.Dead, name)
				a.touch()
			}
			continue
		}
		since, ok := a.deadSince[name]
		if !ok {
			a.deadSince[name] = v.now
			continue
		}
		if d := a.st.Dead[name]; v.now.Sub(since) >= a.cfg.Reclaim && (d == nil || d.Epoch != h.rec.Epoch) {
			a.st.Dead[name] = &deadRec{Epoch: h.rec.Epoch, Windows: a.windowsOf(v, name, h.rec.Epoch), Voter: a.st.Epoch}
			a.touch()
			a.log.Info("host unreachable for the reclaim time; voting to reclaim its blocks", "peer", name, "since", since.Format(time.RFC3339))
		}
	}
	for name, h := range v.hosts {
		if name == a.self || !h.active {
			continue
		}
		e := h.rec.Epoch
		count, announced := 0, false
		var wins []span
		consider := func(d *deadRec, counted bool) {
			if d.Epoch != e {
				return
			}
			if d.Removed {
				announced = true
			}
			if counted {
				count++
			}
			for _, w := range d.Windows {
				wins = mergeSpans(wins, w)
			}
		}
		for _, d := range v.dead {
			if d.host == name && d.voter != a.self {
				consider(&d.deadRec, d.counted)
			}
		}
		if d := a.st.Dead[name]; d != nil {
			consider(d, true)
		}
		if count < v.q && !announced {
			continue
		}
		if r := a.st.Removed[name]; r != nil && !r.Lifted {
			for _, w := range r.Windows {
				wins = mergeSpans(wins, w) // still quarantined from an earlier removal
			}
		}
		a.st.Removed[name] = &removal{Epoch: e, Windows: wins}
		a.st.Dead[name] = &deadRec{Epoch: e, Removed: true, Windows: wins, Voter: a.st.Epoch}
		delete(a.deadSince, name)
		a.touch()
		a.log.Warn("host removed: a majority has not seen it for the reclaim time; its blocks are free again, its windows stay quarantined",
			"peer", name, "epoch", e, "windows", fmtSpans(wins))
	}
}

// windowsOf is what this host knows of the windows of host's claims.
func (a *Allocator) windowsOf(v *view, host string, epoch uint64) []span {
	var out []span
	for _, c := range v.claims {
		if c.owner != host || c.Epoch != epoch {
			continue
		}
		limit := c.Limit
		if vr := a.st.Votes[c.block.String()]; vr != nil && vr.For == host && vr.Epoch == epoch {
			limit = max(limit, vr.Seen)
		}
		if w, ok := window(c.block, limit); ok {
			out = mergeSpans(out, w)
		}
	}
	return out
}

// updateVotes keeps this host's votes: one per address range at most,
// dropped when its claim is no longer in force, following the claim's
// Limit, and given to a claim on a range it has no vote on, if the claim
// keeps the quarantine this host knows of.
func (a *Allocator) updateVotes(v *view) {
	for k, vr := range a.st.Votes {
		b, err := netip.ParsePrefix(k)
		c := v.claim(vr.For, b, vr.Epoch)
		if err != nil || c == nil {
			delete(a.st.Votes, k)
			a.touch()
			continue
		}
		if c.Limit > vr.Seen || vr.Voter != a.st.Epoch {
			vr.Seen = max(vr.Seen, c.Limit)
			vr.Voter = a.st.Epoch
			a.touch()
		}
	}
	for _, c := range v.claims {
		if a.votedOverlap(c.block) {
			continue
		}
		if !a.quarantineKept(c) {
			a.log.Debug("not voting for a claim that drops a quarantine", "peer", c.owner, "block", c.block)
			continue
		}
		a.st.Votes[c.block.String()] = &voteRec{For: c.owner, Epoch: c.Epoch, Seen: c.Limit, Voter: a.st.Epoch}
		a.touch()
	}
}

func (a *Allocator) votedOverlap(b netip.Prefix) bool {
	for k := range a.st.Votes {
		if o, err := netip.ParsePrefix(k); err == nil && o.Overlaps(b) {
			return true
		}
	}
	return false
}

// quarantineKept reports whether claim c keeps every quarantined window
// of a removed host that lies in its block.
func (a *Allocator) quarantineKept(c *claimView) bool {
	for host, r := range a.st.Removed {
		if r.Lifted || (c.owner == host && c.Epoch > r.Epoch) {
			continue
		}
		for _, w := range r.Windows {
			part, ok := w.within(c.block)
			if !ok {
				continue
			}
			kept := false
			for _, q := range c.Quar {
				if q.Host == host && q.contains(part.From) && q.contains(part.To) {
					kept = true
					break
				}
			}
			if !kept {
				return false
			}
		}
	}
	return true
}

// quarantineFor lists the quarantined windows a new claim on b must keep.
func (a *Allocator) quarantineFor(b netip.Prefix) []quarSpan {
	var out []quarSpan
	for _, host := range slices.Sorted(maps.Keys(a.st.Removed)) {
		r := a.st.Removed[host]
		if r.Lifted || (host == a.self) {
			continue
		}
		for _, w := range r.Windows {
			if part, ok := w.within(b); ok {
				out = append(out, quarSpan{Host: host, Epoch: r.Epoch, span: part})
			}
		}
	}
	return out
}

// updateClaims follows this host's claims: counts their votes into Acked,
// withdraws one that lost a race, forgets released ones nobody votes for,
// drops lifted quarantines and grows a window that is filling up.
func (a *Allocator) updateClaims(v *view) {
	for _, k := range slices.Sorted(maps.Keys(a.st.Claims)) {
		c := a.st.Claims[k]
		if c.Released {
			if len(v.seen(a.self, c.Block, c.Epoch)) == 0 {
				delete(a.st.Claims, k)
				a.touch()
			}
			continue
		}
		seen := v.seen(a.self, c.Block, c.Epoch)
		if len(seen) >= v.q {
			slices.Sort(seen)
			slices.Reverse(seen)
			if ack := min(seen[v.q-1], c.Limit); ack > c.Acked {
				if c.Acked == 0 {
					a.log.Info("block claimed", "block", c.Block, "pool", c.Pool, "votes", len(seen), "of", v.n)
				}
				c.Acked = ack
				a.touch()
			}
		}
		if c.Acked == 0 {
			for _, o := range v.claims {
				if o.owner == a.self || !o.block.Overlaps(c.Block) {
					continue
				}
				theirs := len(v.seen(o.owner, o.block, o.Epoch))
				if theirs >= v.q || theirs > len(seen) || (theirs == len(seen) && o.owner < a.self) {
					a.log.Info("claim yields to another host's", "block", c.Block, "peer", o.owner, "votes", len(seen), "theirs", theirs)
					c.Released = true
					if vr := a.st.Votes[k]; vr != nil && vr.For == a.self {
						delete(a.st.Votes, k)
					}
					a.touch()
					break
				}
			}
			continue
		}
		for _, o := range v.claims {
			if o.owner != a.self && o.block.Overlaps(c.Block) && len(v.seen(o.owner, o.block, o.Epoch)) >= v.q {
				a.log.Error("another host holds a block this host holds too; this is a bug", "block", c.Block, "peer", o.owner)
			}
		}
		q := c.Quar[:0:0]
		for _, s := range c.Quar {
			if r := a.st.Removed[s.Host]; r != nil && !r.Lifted {
				q = append(q, s)
			}
		}
		if len(q) != len(c.Quar) {
			c.Quar = q
			a.touch()
		}
		chunk := chunkOf(c.Block)
		if c.Limit == c.Acked && c.Limit < size(c.Block) && 2*a.freeInWindow(v, c) < chunk {
			c.Limit = min(size(c.Block), c.Limit+chunk)
			a.touch()
		}
	}
}

// freeInWindow counts the addresses of c's window that could be handed
// out.
func (a *Allocator) freeInWindow(v *view, c *claim) int {
	pool, err := netip.ParsePrefix(c.Pool)
	if err != nil {
		return 0
	}
	n := 0
	for off := range min(c.Limit, c.Acked) {
		if a.free(v, pool, c, off) {
			n++
		}
	}
	return n
}

// free reports whether the address at off in c's block may be handed out,
// window aside.
func (a *Allocator) free(v *view, pool netip.Prefix, c *claim, off int) bool {
	return a.unavailable(v, pool, c, at(c.Block, off), "") == ""
}

// unavailable says why x, in c's block, may not go to a container of
// host for ("" for this host), or "" if it may.
func (a *Allocator) unavailable(v *view, pool netip.Prefix, c *claim, x netip.Addr, forHost string) string {
	if !pool.Contains(x) || reserved(pool, x) {
		return "it is the network, gateway or broadcast address"
	}
	if who := a.st.Lent[x]; who != "" && who != forHost {
		return "it is in use on host " + who
	}
	if c.Used.has(offset(c.Block, x)) && a.st.Lent[x] == "" {
		return "it is in use on host " + a.self
	}
	if who := v.taken[x]; who != "" && who != forHost {
		return "it is in use on host " + who
	}
	for _, q := range c.Quar {
		if q.contains(x) {
			return "it may still be in use on host " + q.Host + ", which was removed while unreachable"
		}
	}
	return ""
}

// updateGrants lends addresses of this host's blocks that other hosts
// want, or refuses them, and takes lent addresses back once their
// borrower no longer lists them.
func (a *Allocator) updateGrants(v *view) {
	for _, name := range slices.Sorted(maps.Keys(v.hosts)) {
		h := v.hosts[name]
		if name == a.self {
			continue
		}
		for _, x := range h.rec.Wants {
			c := a.holding(x)
			if c == nil || a.st.Lent[x] == name {
				continue
			}
			pool, _ := netip.ParsePrefix(c.Pool)
			if why := a.unavailable(v, pool, c, x, name); why != "" {
				if g, ok := a.refused[x]; !ok || g.To != name {
					a.refused[x] = grantRec{To: name, Refused: why}
					a.touch()
				}
				continue
			}
			off := offset(c.Block, x)
			if off >= min(c.Limit, c.Acked) {
				if c.Limit <= off {
					c.Limit = min(size(c.Block), roundUp(off+1, chunkOf(c.Block)))
					a.touch()
				}
				continue
			}
			a.st.Lent[x] = name
			c.Used.set(off)
			a.touch()
			a.log.Info("address lent", "address", x, "peer", name)
		}
	}
	for x, who := range a.st.Lent {
		h := v.hosts[who]
		if h == nil || !h.active || slices.Contains(h.rec.Wants, x) || slices.Contains(h.rec.Foreign, x) {
			continue // still used, or its borrower was removed and may still use it
		}
		delete(a.st.Lent, x)
		if c := a.holding(x); c != nil {
			c.Used.clear(offset(c.Block, x))
		}
		a.touch()
		a.log.Info("lent address returned", "address", x, "peer", who)
	}
	for x, g := range a.refused {
		if h := v.hosts[g.To]; h == nil || !slices.Contains(h.rec.Wants, x) {
			delete(a.refused, x)
			a.touch()
		}
	}
}

// holding returns this host's claim in force that holds x, or nil.
func (a *Allocator) holding(x netip.Addr) *claim {
	for _, c := range a.st.Claims {
		if !c.Released && c.Acked > 0 && c.Block.Contains(x) {
			return c
		}
	}
	return nil
}

func roundUp(n, step int) int { return (n + step - 1) / step * step }

// updateWants settles this host's wants from the holders' answers.
func (a *Allocator) updateWants(v *view) {
	for x, w := range a.wants {
		for _, g := range v.grants {
			if g.owner != w.holder || g.addr != x {
				continue
			}
			if g.Refused != "" {
				w.err = refusedErr(x, g.Refused)
			} else {
				a.st.Foreign[x] = w.holder
			}
			w.done = true
			delete(a.wants, x)
			a.touch()
			break
		}
		if w.done {
			continue
		}
		if v.holderOf(x) != w.holder {
			w.err = unansweredErr(x, w.holder)
			w.done = true
			delete(a.wants, x)
			a.touch()
		}
	}
}

// holderOf names the host whose claim in force holds x, or "".
func (v *view) holderOf(x netip.Addr) string {
	for _, c := range v.claims {
		if c.block.Contains(x) {
			return c.owner
		}
	}
	return ""
}

// updateRestore re-homes, after a removal, the addresses this host kept:
// it claims each old block again where no one else holds it, and lists
// the addresses of the others as foreign ones. Then it is restored, and
// the others lift their quarantine of it.
func (a *Allocator) updateRestore(v *view) {
	if !a.st.Restoring {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(a.st.Old)) {
		old := a.st.Old[k]
		top := old.Used.highest()
		if top < 0 {
			delete(a.st.Old, k)
			a.touch()
			continue
		}
		if c := a.st.Claims[k]; c != nil && !c.Released {
			switch {
			case c.Acked > top:
				for i := range c.Used {
					c.Used[i] |= old.Used[i]
				}
				delete(a.st.Old, k)
				a.touch()
			case c.Acked > 0 && c.Limit <= top:
				c.Limit = max(c.Limit, roundUp(top+1, chunkOf(c.Block)))
				a.touch()
			}
			continue
		}
		var other *claimView
		for _, c := range v.claims {
			if c.owner != a.self && c.block.Overlaps(old.Block) {
				other = c
				break
			}
		}
		if other != nil {
			for off := 0; off <= top; off++ {
				if !old.Used.has(off) {
					continue
				}
				x := at(old.Block, off)
				if a.st.Lent[x] != "" {
					delete(a.st.Lent, x) // its borrower lists it; the new holder keeps off it
				} else {
					a.st.Foreign[x] = other.owner
				}
			}
			delete(a.st.Old, k)
			a.touch()
			a.log.Info("block of this host is now another's; its addresses there kept as foreign", "block", old.Block, "peer", other.owner)
			continue
		}
		if a.busy(v, old.Block, false) {
			continue
		}
		c := &claim{Block: old.Block, claimRec: claimRec{Pool: old.Pool, Epoch: a.st.Epoch, Limit: max(old.Limit, top+1), Used: bytes.Clone(old.Used)}}
		a.st.Claims[k] = c
		a.st.Votes[k] = &voteRec{For: a.self, Epoch: a.st.Epoch, Seen: c.Limit, Voter: a.st.Epoch}
		a.touch()
	}
	if len(a.st.Old) == 0 {
		a.st.Restoring = false
		a.touch()
		a.log.Info("addresses kept through the removal are re-homed", "epoch", a.st.Epoch)
	}
}

// busy reports whether b may not be claimed now: a claim in force or a
// vote overlaps it, or one of this host's released claims on it is still
// waiting for its votes to go, or (withOld) this host is restoring it.
func (a *Allocator) busy(v *view, b netip.Prefix, withOld bool) bool {
	for _, c := range v.claims {
		if c.block.Overlaps(b) {
			return true
		}
	}
	for _, vt := range v.votes {
		if vt.block.Overlaps(b) {
			return true
		}
	}
	for _, c := range a.st.Claims {
		if c.Block.Overlaps(b) {
			return true
		}
	}
	for _, c := range a.st.Old {
		if withOld && c.Block.Overlaps(b) {
			return true
		}
	}
	return false
}

// ownHostRec is this host's entry.
func (a *Allocator) ownHostRec() hostRec {
	h := hostRec{Epoch: a.st.Epoch, Restoring: a.st.Restoring}
	h.Foreign = slices.SortedFunc(maps.Keys(a.st.Foreign), netip.Addr.Compare)
	h.Wants = slices.SortedFunc(maps.Keys(a.wants), netip.Addr.Compare)
	return h
}

// publishLocked writes this host's entries that differ from what the
// table shows of them, and deletes the ones it no longer has.
func (a *Allocator) publishLocked(entries []mesh.Entry) {
	want := map[string][]byte{}
	put := func(key string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			a.log.Error("encode IPAM entry", "key", key, "err", err)
			return
		}
		want[key] = b
	}
	put(hostKey(a.self), a.ownHostRec())
	for _, c := range a.st.Claims {
		put(claimKey(a.self, c.Block), c.claimRec)
	}
	for k, vr := range a.st.Votes {
		if b, err := netip.ParsePrefix(k); err == nil {
			put(voteKey(a.self, b), vr)
		}
	}
	for host, d := range a.st.Dead {
		put(deadKey(a.self, host), d)
	}
	for x, g := range a.refused {
		put(grantKey(a.self, g.To, x), g)
	}
	for x, who := range a.st.Lent {
		put(grantKey(a.self, who, x), grantRec{To: who})
	}
	have := map[string][]byte{}
	for _, e := range entries {
		if e.Owner == a.self {
			have[e.Key] = e.Value
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if !bytes.Equal(have[k], want[k]) {
			a.table.Put(k, want[k])
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			a.table.Delete(k)
		}
	}
}

func fmtSpans(s []span) string {
	parts := make([]string, len(s))
	for i, w := range s {
		parts[i] = w.From.String() + "-" + w.To.String()
	}
	return strings.Join(parts, ",")
}
