package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Host is one Docker host of a lab: a network namespace with its own
// containerd and dockerd. Its methods are safe for concurrent use; the
// fault helpers change the host's real state, so tests serialize them
// themselves.
type Host struct {
	// Name is the host's name and hostname: h1, h2, ...
	Name string
	// Index is i in h<i>, from 1.
	Index int
	// NetNS is the network namespace's name, for "ip netns" and "ip -n".
	NetNS string
	// Socket is the path of dockerd's API socket.
	Socket string
	// StateDir is weft's state directory on this host: the managed plugin's
	// "state" mount.
	StateDir string
	// DockerdLog and ContainerdLog are the daemons' log files. A managed
	// plugin's output lands in DockerdLog.
	DockerdLog    string
	ContainerdLog string

	cfg        Config
	addr       netip.Addr
	outside    netip.Addr // with Config.Outside
	stateRoot  string     // <StateRoot>/h<i>
	runDir     string     // <RunRoot>/h<i>
	containerd *daemon
	dockerd    *daemon
}

func newHost(c Config, i int) (*Host, error) {
	addr, err := c.hostAddr(i)
	if err != nil {
		return nil, err
	}
	var outside netip.Addr
	if c.Outside.IsValid() {
		if outside, err = c.numbered(c.Outside, i); err != nil {
			return nil, err
		}
	}
	name := fmt.Sprintf("h%d", i)
	h := &Host{
		Name:          name,
		Index:         i,
		NetNS:         c.netnsName(i),
		cfg:           c,
		addr:          addr,
		outside:       outside,
		stateRoot:     filepath.Join(c.StateRoot, name),
		runDir:        filepath.Join(c.RunRoot, name),
		DockerdLog:    filepath.Join(c.logDir(), name+"-dockerd.log"),
		ContainerdLog: filepath.Join(c.logDir(), name+"-containerd.log"),
	}
	h.Socket = filepath.Join(h.runDir, "docker.sock")
	h.StateDir = filepath.Join(h.stateRoot, "weft")

	enter := []string{"nsenter", "--net=" + h.NetNSPath(), "--uts=" + h.utsFile(), "--"}
	ctrdConf := filepath.Join(h.stateRoot, "containerd.toml")
	h.containerd = &daemon{
		name:    name + " containerd",
		pidFile: filepath.Join(h.runDir, "containerd.lab.pid"),
		logFile: h.ContainerdLog,
		marker:  ctrdConf,
		argv:    slices.Concat(enter, []string{c.Containerd, "--config", ctrdConf, "--log-level", c.LogLevel}),
	}
	dockerdArgs := []string{
		c.Dockerd,
		"--config-file", filepath.Join(h.stateRoot, "daemon.json"),
		"--containerd", h.containerdSocket(),
		"--data-root", filepath.Join(h.stateRoot, "docker"),
		"--exec-root", filepath.Join(h.runDir, "d"),
		"--pidfile", filepath.Join(h.runDir, "dockerd.pid"),
		"-H", "unix://" + h.Socket,
		"--bridge", "none",
		"--cgroup-parent", c.cgroupParent(i),
		"--log-level", c.LogLevel,
		"--shutdown-timeout", fmt.Sprint(int(c.ShutdownTimeout.Round(time.Second) / time.Second)),
		// The lab's registry (StartRegistry) speaks plain HTTP.
		"--insecure-registry", c.registryAddr(),
	}
	h.dockerd = &daemon{
		name:    name + " dockerd",
		pidFile: filepath.Join(h.runDir, "dockerd.lab.pid"),
		logFile: h.DockerdLog,
		marker:  h.Socket,
		argv:    slices.Concat(enter, dockerdArgs, c.DockerdArgs),
	}
	return h, nil
}

// The interfaces the lab gives each host.
const (
	// UnderlayIf holds the host's underlay address: swarm's, the mesh's
	// and VXLAN's.
	UnderlayIf = "eth0"
	// OutsideIf carries the default route when Config.Outside is set.
	OutsideIf = "eth1"
)

