package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Hosts: 2, Underlay: netip.MustParsePrefix("10.9.0.1/24"), HostOffset: 10}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "weftlab" || c.RunRoot != "/run/weftlab" || c.MTU != 1500 {
		t.Errorf("defaults not filled: %+v", c)
	}
	if a, _ := c.hostAddr(2); a != netip.MustParseAddr("10.9.0.12") {
		t.Errorf("host 2 address = %s, want 10.9.0.12", a)
	}
	if c.RegistryPort != 5000 || c.registryAddr() != "10.9.0.1:5000" {
		t.Errorf("registry at %s (port %d), want 10.9.0.1:5000", c.registryAddr(), c.RegistryPort)
	}
	h, err := newHost(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(h.dockerd.argv, " ")+" ", " --insecure-registry 10.9.0.1:5000 ") {
		t.Errorf("dockerd does not trust the lab's registry: %v", h.dockerd.argv)
	}
	if _, err := (Config{RegistryPort: 70000}).withDefaults(); err == nil {
		t.Error("registry port 70000 accepted")
	}
	if _, err := (Config{Hosts: 300}).withDefaults(); err == nil {
		t.Error("300 hosts accepted")
	}
	if _, err := (Config{RunRoot: "/run/a-very-long-lab-run-root"}).withDefaults(); err == nil {
		t.Error("long run root accepted")
	}
	if got := lastAddr(netip.MustParsePrefix("198.18.0.254/24")); got != netip.MustParseAddr("198.18.0.255") {
		t.Errorf("lastAddr = %s", got)
	}

	o, err := Config{Outside: netip.MustParsePrefix("198.19.0.254/24")}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.OutsideMTU != 9000 || o.outsideBridge() != "weftlab0o" || o.outsideVethName(2) != "wlho2" {
		t.Errorf("outside defaults: MTU %d, bridge %s, veth %s", o.OutsideMTU, o.outsideBridge(), o.outsideVethName(2))
	}
	if a, _ := o.numbered(o.Outside, 2); a != netip.MustParseAddr("198.19.0.2") {
		t.Errorf("host 2's outside address = %s", a)
	}
	for _, bad := range []Config{
		{Outside: netip.MustParsePrefix("198.18.0.200/25")}, // inside the underlay
		{Outside: netip.MustParsePrefix("fd00::1/64")},
		{Outside: netip.MustParsePrefix("198.19.0.254/24"), OutsideMTU: 100},
		{Outside: netip.MustParsePrefix("198.19.0.254/30"), Hosts: 3},
		{Outside: netip.MustParsePrefix("198.19.0.254/24"), Bridge: "fifteen-bytes00"},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("accepted outside %s (MTU %d, %d hosts, bridge %q)", bad.Outside, bad.OutsideMTU, bad.Hosts, bad.Bridge)
		}
	}
}

