package mesh

// This file owns telling a member whose weft is down from one whose host
// is gone. memberlist finds a member dead when its weft stops answering,
// whatever the reason: the plugin disabled, restarting or being upgraded,
// while its host's kernel entries and containers carry traffic on; or the
// host lost. So a member found dead goes down (state.memberFailed), its
// entries still shown, and its host is probed at once with something that
// needs no weft process there: by default a TCP connect to its gossip
// port, which a live kernel answers whether or not anything listens (a
// connection, or a reset); a timeout or an unreachable host means gone.
// The first probe the host does not answer makes the member dead, its
// entries withdrawn: a host lost is purged as fast as memberlist's news
// alone did it, plus one probe. While the host answers, it is probed again
// every HostProbeInterval, for at most the member's DownGrace: the one it
// announced in its node metadata (Config.DownGrace there), so that the
// host whose weft goes down decides how long it may stay down.
//
// Probing is bounded: at most maxProbes at a time, each down member at
// most once per HostProbeInterval. A member whose host is gone leaves the
// set after one failed probe, so what stays probed are live hosts, which
// answer at once.
//
// The rules (who is probed when, what an answer does) are state's; this
// file runs the probes, with Mesh.mu released.

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// maxProbes bounds the host probes running at once.
const maxProbes = 8

// HostProber is implemented by transports that can tell whether a host
// answers, as MemTransport does for the hosts it emulates; the mesh then
// probes through it unless Config.HostProbe is set.
type HostProber interface {
	// ProbeHost returns nil if the host of addr ("ip:port") answers.
	ProbeHost(ctx context.Context, addr string) error
}

// TCPProbe is the default Config.HostProbe: it connects to addr over TCP.
// A host whose kernel is alive answers, whether something listens there
// (the connection is closed at once) or not (a reset, or an ICMP port
// unreachable: the connect is refused); a connect that times out or finds
// the host unreachable means the host is gone.
func TCPProbe(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		return c.Close()
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return err
}

// probeResult is a finished probe.
type probeResult struct {
	p   probeTarget
	err error
}

// livenessLoop probes the hosts of down members and ends the down grace
// of those whose time is up. A member going down wakes it at once
// (probeNow).
func (m *Mesh) livenessLoop() {
	tick := min(max(m.cfg.HostProbeInterval/4, 10*time.Millisecond), 250*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan probeResult)
	running := 0
	for {
		select {
		case <-m.stop:
			cancel()
			for ; running > 0; running-- {
				<-results
			}
			return
		case <-t.C:
		case <-m.probeNow:
		case r := <-results:
			running--
			m.probed(r)
		}
		now := time.Now()
		m.mu.Lock()
		expired := m.st.expireDown(now)
		due := m.st.probesDue(now, m.cfg.HostProbeInterval, maxProbes-running)
		if len(expired) > 0 {
			m.peersDirty = true
		}
		m.mu.Unlock()
		for _, name := range expired {
			m.log.Info("mesh member down for longer than its grace; withdrawing its entries", "peer", name)
		}
		if len(expired) > 0 {
			m.notify()
		}
		for _, p := range due {
			running++
			go func() {
				pctx, pcancel := context.WithTimeout(ctx, m.cfg.HostProbeTimeout)
				err := m.cfg.HostProbe(pctx, p.addr)
				pcancel()
				results <- probeResult{p: p, err: err}
			}()
		}
	}
}

// probed applies the answer of one probe.
func (m *Mesh) probed(r probeResult) {
	now := time.Now()
	m.mu.Lock()
	dead := m.st.hostProbed(r.p, r.err == nil, now)
	if dead {
		m.peersDirty = true
	}
	m.mu.Unlock()
	if dead {
		m.log.Info("mesh member dead: its host does not answer either; withdrawing its entries", "peer", r.p.name, "addr", r.p.addr, "err", r.err)
		m.notify()
	}
}

// wakeProber has the liveness loop look for probes to run at once.
func (m *Mesh) wakeProber() {
	select {
	case m.probeNow <- struct{}{}:
	default:
	}
}
