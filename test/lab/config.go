package lab

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"path/filepath"
	"regexp"
	"time"
)

// Config describes a lab. Start from DefaultConfig and change what you need;
// Up fills zero fields with their defaults.
type Config struct {
	// Name prefixes the lab's network namespaces (<Name>-h<i>) and cgroups,
	// and names its default directories. Two labs may run side by side only if
	// their Name, Bridge, VethPrefix, Underlay and roots all differ.
	Name string `json:"name"`

	// Hosts is the number of Docker hosts, named h1..hN.
	Hosts int `json:"hosts"`

	// Bridge is the underlay bridge in the root namespace.
	Bridge string `json:"bridge"`

	// VethPrefix names the root-side veth of host i: <VethPrefix><i>.
	// Keep it short: interface names hold at most 15 bytes.
	VethPrefix string `json:"veth_prefix"`

	// Underlay is the bridge's address and the underlay's prefix length.
	// Host i gets the i-th address of that subnet (after HostOffset), so the
	// defaults give 198.18.0.1, 198.18.0.2, ... with the bridge at .254.
	Underlay netip.Prefix `json:"underlay"`

	// HostOffset shifts the hosts' addresses: host i gets subnet base +
	// HostOffset + i.
	HostOffset int `json:"host_offset"`

	// MTU is set on the bridge, the veths and each host's eth0.
	MTU int `json:"mtu"`

	// Outside, when set, gives every host a second interface, eth1, that
	// carries its default route, apart from the underlay: a second bridge
	// in the root namespace (<Bridge>o, holding this address and prefix)
	// and a veth pair per host (<VethPrefix>o<i> there, eth1 inside, with
	// the host's address numbered as on the underlay). The underlay keeps
	// only its own subnet's route, so swarm's addresses, the mesh and VXLAN
	// stay on eth0 while everything bound elsewhere leaves by eth1. It
	// reproduces a host whose default route's interface has another MTU
	// than the one VXLAN uses. Unset (the default), eth0 carries the
	// default route.
	Outside netip.Prefix `json:"outside"`

	// OutsideMTU is set on the outside bridge, its veths and each host's
	// eth1; 9000 by default when Outside is set.
	OutsideMTU int `json:"outside_mtu"`

	// StateRoot holds each host's persistent state (data roots, logs,
	// weft's state dir): <StateRoot>/h<i>/...
	StateRoot string `json:"state_root"`

	// RunRoot holds each host's runtime files (sockets, exec roots, pid
	// files). Keep it short: unix socket paths under it must stay below 108
	// bytes, and dockerd puts 64-hex-digit names under its exec root.
	RunRoot string `json:"run_root"`

	// Swarm makes h1 a swarm manager and joins every other host.
	Swarm bool `json:"swarm"`

	// Managers is the number of swarm managers (h1..h<Managers>); the other
	// hosts join as workers.
	Managers int `json:"managers"`

	// Image builds weftlab/busybox:latest (busybox applets and iperf3) and
	// imports it on every host.
	Image bool `json:"image"`

	// PluginDir, if set, is a managed plugin directory (config.json and
	// rootfs/) installed and enabled on every host as PluginName, before
	// the swarm forms.
	PluginDir string `json:"plugin_dir"`

	// PluginName is the name the plugin is created under.
	PluginName string `json:"plugin_name"`

	// PluginSettings are extra "KEY=VALUE" settings passed to
	// "docker plugin set" besides the docker-socket and state mounts.
	PluginSettings []string `json:"plugin_settings"`

	// LogLevel is passed to containerd and dockerd.
	LogLevel string `json:"log_level"`

	// ShutdownTimeout is dockerd's --shutdown-timeout: how long it waits
	// for containers to stop when it is stopped.
	ShutdownTimeout time.Duration `json:"shutdown_timeout"`

	// StartTimeout bounds the wait for one daemon to answer, and for the
	// swarm to report every node Ready.
	StartTimeout time.Duration `json:"start_timeout"`

	// KeepLogs leaves <StateRoot>/logs in place on Down. Up always starts
	// with fresh logs.
	KeepLogs bool `json:"keep_logs"`

	// DockerdArgs are extra arguments for every dockerd.
	DockerdArgs []string `json:"dockerd_args"`

	// RegistryPort is the port of the lab's registry on the underlay
	// bridge's address (see StartRegistry); every engine trusts that
	// address and port as an insecure (plain HTTP) registry. 5000 by
	// default.
	RegistryPort int `json:"registry_port"`

	// DockerCLI is the docker client used for every command. It must be
	// the 20.10 client that matches the engine.
	DockerCLI string `json:"docker_cli"`

	// Dockerd and Containerd are the daemons' binaries.
	Dockerd    string `json:"dockerd"`
	Containerd string `json:"containerd"`

	// Busybox and Iperf3 are the binaries the test image is made of.
	Busybox string `json:"busybox"`
	Iperf3  string `json:"iperf3"`

	// Logf receives progress messages; nil discards them. Tests pass
	// t.Logf.
	Logf func(format string, args ...any) `json:"-"`
}

