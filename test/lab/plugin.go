package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The lab's plugin is created from a directory (config.json and rootfs/),
// with no registry in between, and replaced by a remove and a fresh
// create. Plugins pushed to the lab's own registry (StartRegistry) are
// installed and upgraded with "docker plugin install" and "upgrade" by
// the tests themselves.

// InstallPlugin installs and enables the plugin in dir as name on every
// host, in parallel. See Host.InstallPlugin.
func (l *Lab) InstallPlugin(ctx context.Context, dir, name string, settings ...string) error {
	return l.eachHost(func(h *Host) error { return h.InstallPlugin(ctx, dir, name, settings...) })
}

// InstallPlugin (re)installs the managed plugin in dir as name and enables
// it: it removes any plugin of that name, creates it, points its
// "docker-socket" mount at this host's dockerd socket, its "state" mount
// at StateDir and its "swarm" mount, if its config has one, at SwarmDir
// (the host's own data root's: the default, /var/lib/docker/swarm, is
// another engine's or none), applies settings ("KEY=VALUE", e.g. "LOG_LEVEL=debug"), and
// enables it.
func (h *Host) InstallPlugin(ctx context.Context, dir, name string, settings ...string) error {
	if _, err := os.Stat(dir + "/config.json"); err != nil {
		return fmt.Errorf("plugin directory %s: %w", dir, err)
	}
	if err := h.RemovePlugin(ctx, name); err != nil {
		return err
	}
	if err := os.MkdirAll(h.StateDir, 0o755); err != nil {
		return err
	}
	if _, err := h.Docker(ctx, "plugin", "create", name, dir); err != nil {
		return err
	}
	mounts := []string{"plugin", "set", name,
		"docker-socket.source=" + h.Socket,
		"state.source=" + h.StateDir,
	}
	if has, err := hasMount(dir, "swarm"); err != nil {
		return err
	} else if has {
		mounts = append(mounts, "swarm.source="+h.SwarmDir())
	}
	set := slices.Concat(mounts, settings)
	if _, err := h.Docker(ctx, set...); err != nil {
		return err
	}
	return h.EnablePlugin(ctx, name)
}

// UpgradePlugin replaces the plugin with the one in dir, as an upgrade in
// production would: the old one is disabled and removed (its networks'
// endpoints stay in the kernel), the new one created and enabled.
func (h *Host) UpgradePlugin(ctx context.Context, dir, name string, settings ...string) error {
	return h.InstallPlugin(ctx, dir, name, settings...)
}

// RemovePlugin force-disables and removes the plugin; a missing plugin is
// fine.
func (h *Host) RemovePlugin(ctx context.Context, name string) error {
	if _, err := h.Docker(ctx, "plugin", "disable", "-f", name); err != nil && !notFound(err) && !strings.Contains(err.Error(), "already disabled") {
		return err
	}
	if _, err := h.Docker(ctx, "plugin", "rm", "-f", name); err != nil && !notFound(err) {
		return err
	}
	return nil
}

// DisablePlugin force-disables the plugin, even while networks use it.
func (h *Host) DisablePlugin(ctx context.Context, name string) error {
	_, err := h.Docker(ctx, "plugin", "disable", "-f", name)
	return err
}

// EnablePlugin enables the plugin.
func (h *Host) EnablePlugin(ctx context.Context, name string) error {
	_, err := h.Docker(ctx, "plugin", "enable", name)
	return err
}

func notFound(err error) bool {
	s := err.Error()
	return strings.Contains(s, "not found") || strings.Contains(s, "No such plugin")
}

// hasMount reports whether the plugin configuration in dir declares a
// mount named name (builds before weft's key service have no "swarm").
func hasMount(dir, name string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return false, err
	}
	var cfg struct {
		Mounts []struct {
			Name string `json:"name"`
		} `json:"mounts"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return false, fmt.Errorf("plugin configuration %s: %w", dir, err)
	}
	for _, m := range cfg.Mounts {
		if m.Name == name {
			return true, nil
		}
	}
	return false, nil
}
