package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/dataplane"
)

// Kernel entries, per change: in a network namespace of its own (no lab,
// no engine), one segment's VXLAN device holding KernelEntries remote
// endpoints, each an FDB and a neighbour entry. One endpoint more is
// added, then removed, KernelReps times, each way:
//
//   - before: SetRemotes of the whole table, as the driver applied every
//     change until the per-change writes (it reads both tables back and
//     writes the difference; it stays as the periodic repair);
//   - after: SetRemote, then DeleteRemote, of that endpoint alone.
//
// The two ways alternate within each repetition, the first one rotating,
// so a drift of the machine's load favours neither.

// kernelNamespace is the name of the part's namespace, with the process ID.
const kernelNamespace = "weftbench-kernel"

// kernelPart measures the per-change kernel cost.
func kernelPart(ctx context.Context, o *Options) (*KernelResult, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root (it creates a network namespace)")
	}
	name := fmt.Sprintf("%s-%d", kernelNamespace, os.Getpid())
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	defer func() { _ = exec.Command("ip", "netns", "del", name).Run() }()
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	k, err := dataplane.NewKernelAt(ns, nil)
	if err != nil {
		return nil, err
	}
	defer k.Close()

	const vni = 4242
	if err := k.EnsureSegment(dataplane.Segment{VNI: vni, MTU: 1450, Port: 4790}); err != nil {
		return nil, err
	}
	n := o.KernelEntries
	r := &KernelResult{Entries: n}
	table := make([]dataplane.RemoteEndpoint, n)
	for i := range table {
		// 10.64.0.0/10 and 200 hosts, as a large swarm network would be.
		ip := net.IPv4(10, byte(64+i>>16), byte(i>>8), byte(i)).To4()
		table[i] = dataplane.RemoteEndpoint{IP: ip, MAC: net.HardwareAddr{2, 0x42, ip[0], ip[1], ip[2], ip[3]}, VTEP: net.IPv4(198, 18, 0, byte(i%200+1)).To4()}
	}
	start := time.Now()
	if _, err := k.SetRemotes(vni, table); err != nil {
		return r, fmt.Errorf("write %d remote endpoints: %w", n, err)
	}
	r.Fill = time.Since(start).Seconds()
	o.Logf("kernel: %d remote endpoints written in %.2f s", n, r.Fill)

	one := dataplane.RemoteEndpoint{IP: net.IPv4(10, 127, 255, 254).To4(), MAC: net.HardwareAddr{2, 0x42, 10, 127, 255, 254}, VTEP: net.IPv4(198, 18, 0, 1).To4()}
	more := append(slices.Clone(table), one)
	ms := func(f func() error) (float64, error) {
		t := time.Now()
		err := f()
		return float64(time.Since(t).Microseconds()) / 1000, err
	}
	before := func() error {
		add, err := ms(func() error { return repaired(k.SetRemotes(vni, more)) })
		if err != nil {
			return err
		}
		del, err := ms(func() error { return repaired(k.SetRemotes(vni, table)) })
		r.TableAdd, r.TableRemove = append(r.TableAdd, add), append(r.TableRemove, del)
		return err
	}
	after := func() error {
		add, err := ms(func() error { return k.SetRemote(vni, one) })
		if err != nil {
			return err
		}
		del, err := ms(func() error { return k.DeleteRemote(vni, one) })
		r.OneAdd, r.OneRemove = append(r.OneAdd, add), append(r.OneRemove, del)
		return err
	}
	for rep := range o.KernelReps {
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		ways := []func() error{before, after}
		if rep%2 == 1 {
			ways[0], ways[1] = after, before
		}
		for _, way := range ways {
			if err := way(); err != nil {
				return r, fmt.Errorf("repetition %d: %w", rep+1, err)
			}
		}
	}
	// The table must be what it was: every change was undone.
	if got, err := k.Remotes(vni); err != nil || len(got) != n {
		return r, fmt.Errorf("after the repetitions the device holds %d remote endpoints (%v), want %d", len(got), err, n)
	}
	o.Logf("kernel: per change at %d endpoints: whole table add %.2f ms, remove %.2f ms; one endpoint add %.2f ms, remove %.2f ms (medians of %d)",
		n, Summarize(r.TableAdd).Median, Summarize(r.TableRemove).Median, Summarize(r.OneAdd).Median, Summarize(r.OneRemove).Median, o.KernelReps)
	return r, nil
}

// repaired turns a SetRemotes that changed anything but the one endpoint
// (one FDB and one neighbour entry) into an error: the figure would not be
// one change.
func repaired(rep dataplane.Repair, err error) error {
	if err != nil {
		return err
	}
	if rep.FDBAdded+rep.FDBRemoved != 1 || rep.NeighAdded+rep.NeighRemoved != 1 {
		return fmt.Errorf("one change repaired as %+v", rep)
	}
	return nil
}