// ImageTag is the tag of the test image built when Config.Image is set.
const ImageTag = "weftlab/busybox:latest"

// DefaultConfig returns a 3-host lab without swarm, image or plugin.
func DefaultConfig() Config {
	return Config{
		Name:            "weftlab",
		Hosts:           3,
		Bridge:          "weftlab0",
		VethPrefix:      "wlh",
		Underlay:        netip.MustParsePrefix("198.18.0.254/24"),
		MTU:             1500,
		StateRoot:       "/var/lib/weftlab",
		RunRoot:         "/run/weftlab",
		Managers:        1,
		RegistryPort:    5000,
		PluginName:      "weft:latest",
		LogLevel:        "info",
		ShutdownTimeout: 5 * time.Second,
		StartTimeout:    60 * time.Second,
		DockerCLI:       "/usr/bin/docker",
		Dockerd:         "dockerd",
		Containerd:      "containerd",
		Busybox:         "/bin/busybox",
		Iperf3:          "/usr/bin/iperf3",
	}
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// Rename gives c another lab's name and what must differ with it for
// two labs to share one machine: the bridge <name>0, a veth prefix of
// letter and four hex digits derived from the name (letter: one that no
// other lab's prefix nor weft's devices start with), the underlay subnet
// (the bridge's address and prefix, apart from other labs'), and the
// default state and run roots.
func (c Config) Rename(name, subnet string, letter byte) (Config, error) {
	if subnet == "" {
		return c, fmt.Errorf("lab %s needs an underlay subnet of its own (the bridge's address and prefix, e.g. 198.18.4.254/24)", name)
	}
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return c, fmt.Errorf("lab %s: underlay subnet %q: %w", name, subnet, err)
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	c.Name, c.Bridge, c.Underlay = name, name+"0", p
	c.VethPrefix = fmt.Sprintf("%c%04x", letter, h.Sum32()&0xffff)
	c.StateRoot, c.RunRoot = "", ""
	return c, nil
}

// withDefaults fills zero fields from DefaultConfig and checks the result.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.Hosts == 0 {
		c.Hosts = d.Hosts
	}
	if c.Bridge == "" {
		c.Bridge = d.Bridge
	}
	if c.VethPrefix == "" {
		c.VethPrefix = d.VethPrefix
	}
	if !c.Underlay.IsValid() {
		c.Underlay = d.Underlay
	}
	if c.MTU == 0 {
		c.MTU = d.MTU
	}
	if c.Outside.IsValid() && c.OutsideMTU == 0 {
		c.OutsideMTU = 9000
	}
	if c.StateRoot == "" {
		c.StateRoot = filepath.Join("/var/lib", c.Name)
	}
	if c.RunRoot == "" {
		c.RunRoot = filepath.Join("/run", c.Name)
	}
	if c.Managers == 0 {
		c.Managers = d.Managers
	}
	if c.RegistryPort == 0 {
		c.RegistryPort = d.RegistryPort
	}
	if c.PluginName == "" {
		c.PluginName = d.PluginName
	}
	if c.LogLevel == "" {
		c.LogLevel = d.LogLevel
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = d.StartTimeout
	}
	if c.DockerCLI == "" {
		c.DockerCLI = d.DockerCLI
	}
	if c.Dockerd == "" {
		c.Dockerd = d.Dockerd
	}
	if c.Containerd == "" {
		c.Containerd = d.Containerd
	}
	if c.Busybox == "" {
		c.Busybox = d.Busybox
	}
	if c.Iperf3 == "" {
		c.Iperf3 = d.Iperf3
	}

	switch {
	case !namePattern.MatchString(c.Name):
		return c, fmt.Errorf("lab name %q: want a lowercase letter then up to 11 lowercase letters or digits", c.Name)
	case c.Hosts < 1 || c.Hosts > 99:
		return c, fmt.Errorf("lab %s: %d hosts: want 1 to 99", c.Name, c.Hosts)
	case c.Managers < 1 || c.Managers > c.Hosts:
		return c, fmt.Errorf("lab %s: %d swarm managers for %d hosts", c.Name, c.Managers, c.Hosts)
	case len(c.Bridge) > 15 || len(c.VethPrefix)+2 > 15:
		return c, fmt.Errorf("lab %s: bridge %q or veth prefix %q too long for an interface name", c.Name, c.Bridge, c.VethPrefix)
	case !c.Underlay.Addr().Is4():
		return c, fmt.Errorf("lab %s: underlay %s is not IPv4", c.Name, c.Underlay)
	case c.RegistryPort < 1 || c.RegistryPort > 65535:
		return c, fmt.Errorf("lab %s: registry port %d out of range", c.Name, c.RegistryPort)
	case c.MTU < 1280 || c.MTU > 65535:
		return c, fmt.Errorf("lab %s: MTU %d out of range", c.Name, c.MTU)
	case c.Outside.IsValid() && (!c.Outside.Addr().Is4() || c.Outside.Masked().Overlaps(c.Underlay.Masked())):
		return c, fmt.Errorf("lab %s: outside %s must be IPv4 and apart from the underlay %s", c.Name, c.Outside, c.Underlay)
	case c.Outside.IsValid() && (c.OutsideMTU < 1280 || c.OutsideMTU > 65535):
		return c, fmt.Errorf("lab %s: outside MTU %d out of range", c.Name, c.OutsideMTU)
	case c.Outside.IsValid() && (len(c.outsideBridge()) > 15 || len(c.VethPrefix)+3 > 15):
		return c, fmt.Errorf("lab %s: outside bridge %q or veth prefix %q too long for an interface name", c.Name, c.outsideBridge(), c.VethPrefix)
	case !filepath.IsAbs(c.StateRoot) || !filepath.IsAbs(c.RunRoot) || filepath.Clean(c.StateRoot) == "/" || filepath.Clean(c.RunRoot) == "/":
		return c, fmt.Errorf("lab %s: state root %q and run root %q must be absolute and not /", c.Name, c.StateRoot, c.RunRoot)
	case len(c.RunRoot) > 24:
		// <RunRoot>/hNN/d/plugins/<64 hex>/<socket> must fit in 108 bytes.
		return c, fmt.Errorf("lab %s: run root %q longer than 24 bytes; dockerd's sockets under it would not fit", c.Name, c.RunRoot)
	}
	c.StateRoot = filepath.Clean(c.StateRoot)
	c.RunRoot = filepath.Clean(c.RunRoot)
	for i := 1; i <= c.Hosts; i++ {
		if _, err := c.hostAddr(i); err != nil {
			return c, err
		}
		if c.Outside.IsValid() {
			if _, err := c.numbered(c.Outside, i); err != nil {
				return c, err
			}
		}
	}
	return c, nil
}

