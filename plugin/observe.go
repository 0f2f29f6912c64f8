package plugin

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/metrics"
	"github.com/weftnet/weft/probe"
)

// observe builds what watches the others: the data-path probe, and the
// metrics read from the parts' state, registered beside the counters the
// parts registered themselves when they were built.
func observe(cfg Config, p *parts, log *slog.Logger) {
	p.probe = probe.New(probe.Config{
		Open:     probe.KernelPorts(p.kernel, cfg.VXLANPort),
		Store:    p.mesh,
		Underlay: p.underlay,
		Overhead: dataplane.Overhead,
		Logger:   log.With("component", "probe"),
	})
	p.registry.MustRegister(p.probe, metrics.NewState(metrics.Sources{
		Mesh: p.mesh, Networks: p.driver, Catalog: p.catalog, Kernel: p.kernel, UnderlayMTU: p.underlay.MTU,
	}))
}

// serveMetrics serves /metrics alone on cfg.MetricsAddr, when set, until
// ctx ends (the status listener serves it too). An address it cannot
// listen on (taken, or not yet on the host) is logged once and tried
// again every metricsRetry.
func serveMetrics(ctx context.Context, cfg Config, p *parts, log *slog.Logger) {
	if cfg.MetricsAddr == "" {
		return
	}
	var l net.Listener
	for failed := false; ; failed = true {
		var err error
		if l, err = net.Listen("tcp", cfg.MetricsAddr); err == nil {
			break
		}
		if !failed {
			log.Error("metrics endpoint unavailable; retrying", "addr", cfg.MetricsAddr, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(metricsRetry):
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(p.registry))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.Info("metrics served", "addr", cfg.MetricsAddr)
	_ = srv.Serve(l)
}

// metricsRetry is how often a metrics address that could not be listened
// on is tried again.
const metricsRetry = 2 * time.Second