func TestHold(t *testing.T) {
	n := 0
	if err := Hold(context.Background(), 30*time.Millisecond, 5*time.Millisecond, func() error { n++; return nil }); err != nil || n < 2 {
		t.Fatalf("Hold = %v after %d calls", err, n)
	}
	n = 0
	err := Hold(context.Background(), time.Minute, time.Millisecond, func() error {
		if n++; n == 3 {
			return fmt.Errorf("broke")
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "broke") || n != 3 {
		t.Fatalf("Hold = %v after %d calls, want the third call's error", err, n)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	if err := WaitFor(context.Background(), time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return fmt.Errorf("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("WaitFor = %v after %d calls", err, n)
	}
	err := WaitFor(context.Background(), 50*time.Millisecond, 10*time.Millisecond, func() error { return fmt.Errorf("still broken") })
	if err == nil || !strings.Contains(err.Error(), "still broken") {
		t.Fatalf("WaitFor timeout error = %v, want the last error", err)
	}
	start := time.Now()
	err = WaitFor(context.Background(), time.Minute, 10*time.Millisecond, func() error { return Permanent(fmt.Errorf("fatal")) })
	if err == nil || err.Error() != "fatal" || time.Since(start) > time.Second {
		t.Fatalf("Permanent: %v", err)
	}
}

func TestShimSocket(t *testing.T) {
	p := procInfo{comm: "containerd-shim-runc-v2", args: []string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id",
		"6972046a4778ea2c26fb3ecd6f90f2f8dbad67c6213024a8e53db7a84cbde508", "-address", "/run/weftlab/h1/containerd.sock"}}
	// Seen on this machine for that shim.
	want := "/run/containerd/s/6d9bb621a375abb1d48140437123522788ac2e440c85c6338be52c495030d107"
	if got := shimSocket(p); got != want {
		t.Errorf("shimSocket = %s, want %s", got, want)
	}
}

// TestLab brings up two hosts in a swarm with the test image, a fake
// plugin and an outside network carrying the default route, checks the
// hosts' interfaces and routes, Docker's overlay across them, the plugin
// and fault helpers, then tears down and checks that nothing of the lab is
// left.
func TestLab(t *testing.T) {
	SkipUnlessE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	pluginDir, binary := buildFakePlugin(t)

	cfg := DefaultConfig()
	cfg.Hosts = 2
	cfg.Swarm = true
	cfg.Image = true
	cfg.PluginDir = pluginDir
	cfg.PluginName = "weftfake:latest"
	cfg.PluginSettings = []string{"LOG_LEVEL=debug"}
	cfg.Outside = netip.MustParsePrefix("198.19.0.254/24")
	cfg.Logf = t.Logf
	start := time.Now()
	l, err := Up(ctx, cfg)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Logf("Up (2 hosts, swarm, image, plugin) took %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon logs:\n%s", l.LogTails(40))
		}
		// The shims' sockets live in containerd's shared directory, beside
		// those of any other lab: check ours by name.
		var shimSockets []string
		for _, p := range labProcesses(l.cfg) {
			if s := shimSocket(p); s != "" {
				shimSockets = append(shimSockets, s)
			}
		}
		if len(shimSockets) == 0 {
			t.Error("no shim found before Down")
		}
		plugins := pluginIDs(l.cfg)
		if len(plugins) == 0 || len(pluginCgroups(plugins)) == 0 {
			t.Errorf("no plugin or plugin cgroup found before Down (plugins %v)", plugins)
		}
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("Down: %v", err)
		}
		left, err := Leftovers(cfg)
		if err != nil {
			t.Errorf("Leftovers: %v", err)
		}
		for _, x := range left {
			t.Errorf("left after Down: %s", x)
		}
		for _, cg := range pluginCgroups(plugins) {
			t.Errorf("plugin cgroup left after Down: %s", cg)
		}
		for _, s := range shimSockets {
			if _, err := os.Stat(s); err == nil {
				t.Errorf("shim socket left after Down: %s", s)
			}
		}
	})
	h1, h2 := l.Hosts[0], l.Hosts[1]

	t.Run("hosts", func(t *testing.T) {
		for _, h := range l.Hosts {
			if got := h.MustExec(t, "hostname"); got != h.Name {
				t.Errorf("%s: hostname %q", h.Name, got)
			}
			if got := h.MustExec(t, "sysctl", "-n", "net.ipv4.ip_forward"); got != "1" {
				t.Errorf("%s: ip_forward = %s", h.Name, got)
			}
			if got := h.MustExec(t, "iptables", "-S", "FORWARD"); !strings.HasPrefix(got, "-P FORWARD DROP") {
				t.Errorf("%s: FORWARD chain: %s", h.Name, got)
			}
			checkRoutes(t, h, l.Config())
			di, err := h.info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if di.Name != h.Name || di.Swarm.LocalNodeState != "active" {
				t.Errorf("%s: docker info name %q swarm %q", h.Name, di.Name, di.Swarm.LocalNodeState)
			}
		}
		if !mustInfo(t, l.Manager()).Swarm.ControlAvailable {
			t.Error("h1 is not a swarm manager")
		}
		// Full-size frames, unfragmented, on either network.
		h1.MustExec(t, "ping", "-c1", "-W2", "-M", "do", "-s", fmt.Sprint(cfg.MTU-28), h2.Addr().String())
		h1.MustExec(t, "ping", "-c1", "-W2", "-M", "do", "-s", "8972", cfg.Outside.Addr().String())
		if _, err := h1.Exec(ctx, "ping", "-c1", "-W2", "-M", "do", "-s", fmt.Sprint(cfg.MTU-27), h2.Addr().String()); err == nil {
			t.Errorf("a %d-byte packet crossed the %d-byte underlay unfragmented", cfg.MTU+1, cfg.MTU)
		}
	})

	t.Run("overlay", func(t *testing.T) {
		h1.MustDocker(t, "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.231.0.0/24", "labov")
		h1.MustDocker(t, "run", "-d", "--name", "c1", "--network", "labov", ImageTag, "sleep", "1000000")
		h2.MustDocker(t, "run", "-d", "--name", "c2", "--network", "labov", "--restart", "always", ImageTag, "sleep", "1000000")
		ip1 := h1.MustDocker(t, "inspect", "-f", "{{(index .NetworkSettings.Networks \"labov\").IPAddress}}", "c1")
		ip2 := h2.MustDocker(t, "inspect", "-f", "{{(index .NetworkSettings.Networks \"labov\").IPAddress}}", "c2")
		t.Logf("c1 on h1: %s, c2 on h2: %s", ip1, ip2)
		waitPing(ctx, t, h1, "c1", ip2)
		waitPing(ctx, t, h2, "c2", ip1)
		waitPing(ctx, t, h1, "c1", "c2") // by name, through Docker's DNS
		// Out of the overlay through docker_gwbridge (NAT on h1).
		waitPing(ctx, t, h1, "c1", h2.Addr().String())
		waitPing(ctx, t, h1, "c1", cfg.Underlay.Addr().String())
		waitPing(ctx, t, h2, "c2", cfg.Outside.Addr().String()) // by the default route
		if out := h1.MustDocker(t, "exec", "c1", "iperf3", "--version"); !strings.Contains(out, "iperf 3") {
			t.Errorf("iperf3 in the image: %s", out)
		}
	})

	t.Run("plugin", func(t *testing.T) {
		for _, h := range l.Hosts {
			if got := h.MustDocker(t, "plugin", "inspect", "-f", "{{.Enabled}}", cfg.PluginName); got != "true" {
				t.Errorf("%s: plugin enabled = %s", h.Name, got)
			}
			var mounts []struct{ Name, Source string }
			if err := json.Unmarshal([]byte(h.MustDocker(t, "plugin", "inspect", "-f", "{{json .Settings.Mounts}}", cfg.PluginName)), &mounts); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"docker-socket": h.Socket, "state": h.StateDir}
			for _, m := range mounts {
				if m.Source != want[m.Name] {
					t.Errorf("%s: mount %s source %q, want %q", h.Name, m.Name, m.Source, want[m.Name])
				}
			}
			if env := h.MustDocker(t, "plugin", "inspect", "-f", "{{json .Settings.Env}}", cfg.PluginName); !strings.Contains(env, "LOG_LEVEL=debug") {
				t.Errorf("%s: plugin env %s", h.Name, env)
			}
			if _, err := os.Stat(filepath.Join(h.StateDir, "started")); err != nil {
				t.Errorf("%s: the plugin did not write its state dir: %v", h.Name, err)
			}
		}
		h1.MustDocker(t, "network", "create", "-d", cfg.PluginName, "fakenet")
		h1.MustDocker(t, "network", "rm", "fakenet")
		if !strings.Contains(h1.LogTail(500), "fakeplugin: /NetworkDriver.CreateNetwork") {
			t.Error("plugin output not in dockerd's log")
		}
		if err := h2.DisablePlugin(ctx, cfg.PluginName); err != nil {
			t.Fatal(err)
		}
		if err := h2.EnablePlugin(ctx, cfg.PluginName); err != nil {
			t.Fatal(err)
		}
		if err := h2.UpgradePlugin(ctx, pluginDir, cfg.PluginName, "LOG_LEVEL=info"); err != nil {
			t.Fatal(err)
		}
		if got := h2.MustDocker(t, "plugin", "inspect", "-f", "{{.Enabled}}", cfg.PluginName); got != "true" {
			t.Errorf("after upgrade: enabled = %s", got)
		}
	})

	t.Run("binary", func(t *testing.T) {
		if err := l.ImportBinary(ctx, binary, "weftlab/fake:latest"); err != nil {
			t.Fatal(err)
		}
		for _, h := range l.Hosts {
			if got := h.MustDocker(t, "run", "--rm", "weftlab/fake:latest", "-version"); got != "fakeplugin 1" {
				t.Errorf("%s: binary image printed %q", h.Name, got)
			}
		}
	})

	t.Run("faults", func(t *testing.T) {
		target := h2.Addr().String()
		if err := h2.CutUnderlay(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := h1.Exec(ctx, "ping", "-c1", "-W1", target); err == nil {
			t.Error("h2 still reachable with its underlay cut")
		}
		if err := h2.RestoreUnderlay(ctx); err != nil {
			t.Fatal(err)
		}
		if err := WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error {
			_, err := h1.Exec(ctx, "ping", "-c1", "-W1", target)
			return err
		}); err != nil {
			t.Fatalf("h2 unreachable after RestoreUnderlay: %v", err)
		}

		t0 := time.Now()
		if err := h2.StopEngine(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("StopEngine took %s", time.Since(t0).Round(time.Millisecond))
		if h2.EngineRunning() {
			t.Fatal("engine runs after StopEngine")
		}
		if _, err := h2.Docker(ctx, "version"); err == nil {
			t.Fatal("docker answers after StopEngine")
		}
		t0 = time.Now()
		if err := h2.StartEngine(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("StartEngine took %s", time.Since(t0).Round(time.Millisecond))
		if err := l.WaitSwarmReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		// c2 has a restart policy: it comes back with the engine, on the
		// overlay.
		waitPing(ctx, t, h2, "c2", h1.MustDocker(t, "inspect", "-f", "{{(index .NetworkSettings.Networks \"labov\").IPAddress}}", "c1"))

		if err := h2.KillEngine(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h2.StartEngine(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitSwarmReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if got := h2.MustDocker(t, "plugin", "inspect", "-f", "{{.Enabled}}", cfg.PluginName); got != "true" {
			t.Errorf("plugin after engine restart: enabled = %s", got)
		}
	})
}

// buildFakePlugin builds testdata/fakeplugin statically and lays out a
// managed plugin directory around it. It returns the directory and the
// binary.
func buildFakePlugin(t *testing.T) (dir, binary string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	dir = t.TempDir()
	binary = filepath.Join(dir, "fakeplugin")
	cmd := exec.Command(goBin, "build", "-o", binary, "./testdata/fakeplugin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fake plugin: %v\n%s", err, out)
	}
	pdir := filepath.Join(dir, "plugin")
	for _, d := range []string{"rootfs/run/docker/plugins", "rootfs/var/lib/weft", "rootfs/tmp", "rootfs/etc", "rootfs/proc", "rootfs/sys", "rootfs/dev"} {
		if err := os.MkdirAll(filepath.Join(pdir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, "rootfs/app"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	config := `{
  "description": "weftlab fake network plugin",
  "documentation": "https://github.com/weftnet/weft",
  "entrypoint": ["/app"],
  "interface": {"types": ["docker.networkdriver/1.0"], "socket": "weft.sock"},
  "network": {"type": "host"},
  "linux": {"capabilities": ["CAP_NET_ADMIN"]},
  "env": [{"name": "LOG_LEVEL", "settable": ["value"], "value": "info"}],
  "mounts": [
    {"name": "docker-socket", "source": "/var/run/docker.sock", "destination": "/run/docker.sock",
     "type": "bind", "options": ["rbind"], "settable": ["source"]},
    {"name": "state", "source": "/var/lib/weft", "destination": "/var/lib/weft",
     "type": "bind", "options": ["rbind", "rw"], "settable": ["source"]}
  ]
}
`
	if err := os.WriteFile(filepath.Join(pdir, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return pdir, binary
}

// checkRoutes checks h's interfaces and routes against cfg: the underlay
// on eth0 with its MTU, and the default route through the outside network
// on eth1 with its own.
func checkRoutes(t *testing.T, h *Host, cfg Config) {
	t.Helper()
	mtu := func(dev string) string { return h.MustExec(t, "cat", "/sys/class/net/"+dev+"/mtu") }
	if got := mtu(UnderlayIf); got != fmt.Sprint(cfg.MTU) {
		t.Errorf("%s: %s MTU %s, want %d", h.Name, UnderlayIf, got, cfg.MTU)
	}
	if got := mtu(OutsideIf); got != fmt.Sprint(cfg.OutsideMTU) {
		t.Errorf("%s: %s MTU %s, want %d", h.Name, OutsideIf, got, cfg.OutsideMTU)
	}
	var routes []struct{ Dst, Gateway, Dev, Prefsrc string }
	if err := json.Unmarshal([]byte(h.MustExec(t, "ip", "-j", "-4", "route", "show")), &routes); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range routes {
		got[r.Dst] = strings.TrimSpace(r.Gateway + " " + r.Dev + " " + r.Prefsrc)
	}
	want := map[string]string{
		"default":                      cfg.Outside.Addr().String() + " " + OutsideIf,
		cfg.Underlay.Masked().String(): UnderlayIf + " " + h.Addr().String(),
		cfg.Outside.Masked().String():  OutsideIf + " " + h.OutsideAddr().String(),
	}
	for dst, w := range want {
		if got[dst] != w {
			t.Errorf("%s: route to %s: %q, want %q (routes %v)", h.Name, dst, got[dst], w, got)
		}
	}
}

func mustInfo(t *testing.T, h *Host) dockerInfo {
	t.Helper()
	di, err := h.info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return di
}

// waitPing waits until container ctr on h gets a reply from target.
func waitPing(ctx context.Context, t *testing.T, h *Host, ctr, target string) {
	t.Helper()
	err := WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := h.Docker(ctx, "exec", ctr, "ping", "-c1", "-W1", target)
		return err
	})
	if err != nil {
		t.Fatalf("%s on %s cannot ping %s: %v", ctr, h.Name, target, err)
	}
}
