package mesh

// This file owns anti-entropy beyond memberlist's push/pull: when this
// member starts an extra digest exchange (syncScheduler, a pure state
// machine with its own tests), the loop that runs it (syncLoop), and how
// what a peer lacks is cut into messages (syncMessages). The exchanges
// themselves are TCP tasks (broadcast.go); the digests and deltas are
// state's (state.go); receiving them is the delegate's (delegate.go).
//
// Locks: syncScheduler has none; Mesh.mu guards it like the state.

import "time"

const (
	// fastSyncThreshold: more changes than this between two SyncIntervals
	// means a bulk change, worth an extra digest exchange.
	fastSyncThreshold = 8
	// returnSyncs bounds the members synced with per SyncInterval because
	// they came back, so a healed partition does not set off a storm.
	returnSyncs = 3
	// equalToStop equal comparisons in a row end a burst's sync rounds;
	// tailChecks single exchanges follow, syncWait, 2×syncWait, 4×syncWait
	// SyncIntervals apart.
	equalToStop = 3
	tailChecks  = 3
	// syncWait, in SyncIntervals, is how long an exchange waits for its
	// answer before the next one may start.
	syncWait = 5
	// idleTicks, in SyncIntervals, is how often syncLoop looks for
	// members that came back while the scheduler has nothing to do: an
	// idle mesh wakes once a second here, not five times (a change wakes
	// it at once).
	idleTicks = 5
	// syncChunk bounds one TCP message of entries, well under memberlist's
	// 20 MiB limit; large enough that an answer is one message in all but
	// the largest exchanges (about 17,000 endpoint records).
	syncChunk = 4 << 20
)

// syncScheduler decides when this member starts an extra anti-entropy
// exchange with a random member, one SyncInterval tick at a time.
//
// A burst (more than fastSyncThreshold changes in a tick, or a broadcast
// queue that overflowed) starts rounds of exchanges, one per tick; they go
// on until equalToStop comparisons of digests in a row find nothing missing
// either way (a lost send or answer just means one more round). Near the
// end of a burst many members lack the same last entries, so a few equal
// comparisons can still leave one behind: after the rounds stop, tailChecks
// more exchanges follow at growing intervals, and any difference starts
// the rounds again. Single changes rely on broadcasts, with push/pull
// behind. One exchange at a time: the next waits for the answer to the
// last, or syncWait ticks, so slow peers slow the rounds down instead of
// piling them up.
//
// It does no I/O and takes no lock (Mesh.mu guards it); time is passed in.
type syncScheduler struct {
	interval time.Duration // SyncInterval

	dirty     int       // table changes since the last tick
	pruned    bool      // the broadcast queue overflowed since the last tick
	differs   bool      // syncing: a recent comparison differed
	equalRuns int       // equal comparisons in a row while syncing
	tailLeft  int       // checks still to run after syncing stopped
	tailAt    time.Time // when the next of them is due
	// peer is the member our last exchange went to, until its answer
	// arrives or syncWait ticks pass.
	peer  string
	since time.Time
	// wake, when set, receives a value (coalesced) whenever there is
	// something to do: syncLoop waits on it while idle.
	wake chan struct{}
}

// changed counts n changes of the table.
func (s *syncScheduler) changed(n int) { s.dirty += n; s.notify() }

// overflowed records that the broadcast queue dropped changes.
func (s *syncScheduler) overflowed() { s.pruned = true; s.notify() }

func (s *syncScheduler) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// idle reports whether nothing is due but looking for members that came
// back: no change since the last tick, no rounds, no checks left.
func (s *syncScheduler) idle() bool {
	return s.dirty == 0 && !s.pruned && !s.differs && s.tailLeft == 0
}

// compared records the outcome of comparing a peer's digest with ours:
// syncing goes on while comparisons differ.
func (s *syncScheduler) compared(differs bool, now time.Time) {
	switch {
	case differs:
		s.startSyncing()
	case s.differs:
		// An equal comparison may be with a peer missing the same entries,
		// or with a digest older than a change; stop after a few in a row,
		// then check again a few times.
		if s.equalRuns++; s.equalRuns >= equalToStop {
			s.differs, s.equalRuns = false, 0
			s.tailLeft = tailChecks
			s.tailAt = now.Add(s.interval * syncWait)
		}
	}
}

