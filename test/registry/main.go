// Command registry runs a container registry (distribution's, the
// reference implementation behind Docker Hub's) for weft's end-to-end
// tests: `make release` pushes the plugin to it and the lab's engines
// install and upgrade the plugin from it, as operators do from theirs.
//
// It is its own module so that the registry's many dependencies stay out
// of weft's go.mod; the tests build it with `go build` in this directory
// (hack/setup.sh downloads its modules beforehand).
//
// It serves plain HTTP on -addr, storing in memory (or in -dir), with no
// authentication, and logs warnings only: the lab's engines reach it as an
// insecure registry (dockerd --insecure-registry), so no certificate has to
// be placed where every engine on the machine would read it.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "address:port to serve on")
	dir := flag.String("dir", "", "store blobs and manifests in this directory (default: in memory)")
	logLevel := flag.String("log-level", "warn", "error, warn, info or debug")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "registry: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if err := run(*addr, *dir, *logLevel); err != nil {
		fmt.Fprintf(os.Stderr, "registry: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, dir, logLevel string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("-addr %q: want address:port", addr)
	}
	// distribution exports its traces by OTLP unless told otherwise; the
	// lab has no collector.
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" {
		os.Setenv("OTEL_TRACES_EXPORTER", "none")
	}
	cfg := &configuration.Configuration{}
	cfg.Version = configuration.CurrentVersion
	cfg.Log.Level = configuration.Loglevel(logLevel)
	cfg.Log.AccessLog.Disabled = logLevel != "debug"
	cfg.HTTP.Addr = addr
	cfg.HTTP.Net = "tcp"
	// One registry, so any secret will do (upload state is signed with
	// it); set, so that it does not warn about making one up.
	cfg.HTTP.Secret = rand.Text()
	// Graceful stop on SIGTERM or SIGINT (ListenAndServe handles them).
	cfg.HTTP.DrainTimeout = 2 * time.Second
	if dir == "" {
		cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{}}
	} else {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cfg.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": dir}}
	}
	cfg.Storage["delete"] = configuration.Parameters{"enabled": true}

	reg, err := registry.NewRegistry(context.Background(), cfg)
	if err != nil {
		return err
	}
	return reg.ListenAndServe()
}
