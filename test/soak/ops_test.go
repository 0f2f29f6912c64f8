package soak

// What each kind of operation does to the lab. Every one returns with the
// lab in the state the model says (faults undone), or an error.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// meshKeyring is the mesh's keyring file in a state directory: a
// state-damage leaves it be (a garbled keyring is TestStateDirLost's).
const meshKeyring = "mesh-keys.json"

// partitionTag marks the soak's iptables rules, to remove them.
const partitionTag = "weft-soak-partition"

// purgeWithin bounds how soon each side of a partition forgets the other.
const purgeWithin = 10 * time.Second

// do carries op out on l. restarted names the host whose plugin the op
// restarts on purpose (nil: none); purged, for a partition, is how long
// its sides took to forget each other.
func do(ctx context.Context, l *lab.Lab, m *Model, op Op) (restarted *lab.Host, purged time.Duration, err error) {
	h := l.Hosts[op.Host]
	mgr := l.Manager()
	docker := func(h *lab.Host, args ...string) error {
		c, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		_, err := h.Docker(c, args...)
		return err
	}
	switch op.Kind {
	case CtrStart:
		_, err = labtest.Start(ctx, h, op.Name, op.Net)
	case CtrStop:
		err = docker(h, "stop", "-t", "2", op.Name)
	case CtrKill:
		if err = docker(h, "kill", op.Name); err == nil {
			err = docker(h, "wait", op.Name)
		}
	case CtrRestart:
		err = docker(h, "start", op.Name)
	case CtrRemove:
		err = docker(h, "rm", op.Name)
	case SvcCreate:
		// The serving command ignores SIGTERM (pid 1): a short grace.
		args := []string{"service", "create", "--detach", "--no-resolve-image", "--stop-grace-period", "2s", "--name", op.Name, "--network", op.Net, "--replicas", fmt.Sprint(op.Replicas)}
		if !op.VIP {
			args = append(args, "--endpoint-mode", "dnsrr")
		}
		err = docker(mgr, append(append(args, lab.ImageTag), lab.ServerCmd...)...)
	case SvcScale:
		err = docker(mgr, "service", "update", "--detach", "--replicas", fmt.Sprint(op.Replicas), op.Name)
	case SvcRemove:
		err = docker(mgr, "service", "rm", op.Name)
	case NetCreate:
		args := []string{"network", "create", "-d", pluginName, "--scope", "swarm", "--attachable", "--subnet", op.Subnet}
		if op.Crypt {
			args = append(args, "-o", "encrypted")
		}
		err = docker(mgr, append(args, op.Name)...)
	case WGRotate:
		var out string
		if out, err = labtest.WeftCLI(ctx, h, "tunnel", "--state", h.StateDir, "rotate"); err != nil {
			err = fmt.Errorf("weft tunnel rotate: %w: %s", err, strings.TrimSpace(out))
		}
	case NetRemove:
		for _, s := range m.Svcs {
			if s.Net == op.Name {
				err = errors.Join(err, docker(mgr, "service", "rm", s.Name))
			}
		}
		for _, c := range m.Ctrs {
			if c.Net == op.Name {
				err = errors.Join(err, docker(l.Hosts[c.Host], "rm", "-f", c.Name))
			}
		}
		if err == nil {
			err = labtest.RemoveNetwork(ctx, mgr, op.Name, 2*time.Minute)
		}
	case PluginRestart:
		restarted = h
		old, _ := labtest.FindPluginPID(h)
		if err = docker(h, "plugin", "disable", "-f", pluginName); err == nil {
			if err = docker(h, "plugin", "enable", pluginName); err == nil {
				err = waitPlugin(ctx, h, old)
			}
		}
	case PluginKill:
		restarted = h
		var pid int
		if pid, err = labtest.FindPluginPID(h); err == nil {
			if err = syscall.Kill(pid, syscall.SIGKILL); err == nil {
				// Docker starts a managed plugin again when its process ends.
				err = waitPlugin(ctx, h, pid)
			}
		}
	case PluginDown:
		restarted = h
		old, _ := labtest.FindPluginPID(h)
		if err = docker(h, "plugin", "disable", "-f", pluginName); err == nil {
			// The time down is the operation, not a wait.
			time.Sleep(op.Dur)
			if err = docker(h, "plugin", "enable", pluginName); err == nil {
				err = waitPlugin(ctx, h, old)
			}
		}
	case StateDamage:
		restarted = h
		old, _ := labtest.FindPluginPID(h)
		if err = docker(h, "plugin", "disable", "-f", pluginName); err != nil {
			return
		}
		derr := damage(h.StateDir, op.Damage)
		err = docker(h, "plugin", "enable", pluginName)
		if err == nil {
			err = waitPlugin(ctx, h, old)
		}
		err = errors.Join(derr, err)
	case EngineRestart:
		restarted = h
		old, _ := labtest.FindPluginPID(h)
		if err = h.StopEngine(ctx); err != nil {
			return
		}
		if err = h.StartEngine(ctx); err != nil {
			return
		}
		if err = l.WaitSwarmReady(ctx, 3*time.Minute); err == nil {
			err = waitPlugin(ctx, h, old)
		}
	case LinkCut:
		if err = h.CutUnderlay(ctx); err != nil {
			return
		}
		time.Sleep(op.Dur)
		err = h.RestoreUnderlay(ctx)
	case Partition:
		if err = partition(ctx, l, h, true); err != nil {
			_ = partition(ctx, l, h, false)
			return
		}
		cut := time.Now()
		// Each side forgets the other, and only the other, within
		// purgeWithin (the mesh's failure detection and a margin).
		var rest []*lab.Host
		for _, o := range l.Hosts {
			if o != h {
				rest = append(rest, o)
			}
		}
		err = lab.WaitFor(ctx, purgeWithin, 250*time.Millisecond, func() error {
			return errors.Join(labtest.Check(ctx, rest), labtest.Check(ctx, []*lab.Host{h}))
		})
		if err != nil {
			err = fmt.Errorf("the sides of the partition did not forget each other within %s: %w", purgeWithin, err)
		} else {
			purged = time.Since(cut)
			// The partition's length is the operation, not a wait.
			time.Sleep(time.Until(cut.Add(op.Dur)))
		}
		err = errors.Join(err, partition(ctx, l, h, false))
	default:
		err = fmt.Errorf("unknown operation kind %s", op.Kind)
	}
	return restarted, purged, err
}

