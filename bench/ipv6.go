package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// IPv6: weft carries IPv6 on dual-stack networks in local mode (swarm's
// allocator in the Docker this runs refuses --ipv6 for plugins). This part
// brings up a lab of its own, two engines in local mode, one dual-stack
// weft network across them, and measures h1 → h2 between the same two
// containers over their IPv4 and their IPv6 addresses, back to back in
// rotating order like the data plane, so that the report gives IPv6's
// figures as ratios of IPv4's from the same run.

// PartIPv6 is the IPv6 part.
const PartIPv6 = "ipv6"

// The IPv6 part's paths, network and lab.
const (
	NetWeft4 = "weft-ipv4" // a dual-stack weft network, over IPv4
	NetWeft6 = "weft-ipv6" // the same network and containers, over IPv6

	v6Net      = "wb-v6"
	v6Subnet4  = "10.201.4.0/24"
	v6Subnet6  = "fd00:201:4::/64"
	v6LabName  = "weftbench6"
	v6Bridge   = "weftbench6"
	v6Veth     = "wb6"
	v6Underlay = "198.18.4.254/24"
)

// IPv6Result is the IPv6 part's figures: NetWeft4 and NetWeft6, each
// metric once per repetition.
type IPv6Result struct {
	UnderlayMTU int       `json:"underlay_mtu"`
	Nets        []NetData `json:"nets"`
}

// Net returns the figures of one path, or nil.
func (r *IPv6Result) Net(name string) *NetData {
	for i := range r.Nets {
		if r.Nets[i].Net == name {
			return &r.Nets[i]
		}
	}
	return nil
}

// IPv6LabConfig is the IPv6 part's lab: two engines, no swarm, the
// plugin in local mode with a key of the lab's.
func IPv6LabConfig(pluginDir string, logf func(string, ...any)) lab.Config {
	cfg := LabConfig(pluginDir, 1500, logf)
	cfg.Name, cfg.Bridge, cfg.VethPrefix = v6LabName, v6Bridge, v6Veth
	cfg.Underlay = netip.MustParsePrefix(v6Underlay)
	cfg.Hosts = 2
	cfg.Swarm = false
	u := cfg.Underlay.Addr().As4()
	peers := fmt.Sprintf("%d.%d.%d.1,%d.%d.%d.2", u[0], u[1], u[2], u[0], u[1], u[2])
	cfg.PluginSettings = []string{
		"WEFT_SCOPE=local",
		"WEFT_PEERS=" + peers,
		"WEFT_DNS_UPSTREAM=none",
		"WEFT_MESH_KEY=d2VmdC1iZW5jaC12Ni1rZXktMzItYnl0ZXMtLS0tLS0=",
	}
	return cfg
}

// ipv6Part runs the IPv6 part in its own lab.
func ipv6Part(ctx context.Context, o *Options) (res *IPv6Result, err error) {
	cfg := IPv6LabConfig(o.PluginDir, o.Logf)
	upCtx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	l, err := lab.Up(upCtx, cfg)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("IPv6 lab: %w", err)
	}
	defer func() {
		if o.KeepLab {
			o.Logf("keeping lab %s up (remove it with: weftbench down)", v6LabName)
			return
		}
		if derr := l.Down(context.WithoutCancel(ctx)); derr != nil {
			o.Logf("IPv6 lab down: %v", derr)
		}
	}()
	h1, h2 := l.Hosts[0], l.Hosts[1]
	for _, h := range l.Hosts {
		if _, err := h.Docker(ctx, "network", "create", "-d", cfg.PluginName, "--ipam-driver", cfg.PluginName,
			"--ipv6", "--subnet", v6Subnet4, "--subnet", v6Subnet6, v6Net); err != nil {
			return nil, fmt.Errorf("dual-stack network on %s: %w", h.Name, err)
		}
	}
	e := &env{o: o, l: l, mtu: cfg.MTU}
	if err := e.run(ctx, h2, "srv-v6", v6Net, "", "sh", "-c", toolMount+" rrserver -l :"+rrPort+" & exec iperf3 -s"); err != nil {
		return nil, err
	}
	if err := e.run(ctx, h1, "cli-v6", v6Net, "", "sleep", "1000000"); err != nil {
		return nil, err
	}
	addr4, err := h2.Docker(ctx, "inspect", "-f", `{{with index .NetworkSettings.Networks "`+v6Net+`"}}{{.IPAddress}}{{end}}`, "srv-v6")
	if err != nil {
		return nil, err
	}
	addr6, err := h2.Docker(ctx, "inspect", "-f", `{{with index .NetworkSettings.Networks "`+v6Net+`"}}{{.GlobalIPv6Address}}{{end}}`, "srv-v6")
	if err != nil {
		return nil, err
	}
	addr4, addr6 = strings.TrimSpace(addr4), strings.TrimSpace(addr6)
	if a, perr := netip.ParseAddr(addr6); perr != nil || !a.Is6() {
		return nil, fmt.Errorf("srv-v6 on %s has no IPv6 address on %s (%q)", h2.Name, v6Net, addr6)
	}
	mtuOut, err := h1.Docker(ctx, "exec", "cli-v6", "cat", "/sys/class/net/eth0/mtu")
	if err != nil {
		return nil, err
	}
	mtu, _ := strconv.Atoi(strings.TrimSpace(mtuOut))
	exec := func(ctx context.Context, name string, args ...string) (string, error) {
		return h1.Docker(ctx, append([]string{"exec", "cli-v6", name}, args...)...)
	}
	paths := []path{
		{net: NetWeft4, addr: addr4, exec: exec, tool: toolMount, mtu: mtu},
		{net: NetWeft6, addr: addr6, exec: exec, tool: toolMount, mtu: mtu},
	}
	res = &IPv6Result{UnderlayMTU: cfg.MTU}
	if res.Nets, err = waitPaths(ctx, paths); err != nil {
		return res, err
	}
	measureRotating(ctx, o, paths, res.Nets, PartIPv6, "IPv6")
	return res, ctx.Err()
}

// hostPort joins an address (IPv4 or IPv6) and a port.
func hostPort(addr, port string) string { return net.JoinHostPort(addr, port) }

// ipv6Table writes the IPv6 part's figures and their ratios to IPv4's.
func ipv6Table(b *strings.Builder, r *Results) {
	if r.IPv6 == nil {
		return
	}
	v4, v6 := r.IPv6.Net(NetWeft4), r.IPv6.Net(NetWeft6)
	if v4 == nil || v6 == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## IPv6 on a dual-stack weft network, %d-byte underlay\n\n", r.IPv6.UnderlayMTU)
	p("h1 → h2 in a lab of its own (two engines, local mode), between the same two containers over their IPv4 and their IPv6 addresses, measured back to back. Interface MTU %d.\n\n", v4.MTU)
	p("| figure | IPv4 | IPv6 | IPv6 ÷ IPv4 |\n|---|---|---|---|\n")
	for _, m := range DataMetrics {
		mn := metricNames[m]
		p("| %s | %s | %s | %s |\n", mn.name, fmtS(Summarize(v4.Metrics[m]), mn.prec), fmtS(Summarize(v6.Metrics[m]), mn.prec),
			fmtS(Summarize(Ratios(v6.Metrics[m], v4.Metrics[m])), 2))
	}
	p("\n")
}