// Config returns the configuration of the host's lab, defaults filled in.
func (h *Host) Config() Config { return h.cfg }

// Addr is the host's underlay address (on UnderlayIf).
func (h *Host) Addr() netip.Addr { return h.addr }

// OutsideAddr is the host's address on OutsideIf, invalid unless
// Config.Outside is set.
func (h *Host) OutsideAddr() netip.Addr { return h.outside }

// SwarmDir is the engine's swarm directory (<data-root>/swarm), which
// dockerd makes when it starts and keeps (emptied, never replaced) when
// the node leaves a swarm: its certificates/ hold the node's swarm
// identity once it is in one.
func (h *Host) SwarmDir() string { return filepath.Join(h.stateRoot, "docker", "swarm") }

// DockerHost is the DOCKER_HOST value that reaches this host's dockerd.
func (h *Host) DockerHost() string { return "unix://" + h.Socket }

// NetNSPath is the file of the host's network namespace, for tools that
// open a namespace by path.
func (h *Host) NetNSPath() string { return filepath.Join("/run/netns", h.NetNS) }

func (h *Host) utsFile() string          { return filepath.Join(h.runDir, "uts") }
func (h *Host) containerdSocket() string { return filepath.Join(h.runDir, "containerd.sock") }

// Docker runs the docker CLI against this host and returns its stdout
// without the final newline. The error names the command and holds stderr.
func (h *Host) Docker(ctx context.Context, args ...string) (string, error) {
	return run(ctx, h.cfg.DockerCLI, append([]string{"-H", h.DockerHost()}, args...)...)
}

// DockerCmd returns an unstarted docker CLI command against this host, for
// callers that need its streams (long-running or interactive commands).
func (h *Host) DockerCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.cfg.DockerCLI, append([]string{"-H", h.DockerHost()}, args...)...)
	cmd.Env = daemonEnv()
	return cmd
}

// ContainerIP returns container ctr's address on network.
func (h *Host) ContainerIP(ctx context.Context, ctr, network string) (string, error) {
	out, err := h.Docker(ctx, "inspect", "-f", fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), ctr)
	if err != nil {
		return "", err
	}
	ip := strings.TrimSpace(out)
	if ip == "" {
		return "", fmt.Errorf("%s on %s has no address on %s yet", ctr, h.Name, network)
	}
	return ip, nil
}

// Exec runs a command in the host's network and UTS namespaces and returns
// its stdout without the final newline.
func (h *Host) Exec(ctx context.Context, name string, args ...string) (string, error) {
	cmd := h.ExecCmd(ctx, name, args...)
	return run(ctx, cmd.Args[0], cmd.Args[1:]...)
}

// ExecCmd returns an unstarted command that runs in the host's network and
// UTS namespaces. It goes through "ip netns exec", which gives the command
// a /sys of the host's namespace (/sys/class/net lists the host's links);
// the daemons cannot use it, and see the root namespace's /sys.
func (h *Host) ExecCmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := slices.Concat([]string{"--uts=" + h.utsFile(), "--", "ip", "netns", "exec", h.NetNS, name}, args)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = daemonEnv()
	return cmd
}

// LogTail returns the last n lines of the host's dockerd log.
func (h *Host) LogTail(n int) string { return tail(h.DockerdLog, n) }

// CutUnderlay takes the host off the underlay by setting its root-side veth
// down; its eth0 loses carrier but keeps its address and routes.
func (h *Host) CutUnderlay(ctx context.Context) error {
	_, err := run(ctx, "ip", "link", "set", h.cfg.vethName(h.Index), "down")
	return err
}

// RestoreUnderlay undoes CutUnderlay.
func (h *Host) RestoreUnderlay(ctx context.Context) error {
	_, err := run(ctx, "ip", "link", "set", h.cfg.vethName(h.Index), "up")
	return err
}

// StopEngine stops the host's dockerd with SIGTERM, as a service manager
// would, and waits for it to exit (SIGKILL after its shutdown timeout plus a
// margin). containerd keeps running.
func (h *Host) StopEngine(ctx context.Context) error {
	h.cfg.logf("%s: stopping dockerd", h.Name)
	return h.dockerd.stop(syscall.SIGTERM, h.cfg.ShutdownTimeout+20*time.Second)
}