func (s *syncScheduler) startSyncing() {
	s.differs, s.equalRuns, s.tailLeft = true, 0, 0
	s.notify()
}

// answered records the answer of a peer to our exchange.
func (s *syncScheduler) answered(peer string) {
	if peer == s.peer {
		s.peer = ""
	}
}

// tick runs once per SyncInterval and reports whether to start an exchange
// with a random member now; if one is started, call started.
func (s *syncScheduler) tick(now time.Time) bool {
	if s.dirty > fastSyncThreshold || s.pruned {
		s.startSyncing()
	}
	s.dirty, s.pruned = 0, false
	idle := s.peer == "" || now.Sub(s.since) > syncWait*s.interval
	tail := !s.differs && s.tailLeft > 0 && !now.Before(s.tailAt)
	if !idle || !(s.differs || tail) {
		return false
	}
	if tail {
		s.tailLeft--
		s.tailAt = now.Add(s.interval * syncWait << (tailChecks - s.tailLeft))
	}
	return true
}

// started records the exchange tick asked for.
func (s *syncScheduler) started(peer string, now time.Time) {
	s.peer, s.since = peer, now
}

// syncLoop starts extra anti-entropy exchanges: with members that came
// back (their entries were dropped here when they went), and with a random
// member when the scheduler says so. It ticks every SyncInterval while the
// scheduler has work, every idleTicks intervals while it has none.
func (m *Mesh) syncLoop() {
	wake := make(chan struct{}, 1)
	m.mu.Lock()
	m.sync.wake = wake
	m.mu.Unlock()
	t := time.NewTicker(m.cfg.SyncInterval)
	defer t.Stop()
	idle := false
	for {
		select {
		case <-m.stop:
			return
		case <-wake:
			if idle {
				// Work: ticks every interval again, the first one an
				// interval from now, so that a burst's changes add up.
				idle = false
				t.Reset(m.cfg.SyncInterval)
			}
			continue
		case <-t.C:
		}
		var targets []string
		now := time.Now()
		m.mu.Lock()
		for name, mb := range m.st.members {
			if mb.returned && len(targets) < returnSyncs {
				mb.returned = false
				targets = append(targets, name)
			}
		}
		if m.sync.tick(now) {
			if to := m.randomMembersLocked(1); len(to) > 0 {
				targets = append(targets, to[0])
				m.sync.started(to[0], now)
			}
		}
		if nowIdle := m.sync.idle() && len(targets) == 0; nowIdle != idle {
			idle = nowIdle
			if idle {
				t.Reset(m.cfg.SyncInterval * idleTicks)
			} else {
				t.Reset(m.cfg.SyncInterval)
			}
		}
		m.mu.Unlock()
		for _, to := range targets {
			m.enqueue(task{to: to, request: true})
		}
	}
}

// syncChunks splits what a peer lacks into chunks of about syncChunk
// bytes. An owner with more entries than fit in one chunk is split over
// several blocks, each with the same digest.
func syncChunks(delta []block) [][]block {
	var out [][]block
	var cur []block
	size := 0
	for _, bl := range delta {
		for start := 0; start < len(bl.Entries); {
			end := start
			for end < len(bl.Entries) && (end == start || size < syncChunk) {
				size += entrySize(&bl.Entries[end].Entry)
				end++
			}
			cur = append(cur, block{Digest: bl.Digest, Entries: bl.Entries[start:end]})
			start = end
			if size >= syncChunk {
				out, cur, size = append(out, cur), nil, 0
			}
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// syncMessages encodes what a peer lacks as blocks messages; with answer,
// the last of them is an answer message carrying it (alone if the peer
// lacks nothing).
func syncMessages(delta []block, answer *digestMsg) [][]byte {
	chunks := syncChunks(delta)
	var out [][]byte
	for i, c := range chunks {
		if i == len(chunks)-1 && answer != nil {
			return append(out, encodeAnswer(answer, c))
		}
		out = append(out, encodeBlocks(c))
	}
	if answer != nil {
		out = append(out, encodeAnswer(answer, nil))
	}
	return out
}
