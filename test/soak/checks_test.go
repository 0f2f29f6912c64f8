package soak

// The soak's invariants beyond labtest.Check: reachability and names on a
// sample, addresses held once, the plugins' processes, the pinger's
// packets.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// endpoint is a running container's interface on a weft network, as the
// engine of its host has it.
type endpoint struct {
	host *lab.Host
	name string // container name
	ip   string
}

// netView is a weft network across the lab's engines.
type netView struct {
	name, gateway string
	eps           []endpoint
}

// engineView reads every weft network and its endpoints from every host's
// engine.
func engineView(ctx context.Context, l *lab.Lab) (map[string]*netView, error) {
	nets := map[string]*netView{}
	for _, h := range l.Hosts {
		ids, err := h.Docker(ctx, "network", "ls", "-q", "--filter", "driver="+pluginName)
		if err != nil {
			return nil, err
		}
		f := strings.Fields(ids)
		if len(f) == 0 {
			continue
		}
		out, err := h.Docker(ctx, append([]string{"network", "inspect", "--format", "{{json .}}"}, f...)...)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var n struct {
				Name string
				IPAM struct {
					Config []struct{ Subnet, Gateway string }
				}
				Containers map[string]struct{ Name, IPv4Address string }
			}
			if err := json.Unmarshal([]byte(line), &n); err != nil {
				return nil, fmt.Errorf("%s: network inspect: %w", h.Name, err)
			}
			nv := nets[n.Name]
			if nv == nil {
				nv = &netView{name: n.Name}
				nets[n.Name] = nv
			}
			if len(n.IPAM.Config) > 0 {
				nv.gateway = n.IPAM.Config[0].Gateway
				if nv.gateway == "" {
					if p, err := netip.ParsePrefix(n.IPAM.Config[0].Subnet); err == nil {
						nv.gateway = p.Masked().Addr().Next().String()
					}
				}
			}
			for _, c := range n.Containers {
				// Docker's load-balancer endpoint of a VIP network is no container.
				if strings.HasPrefix(c.Name, "lb-") || strings.HasSuffix(c.Name, "-endpoint") {
					continue
				}
				ip, _, _ := strings.Cut(c.IPv4Address, "/")
				nv.eps = append(nv.eps, endpoint{host: h, name: c.Name, ip: ip})
			}
		}
	}
	for _, nv := range nets {
		slices.SortFunc(nv.eps, func(a, b endpoint) int { return strings.Compare(a.host.Name+a.name, b.host.Name+b.name) })
	}
	return nets, nil
}

// addressesOnce fails if two endpoints of one network hold one address.
func addressesOnce(nets map[string]*netView) error {
	var dup []string
	for _, nv := range nets {
		seen := map[string]endpoint{}
		for _, e := range nv.eps {
			if o, ok := seen[e.ip]; ok {
				dup = append(dup, fmt.Sprintf("%s: %s held by %s on %s and %s on %s", nv.name, e.ip, o.name, o.host.Name, e.name, e.host.Name))
			}
			seen[e.ip] = e
		}
	}
	if len(dup) > 0 {
		slices.Sort(dup)
		return fmt.Errorf("address held twice: %s", strings.Join(dup, "; "))
	}
	return nil
}

