package lab

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// formSwarm makes h1 the first manager, joins h2..h<Managers> as managers
// one at a time (each raft membership change must settle), the rest as
// workers in parallel, and waits until the manager sees every node Ready.
func (l *Lab) formSwarm(ctx context.Context) error {
	m := l.Manager()
	addr := m.Addr().String()
	if _, err := m.Docker(ctx, "swarm", "init", "--advertise-addr", addr); err != nil {
		return err
	}
	workerToken, err := m.Docker(ctx, "swarm", "join-token", "-q", "worker")
	if err != nil {
		return err
	}
	managerToken, err := m.Docker(ctx, "swarm", "join-token", "-q", "manager")
	if err != nil {
		return err
	}
	join := func(h *Host, token string) error {
		_, err := h.Docker(ctx, "swarm", "join", "--token", token, "--advertise-addr", h.Addr().String(), addr+":2377")
		return err
	}
	for _, h := range l.Hosts[1:l.cfg.Managers] {
		if err := join(h, managerToken); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	workers := &Lab{cfg: l.cfg, Hosts: l.Hosts[l.cfg.Managers:]}
	if err := workers.eachHost(func(h *Host) error { return join(h, workerToken) }); err != nil {
		return err
	}
	return l.WaitSwarmReady(ctx, l.cfg.StartTimeout)
}

// WaitSwarmReady waits until the manager lists every host as a Ready
// node, and each host's engine reports itself an active swarm member.
func (l *Lab) WaitSwarmReady(ctx context.Context, timeout time.Duration) error {
	return WaitFor(ctx, timeout, 250*time.Millisecond, func() error {
		out, err := l.Manager().Docker(ctx, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")
		if err != nil {
			return err
		}
		ready := map[string]bool{}
		for _, line := range strings.Split(out, "\n") {
			if name, status, ok := strings.Cut(strings.TrimSpace(line), " "); ok && status == "Ready" {
				ready[name] = true
			}
		}
		var missing []string
		for _, h := range l.Hosts {
			if !ready[h.Name] {
				missing = append(missing, h.Name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("nodes not Ready: %s (node ls: %q)", strings.Join(missing, ", "), out)
		}
		for _, h := range l.Hosts {
			di, err := h.info(ctx)
			if err != nil {
				return err
			}
			if di.Swarm.LocalNodeState != "active" {
				return fmt.Errorf("%s: swarm state %q", h.Name, di.Swarm.LocalNodeState)
			}
		}
		return nil
	})
}
