package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Lab is a running set of Docker hosts. Its methods are safe for
// concurrent use, except Down.
type Lab struct {
	// Hosts are h1..hN, in order. Do not modify the slice.
	Hosts []*Host

	cfg Config
}

// Up clears whatever a previous run of the same lab left behind, then
// builds the underlay, starts every host's containerd and dockerd, and, as
// cfg asks, imports the test image, installs the plugin and forms the swarm.
// If it fails it tears down what it made, keeping the daemons' logs (their
// path is in the error) until the next Up.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := clean(ctx, c, false); err != nil {
		return nil, fmt.Errorf("clear leftovers of an earlier run: %w", err)
	}
	if err := os.RemoveAll(c.logDir()); err != nil {
		return nil, err
	}

	l := &Lab{cfg: c}
	success := false
	defer func() {
		if success {
			return
		}
		c.KeepLogs = true
		if err := clean(context.WithoutCancel(ctx), c, false); err != nil {
			c.logf("teardown after failed Up: %v", err)
		}
	}()

	for i := 1; i <= c.Hosts; i++ {
		h, err := newHost(c, i)
		if err != nil {
			return nil, err
		}
		l.Hosts = append(l.Hosts, h)
	}
	for _, d := range []string{c.StateRoot, c.RunRoot, c.logDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	for _, h := range l.Hosts {
		for _, d := range []string{h.stateRoot, h.runDir, h.StateDir} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
	}
	if err := l.save(); err != nil {
		return nil, err
	}

	c.logf("creating underlay %s (%s, MTU %d) and %d hosts", c.Bridge, c.Underlay, c.MTU, c.Hosts)
	if err := setupBridge(ctx, c); err != nil {
		return nil, err
	}
	for _, h := range l.Hosts {
		if err := setupHostNet(ctx, c, h); err != nil {
			return nil, err
		}
	}
	err = l.eachHost(func(h *Host) error {
		if err := h.startContainerd(ctx); err != nil {
			return err
		}
		return h.startDockerd(ctx)
	})
	if err != nil {
		return nil, l.failed(err)
	}
	c.logf("%d engines up after %s", c.Hosts, time.Since(start).Round(time.Millisecond))

	if c.Image {
		t := time.Now()
		if err := l.importImage(ctx); err != nil {
			return nil, l.failed(err)
		}
		c.logf("image %s imported on every host in %s", ImageTag, time.Since(t).Round(time.Millisecond))
	}
	if c.PluginDir != "" {
		t := time.Now()
		if err := l.InstallPlugin(ctx, c.PluginDir, c.PluginName, c.PluginSettings...); err != nil {
			return nil, l.failed(err)
		}
		c.logf("plugin %s enabled on every host in %s", c.PluginName, time.Since(t).Round(time.Millisecond))
	}
	if c.Swarm {
		t := time.Now()
		if err := l.formSwarm(ctx); err != nil {
			return nil, l.failed(err)
		}
		c.logf("swarm of %d nodes (%d managers) ready in %s", c.Hosts, c.Managers, time.Since(t).Round(time.Millisecond))
	}
	c.logf("up in %s", time.Since(start).Round(time.Millisecond))
	success = true
	return l, nil
}

// Open returns the lab that an earlier Up (possibly of another process)
// left running, found by cfg's Name and RunRoot. Only cfg.Logf is taken
// from cfg; the rest comes from what Up recorded.
func Open(cfg Config) (*Lab, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(c.stateFile())
	if err != nil {
		return nil, fmt.Errorf("lab %s is not up: %w", c.Name, err)
	}
	var saved Config
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("read %s: %w", c.stateFile(), err)
	}
	saved.Logf = cfg.Logf
	if saved, err = saved.withDefaults(); err != nil {
		return nil, err
	}
	l := &Lab{cfg: saved}
	for i := 1; i <= saved.Hosts; i++ {
		h, err := newHost(saved, i)
		if err != nil {
			return nil, err
		}
		l.Hosts = append(l.Hosts, h)
	}
	return l, nil
}

// Down stops every daemon (dockerd first, so it stops its containers and
// plugins), then removes all the lab made. It works on a lab whose Up
// failed halfway, and does nothing more on a lab already down.
func (l *Lab) Down(ctx context.Context) error {
	start := time.Now()
	err := clean(ctx, l.cfg, true)
	l.cfg.logf("down in %s", time.Since(start).Round(time.Millisecond))
	return err
}

// Config returns the lab's configuration, defaults filled in.
func (l *Lab) Config() Config { return l.cfg }

// Manager returns the host that initialized the swarm (h1), a manager
// whenever Config.Swarm is set.
func (l *Lab) Manager() *Host { return l.Hosts[0] }

// Host returns the host named name ("h2"), or nil.
func (l *Lab) Host(name string) *Host {
	for _, h := range l.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// LogTails returns the last n lines of every host's dockerd log, headed by
// the host's name, for a failing test to print.
func (l *Lab) LogTails(n int) string {
	var b strings.Builder
	for _, h := range l.Hosts {
		fmt.Fprintf(&b, "==== %s %s (last %d lines)\n%s\n", h.Name, h.DockerdLog, n, h.LogTail(n))
	}
	return b.String()
}

// save records the config for Open.
func (l *Lab) save() error {
	b, err := json.MarshalIndent(l.cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(l.cfg.stateFile(), append(b, '\n'), 0o644)
}

// failed adds where the logs are to an error of Up.
func (l *Lab) failed(err error) error {
	return fmt.Errorf("%w (daemon logs kept in %s until the next Up)", err, l.cfg.logDir())
}

// eachHost runs fn for every host in parallel and joins their errors.
func (l *Lab) eachHost(fn func(h *Host) error) error {
	errs := make([]error, len(l.Hosts))
	var wg sync.WaitGroup
	for i, h := range l.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(h); err != nil {
				errs[i] = fmt.Errorf("%s: %w", h.Name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
