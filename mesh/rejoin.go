package mesh

// This file owns the peers: the addresses this member joins (configured,
// given to Start or Join, or saved in peers.json), and the loop that joins
// those that are not alive members, with backoff. Mesh.mu guards the peer
// sets; joins run with it released.

import (
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// maxParallelJoins bounds concurrent join attempts per round.
const maxParallelJoins = 8

// rejoinBackoffMult caps the backoff between attempts on a peer, in
// RejoinIntervals, while other members are alive.
const rejoinBackoffMult = 30

// rejoinLoop joins the peers that are not alive members: configured and
// Join()ed peers always (this is how a partition heals and a rebooted host
// comes back: memberlist itself stops talking to a member once it is
// declared dead), saved peers until some join succeeds. The first round
// runs at once.
//
// While this node is isolated it tries every RejoinInterval. While other
// members are alive it backs off per peer, with jitter, up to
// rejoinBackoffMult intervals: a peer that comes back is announced by
// gossip anyway, and a join is a full state exchange, so hundreds of hosts
// re-joining a returning manager every second would bury it.
func (m *Mesh) rejoinLoop() {
	t := time.NewTicker(m.cfg.RejoinInterval)
	defer t.Stop()
	backoff := make(map[string]*rejoinState)
	for {
		m.rejoinOnce(backoff, time.Now())
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

// rejoinState is the backoff of one peer address.
type rejoinState struct {
	failures int
	next     time.Time
}

func (m *Mesh) rejoinOnce(backoff map[string]*rejoinState, now time.Time) {
	targets, isolated, ok := m.joinTargets()
	if !ok {
		return
	}
	for a := range backoff {
		if !slices.Contains(targets, a) {
			delete(backoff, a) // alive again: start afresh next time
		}
	}
	var due []string
	for _, a := range targets {
		b := backoff[a]
		if b == nil {
			b = &rejoinState{}
			backoff[a] = b
		}
		if isolated || !now.Before(b.next) {
			due = append(due, a)
		}
	}
	if len(due) == 0 {
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards the backoff entries of due
	sem := make(chan struct{}, maxParallelJoins)
	for _, addr := range due {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := m.ml.Join([]string{addr})
			mu.Lock()
			defer mu.Unlock()
			b := backoff[addr]
			if err != nil {
				b.failures++
				d := m.cfg.RejoinInterval << min(b.failures, 16)
				d = min(d, rejoinBackoffMult*m.cfg.RejoinInterval)
				d = d/2 + rand.N(d) // jitter: 0.5 to 1.5 times
				b.next = time.Now().Add(d)
				m.bad.warn("join "+addr, "mesh peer not reachable, will retry", "peer", addr, "err", err)
				return
			}
			b.failures, b.next = 0, time.Now().Add(m.cfg.RejoinInterval)
			m.log.Info("joined mesh peer", "peer", addr)
		}()
	}
	wg.Wait()
}

// joinTargets lists the peers that are not alive members, and whether no
// other member is alive; ok is false once the member left or closed.
func (m *Mesh) joinTargets() (targets []string, isolated, ok bool) {
	m.mu.Lock()
	if m.left || m.phase != phaseRunning {
		m.mu.Unlock()
		return nil, false, false
	}
	alive := make(map[string]bool, len(m.st.members))
	for name, mb := range m.st.members {
		if name != m.self && (mb.State == StateAlive || mb.State == StateSuspect) {
			alive[mb.Addr] = true
		}
	}
	selfAddr := m.selfAddr
	cands := make([]string, 0, len(m.peers)+len(m.boot))
	for a := range m.peers {
		cands = append(cands, a)
	}
	if len(alive) == 0 {
		for a := range m.boot {
			if !m.peers[a] {
				cands = append(cands, a)
			}
		}
	} else {
		// Joined: the saved peers have done their job.
		clear(m.boot)
	}
	m.mu.Unlock()

	for _, a := range cands {
		if a == selfAddr || alive[a] || resolvesToAlive(a, selfAddr, alive) {
			continue
		}
		targets = append(targets, a)
	}
	return targets, len(alive) == 0, true
}

// resolvesToAlive reports whether a peer given by host name is an alive
// member or ourselves, so it is not joined again every round.
func resolvesToAlive(addr, selfAddr string, alive map[string]bool) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		a := net.JoinHostPort(ip, port)
		if alive[a] || a == selfAddr {
			return true
		}
	}
	return false
}

// addPeers adds addresses to the peers retried for ever and returns them
// normalised, without our own. Caller holds mu (or, in New, owns m alone).
func (m *Mesh) addPeers(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if n, ok := normalizeAddr(a, m.cfg.Port); ok {
			m.peers[n] = true
			if n != m.selfAddr {
				out = append(out, n)
			}
		}
	}
	return out
}

// normalizeAddr turns "ip", "ip:port", "host" or "host:port" into
// "host:port", with port as the default.
func normalizeAddr(a string, port int) (string, bool) {
	if a == "" {
		return "", false
	}
	if host, p, err := net.SplitHostPort(a); err == nil {
		if host == "" || p == "" {
			return "", false
		}
		return net.JoinHostPort(host, p), true
	}
	// No port, or an IPv6 literal without brackets.
	if ip := net.ParseIP(a); ip != nil {
		return net.JoinHostPort(ip.String(), strconv.Itoa(port)), true
	}
	return net.JoinHostPort(a, strconv.Itoa(port)), true
}