// waitPlugin waits until a plugin process other than old serves weft's
// status on h.
func waitPlugin(ctx context.Context, h *lab.Host, old int) error {
	return lab.WaitFor(ctx, 2*time.Minute, 100*time.Millisecond, func() error {
		pid, err := labtest.FindPluginPID(h)
		if err != nil {
			return err
		}
		if pid == old {
			return fmt.Errorf("old plugin process %d still runs on %s", pid, h.Name)
		}
		_, err = labtest.FetchStatus(ctx, h)
		return err
	})
}

// partition drops (on) or lets through again (off) all underlay traffic
// between h and the lab's other hosts, by iptables rules in h's namespace:
// the link stays up, packets vanish.
func partition(ctx context.Context, l *lab.Lab, h *lab.Host, on bool) error {
	var others []string
	for _, o := range l.Hosts {
		if o != h {
			others = append(others, o.Addr().String())
		}
	}
	peers := strings.Join(others, ",")
	op := "-I"
	if !on {
		op = "-D"
	}
	var errs error
	for _, rule := range [][]string{
		{"INPUT", "-s", peers},
		{"OUTPUT", "-d", peers},
	} {
		args := append([]string{"-w", op, rule[0]}, rule[1:]...)
		args = append(args, "-m", "comment", "--comment", partitionTag, "-j", "DROP")
		if _, err := h.Exec(ctx, "iptables", args...); err != nil {
			errs = errors.Join(errs, fmt.Errorf("%s: %w", h.Name, err))
		}
	}
	return errs
}

// damage empties dir ("missing") or overwrites its regular files but the
// mesh's keyring with garbage ("corrupt").
func damage(dir, how string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch {
		case how == "missing":
			err = errors.Join(err, os.RemoveAll(p))
		case e.Type().IsRegular() && e.Name() != meshKeyring:
			err = errors.Join(err, os.WriteFile(p, []byte("{\x00garbage\xff"), 0o600))
		}
	}
	return err
}
