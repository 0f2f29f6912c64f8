package lab

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// A lab has room for one container registry, on its underlay: the bridge's
// address in the root namespace, port Config.RegistryPort. Every engine
// trusts that address as an insecure registry (plain HTTP, dockerd's
// --insecure-registry), so "docker plugin push", "install" and "upgrade"
// work against it as against any registry. Plain HTTP rather than TLS with
// a lab CA: dockerd reads registry CAs from /etc/docker/certs.d, one
// directory for every engine on the machine, which the lab does not own;
// the flag stays within the lab's own engines.
//
// The registry program is the caller's (weft's tests build distribution's
// from test/registry); the lab runs it, finds it again to clean up, and
// keeps its storage and log with its own.

// RegistryProgram is the base name a registry binary must have for the
// lab's cleanup to recognise it: StartRegistry's process carries the lab's
// paths in its arguments, and cleanup looks for them in processes of known
// names only.
const RegistryProgram = "registry"

// RegistryAddr is where the lab's registry serves: the underlay bridge's
// address and Config.RegistryPort, as image and plugin references name it
// ("198.18.0.254:5000/weft:1.0").
func (l *Lab) RegistryAddr() string { return l.cfg.registryAddr() }

func (c Config) registryAddr() string {
	return netip.AddrPortFrom(c.Underlay.Addr(), uint16(c.RegistryPort)).String()
}

// registryDir is where the registry keeps what is pushed to it.
func (c Config) registryDir() string { return filepath.Join(c.StateRoot, "registry") }

// Registry is the lab's running registry.
type Registry struct {
	// Addr is where it serves (Lab.RegistryAddr).
	Addr string
	// Log holds its output.
	Log string

	d *daemon
}

// StartRegistry runs binary, a registry program named RegistryProgram that
// takes "-addr host:port" and "-dir path" (test/registry's), in the root
// namespace on RegistryAddr, storing under the lab's state root, and waits
// until it answers the registry API. Storage starts empty. Stop it with
// Registry.Stop; Down stops it too.
func (l *Lab) StartRegistry(ctx context.Context, binary string) (*Registry, error) {
	c := l.cfg
	if filepath.Base(binary) != RegistryProgram {
		return nil, fmt.Errorf("registry binary %s: name it %q so that the lab's cleanup finds it", binary, RegistryProgram)
	}
	if err := os.RemoveAll(c.registryDir()); err != nil {
		return nil, err
	}
	r := &Registry{
		Addr: c.registryAddr(),
		Log:  filepath.Join(c.logDir(), "registry.log"),
	}
	r.d = &daemon{
		name:    "registry",
		pidFile: filepath.Join(c.RunRoot, "registry.lab.pid"),
		logFile: r.Log,
		marker:  c.registryDir(),
		argv:    []string{binary, "-addr", r.Addr, "-dir", c.registryDir()},
	}
	if _, running := r.d.pid(); running {
		return nil, fmt.Errorf("lab %s: a registry runs already on %s", c.Name, r.Addr)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	start := time.Now()
	err := r.d.start(ctx, c.StartTimeout, func() error {
		resp, err := client.Get("http://" + r.Addr + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		_ = r.d.stop(syscall.SIGKILL, time.Second)
		return nil, err
	}
	c.logf("registry serves on %s after %s", r.Addr, time.Since(start).Round(time.Millisecond))
	return r, nil
}

// Stop stops the registry and removes what was pushed to it.
func (r *Registry) Stop() error {
	if err := r.d.stop(syscall.SIGTERM, 5*time.Second); err != nil {
		return err
	}
	return os.RemoveAll(r.d.marker)
}
