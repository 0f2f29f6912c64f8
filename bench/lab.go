package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// The bench's own lab, apart from the demo's (weftlab) and the tests'
// (weftci), so that a bench never disturbs them and they can run at the
// same time on one machine.
const (
	labName     = "weftbench"
	labBridge   = "weftbench0"
	labVeth     = "wbh"
	labUnderlay = "198.18.3.254/24"
	labHosts    = 3
)

// The networks under test, and the container addresses they use. Both are
// swarm-scoped and attachable, so plain "docker run" containers on any
// host join them, as Fabric's chaincode containers do.
const (
	overlayNet    = "wb-ov"
	overlaySubnet = "10.201.1.0/24"
	weftNet       = "wb-weft"
	weftSubnet    = "10.201.2.0/24"
	// rrPort is where the request/response server and reach targets listen.
	rrPort = "7000"
	// toolMount is where the weftbench binary is mounted in containers.
	toolMount = "/wb"
)

// LabConfig returns the bench lab's configuration at the given underlay
// MTU: 3 hosts in a swarm, the test image, and the plugin in pluginDir.
func LabConfig(pluginDir string, mtu int, logf func(string, ...any)) lab.Config {
	cfg := lab.DefaultConfig()
	cfg.Name = labName
	cfg.Bridge = labBridge
	cfg.VethPrefix = labVeth
	cfg.Underlay = netip.MustParsePrefix(labUnderlay)
	cfg.StateRoot, cfg.RunRoot = "", "" // derived from the name
	cfg.Hosts = labHosts
	cfg.MTU = mtu
	cfg.Swarm = true
	cfg.Image = true
	cfg.PluginDir = pluginDir
	cfg.KeepLogs = true
	cfg.Logf = logf
	return cfg
}

// env is one lab under measurement.
type env struct {
	o   *Options
	l   *lab.Lab
	mtu int
	// ids of the networks under test, by name.
	netID map[string]string
}

// netOf maps a compared path to its Docker network.
func netOf(net string) string {
	switch net {
	case NetOverlay:
		return overlayNet
	case NetWeftEnc:
		return encNet
	}
	return weftNet
}

// up brings the lab up at mtu and creates the two networks.
func up(ctx context.Context, o *Options, mtu int) (*env, error) {
	cfg := LabConfig(o.PluginDir, mtu, o.Logf)
	ctx2, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx2, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench lab (MTU %d): %w", mtu, err)
	}
	e := &env{o: o, l: l, mtu: mtu, netID: map[string]string{}}
	m := l.Manager()
	if _, err := m.Docker(ctx, "network", "create", "-d", "overlay", "--attachable", "--subnet", overlaySubnet, overlayNet); err != nil {
		return e, err
	}
	if _, err := m.Docker(ctx, "network", "create", "-d", cfg.PluginName, "--scope", "swarm", "--attachable", "--subnet", weftSubnet, weftNet); err != nil {
		return e, err
	}
	if _, err := m.Docker(ctx, "network", "create", "-d", cfg.PluginName, "--scope", "swarm", "--attachable", "--subnet", encSubnet, "-o", "encrypted", encNet); err != nil {
		return e, err
	}
	for _, n := range []string{overlayNet, weftNet, encNet} {
		id, err := m.Docker(ctx, "network", "inspect", "-f", "{{.Id}}", n)
		if err != nil {
			return e, err
		}
		e.netID[n] = strings.TrimSpace(id)
	}
	return e, nil
}

// down removes the lab unless it is to be kept.
func (e *env) down(ctx context.Context, keep bool) {
	if e == nil || e.l == nil {
		return
	}
	if keep {
		e.o.Logf("keeping lab %s up (remove it with: weftbench down)", labName)
		return
	}
	if err := e.l.Down(ctx); err != nil {
		e.o.Logf("lab down: %v", err)
	}
}

func (e *env) h(i int) *lab.Host { return e.l.Hosts[i-1] }

// run starts a detached container with the weftbench binary mounted at
// toolMount. ip may be empty.
func (e *env) run(ctx context.Context, h *lab.Host, name, network, ip string, cmd ...string) error {
	args := []string{"run", "-d", "--name", name, "--network", network, "-v", e.o.Self + ":" + toolMount + ":ro"}
	if ip != "" {
		args = append(args, "--ip", ip)
	}
	args = append(args, lab.ImageTag)
	_, err := h.Docker(ctx, append(args, cmd...)...)
	return err
}

// ctrPid returns a container's init process in the root PID namespace.
func ctrPid(ctx context.Context, h *lab.Host, ctr string) (int, error) {
	out, err := h.Docker(ctx, "inspect", "-f", "{{.State.Pid}}", ctr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// inNetns runs a command in a container's network namespace from the root
// one (containers cannot write their own /proc/sys).
func inNetns(ctx context.Context, pid int, args ...string) (string, error) {
	full := append([]string{"-t", strconv.Itoa(pid), "-n", "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("nsenter -t %d -n %s: %w: %s", pid, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// fastARP makes a probe container resolve neighbours every 10 ms instead
// of every second, so that reachability probes measure the control plane
// rather than the kernel's ARP retry timer (which is the same for both
// networks, and which a waiting client would hit too).
func fastARP(ctx context.Context, pid int) error {
	for _, kv := range []string{
		"net.ipv4.neigh.eth0.retrans_time_ms=10",
		"net.ipv4.neigh.eth0.mcast_solicit=20",
		"net.ipv4.neigh.eth0.ucast_solicit=20",
	} {
		if _, err := inNetns(ctx, pid, "sysctl", "-qw", kv); err != nil {
			return err
		}
	}
	return nil
}

// flushNeigh empties a container's neighbour cache, so that a probe starts
// from no stale or failed entry.
func flushNeigh(ctx context.Context, pid int) error {
	_, err := inNetns(ctx, pid, "ip", "neigh", "flush", "all")
	return err
}

// overlayNetns returns the path of the overlay network's namespace on h,
// where Docker keeps its VXLAN device and forwarding entries.
func (e *env) overlayNetns(h *lab.Host) (string, error) {
	dir := filepath.Join(e.l.Config().RunRoot, h.Name, "d", "netns")
	want := "1-" + e.netID[overlayNet][:10]
	if _, err := os.Stat(filepath.Join(dir, want)); err != nil {
		return "", fmt.Errorf("overlay namespace of %s on %s: %w", overlayNet, h.Name, err)
	}
	return filepath.Join(dir, want), nil
}