// hostAddr is the underlay address of host i.
func (c Config) hostAddr(i int) (netip.Addr, error) { return c.numbered(c.Underlay, i) }

// numbered is host i's address in subnet p (the underlay or the outside):
// the i-th after HostOffset.
func (c Config) numbered(p netip.Prefix, i int) (netip.Addr, error) {
	base := p.Masked().Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(c.HostOffset + i)
	a := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	if !p.Contains(a) || a == p.Addr() || a == lastAddr(p) {
		return a, fmt.Errorf("lab %s: host %d's address %s is not usable in subnet %s", c.Name, i, a, p)
	}
	return a, nil
}

// lastAddr is the broadcast address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func (c Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf("lab %s: "+format, append([]any{c.Name}, args...)...)
	}
}

// netnsName is host i's network namespace, as "ip netns" names it.
func (c Config) netnsName(i int) string { return fmt.Sprintf("%s-h%d", c.Name, i) }

// cgroupParent is where host i's containers' cgroups go.
func (c Config) cgroupParent(i int) string { return fmt.Sprintf("/%s-h%d", c.Name, i) }

// vethName is host i's root-side veth.
func (c Config) vethName(i int) string { return fmt.Sprintf("%s%d", c.VethPrefix, i) }

// outsideBridge is the bridge of the outside network (Config.Outside).
func (c Config) outsideBridge() string { return c.Bridge + "o" }

// outsideVethName is host i's root-side veth on the outside bridge.
func (c Config) outsideVethName(i int) string { return fmt.Sprintf("%so%d", c.VethPrefix, i) }

// logDir holds every daemon's log.
func (c Config) logDir() string { return filepath.Join(c.StateRoot, "logs") }

// stateFile records the config of a lab that is up, for Open.
func (c Config) stateFile() string { return filepath.Join(c.RunRoot, "lab.json") }
