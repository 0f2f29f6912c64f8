// Command weft is both weft's managed-plugin entrypoint (`weft plugin`) and
// the user's command-line tool on a host (`weft status`).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftnet/weft/plugin"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `weft: a Docker network plugin meshing containers across hosts with kernel VXLAN.

Usage:
  weft plugin            serve the plugin (the managed plugin's entrypoint)
  weft status [--json]   print this host's view of weft (run on a host)
  weft key ...           manage the mesh's cluster key (weft key for help)
  weft tunnel rotate     replace this host's WireGuard key now (encrypted networks)
  weft version           print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "plugin":
		return servePlugin(stdout, stderr)
	case "status":
		return runStatus(args[1:], stdout, stderr)
	case "key":
		return runKey(args[1:], os.Stdin, stdout, stderr)
	case "tunnel":
		return runTunnel(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "weft", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "weft: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func servePlugin(stdout, stderr io.Writer) int {
	cfg, err := plugin.EnvConfig()
	if err != nil {
		fmt.Fprintln(stderr, "weft:", err)
		return 1
	}
	log := slog.New(newSplitHandler(stdout, stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	plugin.Version = version
	log.Info("weft starting", "version", version)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := plugin.Run(ctx, cfg, log); err != nil {
		log.Error("weft stopped", "err", err)
		return 1
	}
	log.Info("weft stopped")
	return 0
}
