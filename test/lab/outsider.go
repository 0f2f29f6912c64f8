package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
)

// Outsider is a machine on the lab's underlay that is no member of the
// cluster: a network namespace (<Name>-x<i>) with a veth on the lab's
// bridge (<VethPrefix>x<i> on the root side, eth0 inside) and an address
// of the underlay's subnet that no host has. Security tests play attackers
// from it. Cleanup removes outsiders with the lab.
type Outsider struct {
	// NetNS is the namespace's name, for "ip netns" and "ip -n".
	NetNS string
	addr  netip.Addr
	cfg   Config
	index int
}

// outsiderBase is added to the underlay's base address to number
// outsiders: hosts are numbered from 1, so the lab has room for 199 hosts.
const outsiderBase = 200

// AddOutsider creates outsider i (from 1): its namespace, its veth on the
// bridge, its address (the underlay's base + 200 + i) and a default route
// through the bridge.
func (l *Lab) AddOutsider(ctx context.Context, i int) (*Outsider, error) {
	c := l.cfg
	addr, err := c.numbered(c.Underlay, outsiderBase-c.HostOffset+i)
	if err != nil {
		return nil, fmt.Errorf("outsider %d: %w", i, err)
	}
	o := &Outsider{NetNS: fmt.Sprintf("%s-x%d", c.Name, i), addr: addr, cfg: c, index: i}
	if _, err := run(ctx, "ip", "netns", "add", o.NetNS); err != nil {
		return nil, fmt.Errorf("outsider %d: %w", i, err)
	}
	if err := addVeth(ctx, o.veth(), c.Bridge, o.NetNS, UnderlayIf, c.MTU); err != nil {
		_ = o.Remove(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("outsider %d: %w", i, err)
	}
	err = ipSteps(ctx, []string{"-n", o.NetNS},
		[]string{"link", "set", "lo", "up"},
		[]string{"addr", "add", fmt.Sprintf("%s/%d", addr, c.Underlay.Bits()), "dev", UnderlayIf},
		[]string{"link", "set", UnderlayIf, "up"},
		[]string{"route", "replace", "default", "via", c.Underlay.Addr().String(), "dev", UnderlayIf})
	if err != nil {
		_ = o.Remove(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("outsider %d: %w", i, err)
	}
	return o, nil
}

func (o *Outsider) veth() string { return o.cfg.VethPrefix + "x" + strconv.Itoa(o.index) }

// Addr is the outsider's own address on the underlay.
func (o *Outsider) Addr() netip.Addr { return o.addr }

// NetNSPath is the file of the outsider's namespace.
func (o *Outsider) NetNSPath() string { return filepath.Join("/run/netns", o.NetNS) }

// Exec runs a command in the outsider's namespace and returns its stdout
// without the final newline.
func (o *Outsider) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return run(ctx, "ip", slices.Concat([]string{"netns", "exec", o.NetNS, name}, args)...)
}

// ExecCmd returns an unstarted command that runs in the outsider's
// namespace.
func (o *Outsider) ExecCmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", slices.Concat([]string{"netns", "exec", o.NetNS, name}, args)...)
	cmd.Env = daemonEnv()
	return cmd
}

// Remove deletes the outsider's namespace, which takes its veth along.
func (o *Outsider) Remove(ctx context.Context) error {
	_, err := run(ctx, "ip", "netns", "del", o.NetNS)
	return err
}