// KillEngine kills the host's dockerd with SIGKILL and waits for it to go.
// Its containers' shims keep running, as after a crash.
func (h *Host) KillEngine(ctx context.Context) error {
	h.cfg.logf("%s: killing dockerd", h.Name)
	return h.dockerd.stop(syscall.SIGKILL, 10*time.Second)
}

// StartEngine starts the host's dockerd again on the same data root, so its
// containers, networks, plugins and swarm state come back, and waits until
// it answers. It is a no-op if dockerd runs.
func (h *Host) StartEngine(ctx context.Context) error {
	if _, ok := h.dockerd.pid(); ok {
		return nil
	}
	if _, ok := h.containerd.pid(); !ok {
		if err := h.startContainerd(ctx); err != nil {
			return err
		}
	}
	return h.startDockerd(ctx)
}

// EngineRunning reports whether the host's dockerd process is alive.
func (h *Host) EngineRunning() bool {
	_, ok := h.dockerd.pid()
	return ok
}

// containerdConfig keeps each containerd apart from the others: own root,
// state and sockets, no TCP listener, no CRI (which would read /etc/cni
// and listen for streaming), and its opt dir inside the lab.
const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q
  tcp_address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`

func (h *Host) startContainerd(ctx context.Context) error {
	conf := fmt.Sprintf(containerdConfig,
		filepath.Join(h.stateRoot, "containerd"),
		filepath.Join(h.runDir, "c"),
		h.containerdSocket(),
		filepath.Join(h.stateRoot, "containerd", "opt"))
	if err := os.WriteFile(h.containerd.marker, []byte(conf), 0o644); err != nil {
		return err
	}
	h.cfg.logf("%s: starting containerd", h.Name)
	return h.containerd.start(ctx, h.cfg.StartTimeout, func() error {
		conn, err := net.DialTimeout("unix", h.containerdSocket(), time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

func (h *Host) startDockerd(ctx context.Context) error {
	// An empty config file, so that /etc/docker/daemon.json (if any) does
	// not leak into the lab.
	if err := os.WriteFile(filepath.Join(h.stateRoot, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		return err
	}
	// A pid file left by a killed dockerd makes the next one refuse to
	// start if that pid is alive again as something else.
	_ = os.Remove(filepath.Join(h.runDir, "dockerd.pid"))
	h.cfg.logf("%s: starting dockerd", h.Name)
	start := time.Now()
	err := h.dockerd.start(ctx, h.cfg.StartTimeout, func() error { return ping(ctx, h.Socket) })
	if err != nil {
		return err
	}
	h.cfg.logf("%s: dockerd answers after %s", h.Name, time.Since(start).Round(time.Millisecond))
	// Production-like firewall: dockerd sets FORWARD to DROP only when it
	// turns ip_forward on itself, and we turned it on already.
	if _, err := h.Exec(ctx, "iptables", "-P", "FORWARD", "DROP"); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}

// ping asks a dockerd's /_ping through its unix socket.
func ping(ctx context.Context, socket string) error {
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /_ping on %s: %s", socket, resp.Status)
	}
	return nil
}

// dockerInfo is the part of "docker info" the lab reads.
type dockerInfo struct {
	Name  string
	Swarm struct {
		NodeID           string
		LocalNodeState   string
		ControlAvailable bool
	}
}

func (h *Host) info(ctx context.Context) (dockerInfo, error) {
	var di dockerInfo
	out, err := h.Docker(ctx, "info", "--format", "{{json .}}")
	if err != nil {
		return di, err
	}
	if err := json.Unmarshal([]byte(out), &di); err != nil {
		return di, fmt.Errorf("%s: parse docker info: %w", h.Name, err)
	}
	return di, nil
}

// String returns the host's name and address.
func (h *Host) String() string {
	return fmt.Sprintf("%s(%s)", h.Name, h.addr)
}
