// Command weftlab brings up and drives a lab of Docker hosts on this machine
// (see package github.com/weftnet/weft/test/lab), for humans and demos.
//
//	weftlab up [-hosts 3] [-swarm] [-managers 1] [-image] [-plugin DIR] [-plugin-name weft:latest] [-set KEY=VALUE]... [-mtu 1500] [-log-level info]
//	weftlab down
//	weftlab status
//	weftlab docker h2 ps -a
//	weftlab exec h2 ip addr
//	weftlab env h2          # prints export DOCKER_HOST=unix://...
//
// The daemons that up starts keep running after it exits; down finds them
// again from what up recorded and by scanning the machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/test/lab"
)

func main() {
	log := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000")+" "+format+"\n", args...)
	}
	global := flag.NewFlagSet("weftlab", flag.ExitOnError)
	name := global.String("name", lab.DefaultConfig().Name, "lab name (namespaces <name>-h<i>, dirs /var/lib/<name>, /run/<name>)")
	global.Usage = usage
	_ = global.Parse(os.Args[1:])
	args := global.Args()
	if len(args) == 0 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := lab.DefaultConfig()
	cfg.Name = *name
	cfg.StateRoot, cfg.RunRoot = "", "" // derived from the name
	cfg.Logf = log

	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "up":
		err = up(ctx, cfg, rest)
	case "down":
		if l, oerr := lab.Open(cfg); oerr == nil {
			err = l.Down(ctx)
		} else {
			err = lab.Clean(ctx, cfg)
		}
	case "status":
		err = status(ctx, cfg)
	case "docker", "exec", "env":
		if len(rest) < 1 || (cmd != "env" && len(rest) < 2) {
			usage()
			os.Exit(2)
		}
		var h *lab.Host
		if h, err = host(cfg, rest[0]); err == nil {
			switch cmd {
			case "env":
				fmt.Printf("export DOCKER_HOST=%s\n", h.DockerHost())
			case "docker":
				os.Exit(passthrough(h.DockerCmd(ctx, rest[1:]...)))
			case "exec":
				os.Exit(passthrough(h.ExecCmd(ctx, rest[1], rest[2:]...)))
			}
		}
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "weftlab: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: weftlab [-name weftlab] COMMAND
  up [-hosts 3] [-swarm] [-managers 1] [-image] [-plugin DIR] [-plugin-name weft:latest]
     [-set KEY=VALUE]... [-mtu 1500] [-log-level info]
                         bring up the lab (clearing any earlier one); daemons keep running
  down                   stop and remove everything of the lab
  status                 list hosts, addresses and whether their engines run
  docker HOST ARGS...    run the docker CLI against HOST (h1, h2, ...)
  exec HOST CMD ARGS...  run CMD in HOST's network namespace
  env HOST               print the DOCKER_HOST export for HOST
`)
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func up(ctx context.Context, cfg lab.Config, args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	fs.IntVar(&cfg.Hosts, "hosts", cfg.Hosts, "number of hosts")
	fs.BoolVar(&cfg.Swarm, "swarm", false, "form a swarm (h1 manager)")
	fs.IntVar(&cfg.Managers, "managers", cfg.Managers, "number of swarm managers")
	fs.BoolVar(&cfg.Image, "image", false, "import the test image "+lab.ImageTag+" on every host")
	fs.StringVar(&cfg.PluginDir, "plugin", "", "managed plugin directory (config.json + rootfs/) to install on every host")
	fs.StringVar(&cfg.PluginName, "plugin-name", cfg.PluginName, "name to install the plugin under")
	var settings multiFlag
	fs.Var(&settings, "set", "extra plugin setting KEY=VALUE (repeatable)")
	fs.IntVar(&cfg.MTU, "mtu", cfg.MTU, "underlay MTU")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "containerd and dockerd log level")
	fs.BoolVar(&cfg.KeepLogs, "keep-logs", false, "keep daemon logs on down")
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("up: unexpected arguments %q", fs.Args())
	}
	cfg.PluginSettings = settings
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	for _, h := range l.Hosts {
		fmt.Printf("%s\t%s\texport DOCKER_HOST=%s\n", h.Name, h.Addr(), h.DockerHost())
	}
	return nil
}

func status(ctx context.Context, cfg lab.Config) error {
	l, err := lab.Open(cfg)
	if err != nil {
		return err
	}
	for _, h := range l.Hosts {
		state := "engine down"
		if h.EngineRunning() {
			state = "engine up"
		}
		fmt.Printf("%s\t%s\t%s\t%s\n", h.Name, h.Addr(), state, h.DockerHost())
	}
	left, err := lab.Leftovers(cfg)
	if err == nil && len(left) == 0 {
		fmt.Println("(nothing of the lab exists)")
	}
	return err
}

func host(cfg lab.Config, name string) (*lab.Host, error) {
	l, err := lab.Open(cfg)
	if err != nil {
		return nil, err
	}
	h := l.Host(name)
	if h == nil {
		return nil, fmt.Errorf("no host %q in lab %s (it has h1..h%d)", name, cfg.Name, len(l.Hosts))
	}
	return h, nil
}

// passthrough runs cmd on our terminal and returns its exit code.
func passthrough(cmd *exec.Cmd) int {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "weftlab: %v\n", err)
		return 1
	}
}
