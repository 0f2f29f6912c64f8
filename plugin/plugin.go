// Package plugin wires weft together inside the managed plugin's process:
// configuration from the environment, the logger, the kernel dataplane,
// the network and IPAM drivers, the mesh, and the servers Docker and the
// user talk to.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/ipam"
)

// Run serves the plugin until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w", cfg.StateDir, err)
	}
	kernel, err := dataplane.NewKernel(log.With("component", "dataplane"))
	if err != nil {
		return err
	}
	defer kernel.Close()

	var vtep net.IP
	if cfg.AdvertiseAddr.IsValid() {
		vtep = net.IP(cfg.AdvertiseAddr.AsSlice())
	}
	dcfg := driver.DefaultConfig()
	dcfg.Scope = cfg.Scope
	dcfg.StateDir = cfg.StateDir
	dcfg.VXLANPort = cfg.VXLANPort
	dcfg.VTEP = vtep
	dcfg.UnderlayMTU = func() int { return kernel.UnderlayMTU(vtep) }
	dcfg.Logger = log.With("component", "driver")
	drv, err := driver.New(dcfg, kernel, nil)
	if err != nil {
		return err
	}
	alloc, err := ipam.New(ipam.Config{StateDir: cfg.StateDir, Logger: log.With("component", "ipam")})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go drv.Run(ctx)

	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	_ = os.Remove(cfg.Socket)
	l, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Socket, err)
	}
	srv := &http.Server{
		Handler:           NewHandler(drv, alloc, log.With("component", "api")),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.Info("weft plugin serving", "socket", cfg.Socket, "scope", cfg.Scope, "vxlan_port", cfg.VXLANPort, "state", cfg.StateDir)

	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve plugin API: %w", err)
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	return nil
}