// pairs draws up to n (from, to) pairs of distinct endpoints on one
// network, from networks with two or more.
func pairs(rng *rand.Rand, nets map[string]*netView, n int) [][2]endpoint {
	var names []string
	for name, nv := range nets {
		if len(nv.eps) >= 2 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var out [][2]endpoint
	for i := 0; i < n && len(names) > 0; i++ {
		nv := nets[names[rng.IntN(len(names))]]
		a := rng.IntN(len(nv.eps))
		b := rng.IntN(len(nv.eps) - 1)
		if b >= a {
			b++
		}
		out = append(out, [2]endpoint{nv.eps[a], nv.eps[b]})
	}
	return out
}

// reachSample checks that n sampled endpoints reach another of their
// network (ICMP), within a few seconds each.
func reachSample(ctx context.Context, rng *rand.Rand, nets map[string]*netView, n int) error {
	for _, p := range pairs(rng, nets, n) {
		from, to := p[0], p[1]
		err := lab.WaitFor(ctx, 10*time.Second, 500*time.Millisecond, func() error {
			return labtest.CanPing(from.host, from.name, to.ip)
		})
		if err != nil {
			return fmt.Errorf("%s on %s does not reach %s (%s on %s): %w", from.name, from.host.Name, to.ip, to.name, to.host.Name, err)
		}
	}
	return nil
}

// domain is weft's DNS domain in the lab (the default).
const domain = "weft.local"

// ipv4 finds the addresses in nslookup's answer (what follows "Name:").
var ipv4 = regexp.MustCompile(`\b\d+\.\d+\.\d+\.\d+\b`)

// lookup asks weft's name server at server for name from the container
// from, and returns the addresses answered, sorted.
func lookup(ctx context.Context, from endpoint, name, server string) ([]string, error) {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := from.host.Docker(c, "exec", from.name, "nslookup", name, server)
	_, answer, found := strings.Cut(out, "Name:")
	if !found {
		if err == nil {
			err = fmt.Errorf("no answer")
		}
		return nil, fmt.Errorf("nslookup %s %s in %s on %s: %w: %s", name, server, from.name, from.host.Name, err, strings.Join(strings.Fields(out), " "))
	}
	ips := ipv4.FindAllString(answer, -1)
	slices.Sort(ips)
	return slices.Compact(ips), nil
}

// dnsSample asks weft's name server of n sampled networks, from one of
// their containers, for another container's name and, where the network
// has a service with running tasks, for tasks.<service>, and compares the
// answers with the engines'.
func dnsSample(ctx context.Context, rng *rand.Rand, nets map[string]*netView, m *Model, n int) error {
	for _, p := range pairs(rng, nets, n) {
		from, to := p[0], p[1]
		nv := netOf(nets, from)
		want := []string{to.ip}
		// A name with a dot in it (a task's container name) is answered
		// under weft's domain only (README, Names).
		name := to.name
		if strings.Contains(name, ".") {
			name += "." + domain
		}
		err := lab.WaitFor(ctx, 15*time.Second, time.Second, func() error {
			got, err := lookup(ctx, from, name, nv.gateway)
			if err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s answered %v, the engines say %v", name, got, want)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("weft's DNS on %s: %w", nv.name, err)
		}
		for _, s := range m.Svcs {
			if s.Net != nv.name {
				continue
			}
			var tasks []string
			for _, e := range nv.eps {
				if strings.HasPrefix(e.name, s.Name+".") {
					tasks = append(tasks, e.ip)
				}
			}
			if len(tasks) == 0 {
				continue
			}
			slices.Sort(tasks)
			err := lab.WaitFor(ctx, 15*time.Second, time.Second, func() error {
				got, err := lookup(ctx, from, "tasks."+s.Name, nv.gateway)
				if err != nil {
					return err
				}
				if !slices.Equal(got, tasks) {
					return fmt.Errorf("tasks.%s answered %v, the engines say %v", s.Name, got, tasks)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("weft's DNS on %s: %w", nv.name, err)
			}
		}
	}
	return nil
}

func netOf(nets map[string]*netView, e endpoint) *netView {
	for _, nv := range nets {
		if slices.Contains(nv.eps, e) {
			return nv
		}
	}
	return nil
}

// pluginWatch tells restarts of the plugin not caused on purpose and
// panics in the engines' logs.
type pluginWatch struct {
	pids    map[*lab.Host]int
	offsets map[*lab.Host]int64
}

func newPluginWatch(l *lab.Lab) (*pluginWatch, error) {
	w := &pluginWatch{pids: map[*lab.Host]int{}, offsets: map[*lab.Host]int64{}}
	for _, h := range l.Hosts {
		if err := w.expect(h); err != nil {
			return nil, err
		}
		st, err := os.Stat(h.DockerdLog)
		if err != nil {
			return nil, err
		}
		w.offsets[h] = st.Size()
	}
	return w, nil
}

// expect takes h's plugin process as it is now as the expected one.
func (w *pluginWatch) expect(h *lab.Host) error {
	pid, err := labtest.FindPluginPID(h)
	w.pids[h] = pid
	return err
}

// panicLine matches what a Go program prints when it dies of a panic or a
// fatal error, as dockerd logs a plugin's output.
var panicLine = regexp.MustCompile(`(panic: |fatal error: |goroutine \d+ \[running\])`)

// check fails if a host's plugin process is not the expected one, or a
// host's engine logged a panic since the last check.
func (w *pluginWatch) check(l *lab.Lab) error {
	var problems []string
	for _, h := range l.Hosts {
		pid, err := labtest.FindPluginPID(h)
		if err != nil {
			problems = append(problems, err.Error())
		} else if pid != w.pids[h] {
			problems = append(problems, fmt.Sprintf("%s: plugin process %d, was %d: a restart not caused on purpose", h.Name, pid, w.pids[h]))
		}
		b, err := os.ReadFile(h.DockerdLog)
		if err != nil {
			return err
		}
		if int64(len(b)) < w.offsets[h] {
			w.offsets[h] = 0
		}
		for _, line := range strings.Split(string(b[w.offsets[h]:]), "\n") {
			if panicLine.MatchString(line) {
				problems = append(problems, fmt.Sprintf("%s: engine log: %s", h.Name, line))
			}
		}
		w.offsets[h] = int64(len(b))
	}
	if len(problems) > 0 {
		return fmt.Errorf("plugin: %s", strings.Join(problems, "; "))
	}
	return nil
}

// pingLosses counts the sequence numbers missing from a busybox ping's
// output (one line per reply, seq wrapping at 65536) before its last
// reply, and the replies seen, and names the gaps.
func pingLosses(out string) (lost, replies int, gaps []string) {
	prev, base := -1, 0
	var seqs []int
	for _, line := range strings.Split(out, "\n") {
		i := strings.Index(line, " seq=")
		if i < 0 || !strings.Contains(line, "bytes from") {
			continue
		}
		f := strings.Fields(line[i+5:])
		seq, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		if prev >= 0 && seq+base < prev-30000 {
			base += 65536
		}
		seq += base
		seqs = append(seqs, seq)
		prev = seq
	}
	replies = len(seqs)
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	if len(seqs) > 0 && seqs[0] > 0 {
		lost += seqs[0]
		gaps = append(gaps, fmt.Sprintf("0-%d", seqs[0]-1))
	}
	for i := 1; i < len(seqs); i++ {
		if d := seqs[i] - seqs[i-1] - 1; d > 0 {
			lost += d
			gaps = append(gaps, fmt.Sprintf("%d-%d", seqs[i-1]+1, seqs[i]-1))
		}
	}
	return lost, replies, gaps
}

// sameEndpoints reports whether a and b hold the same endpoints.
func sameEndpoints(a, b map[string]*netView) bool {
	if len(a) != len(b) {
		return false
	}
	for name, nv := range a {
		if o := b[name]; o == nil || !slices.Equal(nv.eps, o.eps) {
			return false
		}
	}
	return true
}
