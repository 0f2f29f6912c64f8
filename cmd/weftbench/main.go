// Command weftbench measures weft side by side with the bare underlay and
// Docker's overlay (package github.com/weftnet/weft/bench), and carries the
// small load tools the measurement runs inside the lab's containers.
//
//	weftbench run [-smoke] [-reps 3] [-parts scale,data,control,dns,kernel,idle,vip,ipv6] [-mtus 1500,9000]
//	              [-containers 20] [-weft-dns gateway|IP[:port]] [-plugin build/plugin] [-out bench] [-keep] [-merge]
//	weftbench report [-out bench]      # RESULTS.md and results.png again from results.json
//	weftbench down                     # remove a bench lab left up (-keep, or an interrupted run)
//
// Tools (run in the lab by the harness; the binary is static):
//
//	weftbench rrserver -l :7000
//	weftbench rrclient -addr IP:7000 -d 5s
//	weftbench connrate -addr IP:7000[,IP:7000...] -d 5s -c 4
//	weftbench reach -addr IP:7000 -interval 20ms -timeout 30s
//	weftbench dnsload -server 127.0.0.11:53 -name NAME -clients 8 -d 5s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/bench"
	"github.com/weftnet/weft/test/lab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "run":
		err = run(args)
	case "report":
		err = report(args)
	case "down":
		err = down()
	case "rrserver":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		l := fs.String("l", ":7000", "listen address")
		_ = fs.Parse(args)
		err = bench.RRServer(*l)
	case "rrclient":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		addr := fs.String("addr", "", "server ip:port")
		d := fs.Duration("d", 5*time.Second, "test length")
		maxN := fs.Int("max", 5_000_000, "at most this many transactions")
		_ = fs.Parse(args)
		var r bench.RRResult
		if r, err = bench.RRClient(*addr, *d, *maxN); err == nil {
			err = bench.PrintJSON(os.Stdout, r)
		}
	case "connrate":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		addr := fs.String("addr", "", "server ip:port (or name:port), comma-separated to take several in turn")
		d := fs.Duration("d", 5*time.Second, "test length")
		workers := fs.Int("c", 4, "concurrent workers")
		maxN := fs.Int("max", 2_000_000, "at most this many connections")
		_ = fs.Parse(args)
		var r bench.ConnResult
		if r, err = bench.ConnRate(strings.Split(*addr, ","), *d, *workers, *maxN); err == nil {
			err = bench.PrintJSON(os.Stdout, r)
		}
	case "reach":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		addr := fs.String("addr", "", "target ip:port")
		interval := fs.Duration("interval", 20*time.Millisecond, "time between tries, and bound of one try")
		timeout := fs.Duration("timeout", 30*time.Second, "give up after")
		_ = fs.Parse(args)
		err = bench.Reach(*addr, *interval, *timeout, os.Stdout)
	case "dnsload":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		server := fs.String("server", "127.0.0.11:53", "DNS server ip:port")
		name := fs.String("name", "", "name to query (A)")
		clients := fs.Int("clients", 1, "concurrent clients, one query in flight each")
		d := fs.Duration("d", 5*time.Second, "test length")
		maxN := fs.Int("max", 2_000_000, "at most this many queries in all")
		_ = fs.Parse(args)
		var r bench.DNSResult
		if r, err = bench.DNSLoad(*server, *name, *clients, *d, *maxN); err == nil {
			err = bench.PrintJSON(os.Stdout, r)
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "weftbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  weftbench run [-smoke] [-reps N] [-parts scale,data,control,dns,kernel,idle,vip,ipv6] [-mtus 1500,9000]
                [-containers N] [-weft-dns gateway|IP[:port]] [-plugin DIR] [-out DIR] [-keep]
  weftbench report [-out DIR]
  weftbench down
  weftbench rrserver|rrclient|connrate|reach|dnsload ...   (tools the harness runs in the lab)`)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000")+" "+format+"\n", args...)
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	smoke := fs.Bool("smoke", false, "a short run: one repetition of everything, small sizes")
	reps := fs.Int("reps", 0, "repetitions of every figure (default 3, smoke 1)")
	parts := fs.String("parts", "", "comma-separated parts: scale,data,control,dns,kernel,idle,vip,ipv6 (default all)")
	mtus := fs.String("mtus", "", "comma-separated underlay MTUs (default 1500,9000; smoke 1500)")
	containers := fs.Int("containers", 0, "containers per network and repetition for run-to-reachable (default 20)")
	weftDNS := fs.String("weft-dns", "gateway", `weft's DNS to load: "gateway" (the weft network's gateway), IP[:port], or "" to leave it out`)
	plugin := fs.String("plugin", "build/plugin", "managed plugin directory (make plugin-dir)")
	out := fs.String("out", "bench", "where RESULTS.md, results.json and results.png go")
	keep := fs.Bool("keep", false, "leave the last lab up")
	merge := fs.Bool("merge", false, "keep the parts not run from the results.json already in -out")
	_ = fs.Parse(args)

	o := bench.DefaultOptions()
	if *smoke {
		o = bench.SmokeOptions()
	}
	if *reps > 0 {
		o.Reps = *reps
	}
	if *parts != "" {
		o.Parts = strings.Split(*parts, ",")
	}
	if *mtus != "" {
		o.MTUs = nil
		for _, s := range strings.Split(*mtus, ",") {
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("-mtus: %w", err)
			}
			o.MTUs = append(o.MTUs, n)
		}
	}
	if *containers > 0 {
		o.Containers = *containers
	}
	o.WeftDNS = *weftDNS
	o.OutDir = *out
	o.KeepLab = *keep
	o.Merge = *merge
	o.Logf = logf
	var err error
	if o.PluginDir, err = filepath.Abs(*plugin); err != nil {
		return err
	}
	if o.Self, err = os.Executable(); err != nil {
		return err
	}
	if o.Self, err = filepath.EvalSymlinks(o.Self); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := bench.Run(ctx, o)
	if r != nil {
		logf("wrote %s (%.0f min)", filepath.Join(o.OutDir, "RESULTS.md"), r.Seconds/60)
	}
	return err
}

func report(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	out := fs.String("out", "bench", "directory holding results.json")
	_ = fs.Parse(args)
	r, err := bench.LoadResults(filepath.Join(*out, "results.json"))
	if err != nil {
		return err
	}
	return bench.WriteOutputs(r, *out)
}

// down removes the bench's labs: the main one and the IPv6 part's.
func down() error {
	ctx := context.Background()
	var errs []error
	for _, cfg := range []lab.Config{bench.LabConfig("", 1500, logf), bench.IPv6LabConfig("", logf)} {
		if l, err := lab.Open(cfg); err == nil {
			errs = append(errs, l.Down(ctx))
			continue
		}
		errs = append(errs, lab.Clean(ctx, cfg))
	}
	return errors.Join(errs...)
}
