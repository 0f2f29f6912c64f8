package plugin

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/dns"
	"github.com/weftnet/weft/keyservice"
	"github.com/weftnet/weft/mesh"
)

// Config is everything the plugin process is told through its
// environment (the managed plugin's settable env, see config.json).
type Config struct {
	// Socket is where Docker reaches the plugin (WEFT_SOCKET).
	Socket string
	// LogLevel is debug, info, warn or error (LOG_LEVEL).
	LogLevel slog.Level
	// Scope is "global" for swarm-scoped networks or "local" (WEFT_SCOPE).
	Scope string
	// StateDir holds weft's persisted state (WEFT_STATE_DIR; the mount
	// named "state").
	StateDir string
	// DockerSocket is the engine's API socket (WEFT_DOCKER_SOCKET; the
	// mount named "docker-socket").
	DockerSocket string
	// VXLANPort is the UDP port of weft's VXLAN traffic (WEFT_VXLAN_PORT).
	VXLANPort int
	// MeshPort is the gossip port, TCP and UDP (WEFT_MESH_PORT).
	MeshPort int
	// Peers are mesh addresses to join besides the swarm managers
	// (WEFT_PEERS, comma-separated "ip" or "ip:port").
	Peers []string
	// AdvertiseAddr is this host's underlay address; empty asks the
	// engine (swarm's node address) (WEFT_ADVERTISE_ADDR).
	AdvertiseAddr netip.Addr
	// StatusAddr is the loopback address of the status endpoint, which
	// serves /status and /metrics (WEFT_STATUS_ADDR).
	StatusAddr string
	// MetricsAddr, if set, is one more address serving /metrics alone,
	// any address, for a Prometheus elsewhere (WEFT_METRICS_ADDR).
	MetricsAddr string
	// MeshKey seeds the mesh's keyring when the state directory has none
	// (WEFT_MESH_KEY, base64; the file mesh.key in the state directory
	// takes precedence and keeps the key out of `docker plugin inspect`).
	// A seed is used once. Swarm mode needs none.
	MeshKey string
	// MeshInsecure lets a local-mode host with no key run its mesh open
	// (WEFT_MESH_INSECURE=true); never a host that has had a key.
	MeshInsecure bool
	// SwarmDir is the engine's swarm directory, holding the node's swarm
	// certificates (WEFT_SWARM_DIR; the mount named "swarm").
	SwarmDir string
	// KeyPort is the TCP port of the key service managers run in swarm
	// mode (WEFT_KEY_PORT).
	KeyPort int
	// KeyRotation is how often managers make a new mesh key
	// (WEFT_KEY_ROTATION, a Go duration, or "never").
	KeyRotation time.Duration
	// Firewall keeps weft's ports to members with an nftables table of
	// weft's own (WEFT_FIREWALL, true by default).
	Firewall bool
	// SourceFilter lets a weft network's packets cross hosts only with
	// their endpoints' own MAC and address (WEFT_SOURCE_FILTER, true by
	// default; see antispoof).
	SourceFilter bool
	// DNSDomain is the domain weft's names are answered under, besides
	// bare (WEFT_DNS_DOMAIN).
	DNSDomain string
	// DNSUpstreams are the resolvers for names outside weft, "ip:port"
	// (WEFT_DNS_UPSTREAM: a comma-separated list, "none", or empty for
	// the nameservers of the host's /etc/resolv.conf).
	DNSUpstreams []string
	// IPAMBlock is the prefix length of the blocks hosts claim in a pool
	// (WEFT_IPAM_BLOCK, e.g. 26 or /26); 0 keeps the IPAM's default.
	IPAMBlock int
	// IPAMReclaim is how long a host must be unreachable before the
	// others take its address blocks back (WEFT_IPAM_RECLAIM, a Go
	// duration); 0 keeps the IPAM's default.
	IPAMReclaim time.Duration
	// DownGrace is how long the other hosts keep this host's endpoints
	// while its plugin is down and the host itself still answers
	// (WEFT_DOWN_GRACE, a Go duration; 0: not at all, they go as soon as
	// the mesh finds this host silent).
	DownGrace time.Duration
	// WGPort, WGSubnet and WGRotation set the encrypted networks'
	// WireGuard tunnel (tunnel.go); WGPort 0 turns it off.
	WGPort     int
	WGSubnet   netip.Prefix
	WGRotation time.Duration
}

