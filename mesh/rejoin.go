package mesh

import (
	"context"
	"net"
	"sync"
	"time"
)

// maxParallelJoins bounds concurrent join attempts per round.
const maxParallelJoins = 8

// rejoinLoop joins, every RejoinInterval, the peers that are not alive
// members: configured and Join()ed peers always (this is how a partition
// heals and a rebooted host comes back: memberlist itself stops talking to
// a member once it is declared dead), saved peers until some join
// succeeds. The first round runs at once.
func (m *Mesh) rejoinLoop() {
	t := time.NewTicker(m.cfg.RejoinInterval)
	defer t.Stop()
	for {
		m.rejoinOnce()
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

func (m *Mesh) rejoinOnce() {
	if m.left.Load() || m.closed.Load() {
		return
	}
	targets := m.joinTargets()
	if len(targets) == 0 {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelJoins)
	for _, addr := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := m.ml.Join([]string{addr}); err != nil {
				m.bad.warn("join "+addr, "mesh peer not reachable, will retry", "peer", addr, "err", err)
				return
			}
			m.log.Info("joined mesh peer", "peer", addr)
		}()
	}
	wg.Wait()
}

// joinTargets lists the peers to try this round.
func (m *Mesh) joinTargets() []string {
	m.mu.Lock()
	alive := make(map[string]bool, len(m.st.members))
	for name, mb := range m.st.members {
		if name != m.self && (mb.State == StateAlive || mb.State == StateSuspect) {
			alive[mb.Addr] = true
		}
	}
	m.mu.Unlock()

	m.peersMu.Lock()
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
	m.peersMu.Unlock()

	var out []string
	for _, a := range cands {
		if a == m.selfAddr || alive[a] || m.resolvesToAlive(a, alive) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// resolvesToAlive reports whether a peer given by host name is an alive
// member or ourselves, so it is not joined again every round.
func (m *Mesh) resolvesToAlive(addr string, alive map[string]bool) bool {
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
		if alive[a] || a == m.selfAddr {
			return true
		}
	}
	return false
}