// DefaultConfig returns the settings a plugin has with no environment.
func DefaultConfig() Config {
	return Config{
		Socket:       "/run/docker/plugins/weft.sock",
		LogLevel:     slog.LevelInfo,
		Scope:        network.GlobalScope,
		StateDir:     "/var/lib/weft",
		DockerSocket: "/var/run/docker.sock",
		VXLANPort:    4790,
		MeshPort:     7950,
		StatusAddr:   "127.0.0.1:7951",
		DNSDomain:    "weft.local",
		DownGrace:    mesh.DefaultConfig().DownGrace,
		SwarmDir:     "/var/lib/docker/swarm",
		KeyPort:      keyservice.DefaultPort,
		KeyRotation:  24 * time.Hour,
		Firewall:     true,
		SourceFilter: true,
		WGPort:       51820,
		WGSubnet:     netip.MustParsePrefix("10.250.0.0/16"),
		WGRotation:   24 * time.Hour,
	}
}

// ConfigFromEnv reads the configuration from getenv, returning one error
// naming every variable that is wrong.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

	if v := getenv("WEFT_SOCKET"); v != "" {
		c.Socket = v
	}
	if v := getenv("LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			bad("LOG_LEVEL=%q is not one of debug, info, warn, error", v)
		}
	}
	if v := getenv("WEFT_SCOPE"); v != "" {
		if v != network.GlobalScope && v != network.LocalScope {
			bad("WEFT_SCOPE=%q is neither global nor local", v)
		}
		c.Scope = v
	}
	if v := getenv("WEFT_STATE_DIR"); v != "" {
		c.StateDir = v
	}
	if v := getenv("WEFT_DOCKER_SOCKET"); v != "" {
		c.DockerSocket = v
	}
	port := func(name string, dst *int) {
		v := getenv(name)
		if v == "" {
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			bad("%s=%q is not a port number", name, v)
			return
		}
		*dst = n
	}
	port("WEFT_VXLAN_PORT", &c.VXLANPort)
	port("WEFT_MESH_PORT", &c.MeshPort)
	port("WEFT_KEY_PORT", &c.KeyPort)
	if v := getenv("WEFT_SWARM_DIR"); v != "" {
		c.SwarmDir = v
	}
	boolean := func(name string, dst *bool) {
		switch v := strings.ToLower(strings.TrimSpace(getenv(name))); v {
		case "":
		case "true", "1", "yes":
			*dst = true
		case "false", "0", "no":
			*dst = false
		default:
			bad("%s=%q is neither true nor false", name, v)
		}
	}
	boolean("WEFT_MESH_INSECURE", &c.MeshInsecure)
	boolean("WEFT_FIREWALL", &c.Firewall)
	boolean("WEFT_SOURCE_FILTER", &c.SourceFilter)
	rotation("WEFT_KEY_ROTATION", getenv, bad, &c.KeyRotation)
	if v := getenv("WEFT_PEERS"); v != "" {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			host := p
			if h, _, err := net.SplitHostPort(p); err == nil {
				host = h
			}
			if _, err := netip.ParseAddr(host); err != nil {
				bad("WEFT_PEERS entry %q is not an IP address or IP:port", p)
				continue
			}
			c.Peers = append(c.Peers, p)
		}
	}
	if v := getenv("WEFT_ADVERTISE_ADDR"); v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			bad("WEFT_ADVERTISE_ADDR=%q is not an IPv4 address", v)
		} else {
			c.AdvertiseAddr = a
		}
	}
	if v := getenv("WEFT_STATUS_ADDR"); v != "" {
		h, _, err := net.SplitHostPort(v)
		if err != nil {
			bad("WEFT_STATUS_ADDR=%q is not host:port", v)
		} else if ip, err := netip.ParseAddr(h); err != nil || !ip.IsLoopback() {
			bad("WEFT_STATUS_ADDR=%q must be a loopback address", v)
		} else {
			c.StatusAddr = v
		}
	}
	if v := getenv("WEFT_METRICS_ADDR"); v != "" {
		h, p, err := net.SplitHostPort(v)
		if _, perr := strconv.Atoi(p); err != nil || perr != nil {
			bad("WEFT_METRICS_ADDR=%q is not host:port", v)
		} else if _, err := netip.ParseAddr(h); err != nil && h != "" {
			bad("WEFT_METRICS_ADDR=%q: %q is not an IP address", v, h)
		} else {
			c.MetricsAddr = v
		}
	}
	if v := strings.TrimSpace(getenv("WEFT_MESH_KEY")); v != "" {
		if _, err := mesh.ParseKey(v); err != nil {
			bad("WEFT_MESH_KEY: %v", err)
		} else {
			c.MeshKey = v
		}
	}
	tunnelEnv(&c, getenv, bad)
	if v := getenv("WEFT_DNS_DOMAIN"); v != "" {
		v = strings.TrimSuffix(strings.ToLower(v), ".")
		if !dns.ValidName(v) {
			bad("WEFT_DNS_DOMAIN=%q is not a DNS name", getenv("WEFT_DNS_DOMAIN"))
		} else {
			c.DNSDomain = v
		}
	}
	switch v := strings.TrimSpace(getenv("WEFT_DNS_UPSTREAM")); v {
	case "none":
	case "":
		c.DNSUpstreams = resolvConf("/etc/resolv.conf")
	default:
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimSpace(u)
			if a, err := netip.ParseAddr(u); err == nil {
				c.DNSUpstreams = append(c.DNSUpstreams, net.JoinHostPort(a.String(), "53"))
			} else if ap, err := netip.ParseAddrPort(u); err == nil {
				c.DNSUpstreams = append(c.DNSUpstreams, ap.String())
			} else {
				bad("WEFT_DNS_UPSTREAM entry %q is not an IP address or IP:port", u)
			}
		}
	}
	if v := strings.TrimSpace(getenv("WEFT_IPAM_BLOCK")); v != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(v, "/"))
		if err != nil || n < 8 || n > 30 {
			bad("WEFT_IPAM_BLOCK=%q is not a prefix length from 8 to 30", v)
		} else {
			c.IPAMBlock = n
		}
	}
	if v := strings.TrimSpace(getenv("WEFT_IPAM_RECLAIM")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			bad("WEFT_IPAM_RECLAIM=%q is not a duration of 1s or more", v)
		} else {
			c.IPAMReclaim = d
		}
	}
	if v := strings.TrimSpace(getenv("WEFT_DOWN_GRACE")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 720*time.Hour {
			bad("WEFT_DOWN_GRACE=%q is not a duration from 0 to 720h", v)
		} else {
			c.DownGrace = d
		}
	}
	if c.VXLANPort == c.MeshPort {
		bad("WEFT_VXLAN_PORT and WEFT_MESH_PORT are both %d", c.VXLANPort)
	}
	if c.KeyPort == c.MeshPort || c.KeyPort == c.VXLANPort {
		bad("WEFT_KEY_PORT %d is the mesh's or VXLAN's port", c.KeyPort)
	}
	if c.MeshInsecure && c.Scope != network.LocalScope {
		bad("WEFT_MESH_INSECURE applies to local scope only: in swarm mode the mesh is keyed from the swarm's certificates")
	}
	if len(problems) > 0 {
		return c, fmt.Errorf("invalid plugin settings: %s", strings.Join(problems, "; "))
	}
	return c, nil
}

// resolvConf returns the nameservers of a resolv.conf file as "ip:53".
func resolvConf(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, net.JoinHostPort(a.String(), "53"))
			}
		}
	}
	return out
}

// EnvConfig reads the configuration from the process environment.
func EnvConfig() (Config, error) { return ConfigFromEnv(os.Getenv) }
