package soak

// The operation scheduler: what the soak does next, drawn from a seeded
// generator and the soak's own model of what it made (never from what the
// lab reports), so that one seed gives one sequence of operations and a
// run can be replayed from its seed.

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of operation.
type Kind string

// The kinds of operation, and what each does to the lab.
const (
	CtrStart      Kind = "ctr-start"      // a new serving container on a host and a network
	CtrStop       Kind = "ctr-stop"       // docker stop a running container
	CtrKill       Kind = "ctr-kill"       // docker kill a running container
	CtrRestart    Kind = "ctr-restart"    // docker start a stopped container again
	CtrRemove     Kind = "ctr-rm"         // docker rm a stopped container
	SvcCreate     Kind = "svc-create"     // a service, dnsrr or VIP, 1-3 replicas
	SvcScale      Kind = "svc-scale"      // a service scaled to 0-4 replicas
	SvcRemove     Kind = "svc-rm"         // a service removed
	NetCreate     Kind = "net-create"     // a swarm network of weft's, encrypted if none is, else one in three
	WGRotate      Kind = "wg-rotate"      // weft tunnel rotate on a host with a container on an encrypted network
	NetRemove     Kind = "net-rm"         // a network removed, with its containers and services
	PluginRestart Kind = "plugin-restart" // docker plugin disable -f, enable at once
	PluginKill    Kind = "plugin-kill"    // the plugin's process killed; Docker starts it again
	PluginDown    Kind = "plugin-down"    // the plugin disabled for Dur (under its down grace), enabled
	EngineRestart Kind = "engine-restart" // dockerd stopped and started (its containers stop)
	LinkCut       Kind = "link-cut"       // the host's underlay link down for Dur
	Partition     Kind = "partition"      // the host's underlay traffic with the others dropped for Dur
	StateDamage   Kind = "state-damage"   // plugin disabled, state directory emptied or garbled, enabled
)

// Faults are the kinds that disturb a host rather than change what runs.
var Faults = []Kind{PluginRestart, PluginKill, PluginDown, EngineRestart, LinkCut, Partition, StateDamage}

// DefaultWeights weigh every kind: churn often, faults now and then.
var DefaultWeights = map[Kind]int{
	CtrStart: 10, CtrStop: 4, CtrKill: 3, CtrRestart: 3, CtrRemove: 3,
	SvcCreate: 3, SvcScale: 4, SvcRemove: 2,
	NetCreate: 2, NetRemove: 1, WGRotate: 2,
	PluginRestart: 2, PluginKill: 1, PluginDown: 1,
	EngineRestart: 1, LinkCut: 1, Partition: 1, StateDamage: 1,
}

// CIKinds are the kinds of the short soak `make test` runs: churn and
// plugin restarts, whose settle times fit a few minutes.
var CIKinds = []Kind{CtrStart, CtrStop, CtrKill, CtrRestart, CtrRemove, SvcCreate, SvcScale, SvcRemove, NetCreate, NetRemove, WGRotate, PluginRestart, PluginKill}

// ParseKinds reads a comma-separated list of kinds ("" or "all": every
// kind; "ci": CIKinds).
func ParseKinds(s string) ([]Kind, error) {
	switch strings.TrimSpace(s) {
	case "", "all":
		return allKinds(), nil
	case "ci":
		return slices.Clone(CIKinds), nil
	}
	var out []Kind
	for _, f := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(f))
		if _, ok := DefaultWeights[k]; !ok {
			return nil, fmt.Errorf("unknown operation kind %q: want some of %v, or all, or ci", f, allKinds())
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

func allKinds() []Kind {
	var out []Kind
	for k := range DefaultWeights {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Limits keep the lab lean on a 2-core machine.
type Limits struct {
	Hosts     int // hosts h1..hN; host indexes in Op are 0-based
	Networks  int // networks besides the base network
	Running   int // running containers of the soak's own (not tasks)
	Services  int
	Replicas  int // most replicas of one service
	FaultHost int // the one host that link cuts, partitions and engine restarts hit (0-based)
}

// DefaultLimits is the 3-host lab's: h3 takes the faults that cut flows,
// so that a pinger pair between h1 and h2 must lose nothing.
var DefaultLimits = Limits{Hosts: 3, Networks: 3, Running: 8, Services: 2, Replicas: 3, FaultHost: 2}

// Op is one operation, fully drawn: replaying a seed gives the same Ops.
type Op struct {
	Seq      int
	Kind     Kind
	Host     int           // 0-based host index, where the kind has one
	Name     string        // the container, service or network acted on
	Net      string        // the network a new container or service joins
	Subnet   string        // a new network's subnet
	Crypt    bool          // net-create: -o encrypted
	Replicas int           // svc-create, svc-scale
	VIP      bool          // svc-create: default (VIP) endpoint mode, else dnsrr
	Dur      time.Duration // plugin-down, link-cut, partition
	Damage   string        // state-damage: "missing" or "corrupt"
}

func (o Op) String() string {
	s := fmt.Sprintf("#%d %s", o.Seq, o.Kind)
	add := func(f string, a ...any) { s += " " + fmt.Sprintf(f, a...) }
	switch o.Kind {
	case CtrStart:
		add("%s on h%d net %s", o.Name, o.Host+1, o.Net)
	case CtrStop, CtrKill, CtrRestart, CtrRemove:
		add("%s on h%d", o.Name, o.Host+1)
	case SvcCreate:
		mode := "dnsrr"
		if o.VIP {
			mode = "vip"
		}
		add("%s net %s %s replicas %d", o.Name, o.Net, mode, o.Replicas)
	case SvcScale:
		add("%s replicas %d", o.Name, o.Replicas)
	case SvcRemove:
		add("%s", o.Name)
	case NetCreate:
		add("%s %s", o.Name, o.Subnet)
		if o.Crypt {
			add("encrypted")
		}
	case WGRotate:
		add("h%d", o.Host+1)
	case NetRemove:
		add("%s", o.Name)
	case PluginRestart, PluginKill, EngineRestart:
		add("h%d", o.Host+1)
	case PluginDown, LinkCut, Partition:
		add("h%d for %s", o.Host+1, o.Dur)
	case StateDamage:
		add("h%d %s", o.Host+1, o.Damage)
	}
	return s
}

// BaseNet is the network the soak starts with and never removes: the
// pinger pair lives on it.
const BaseNet = "sk-base"

// Model is what the soak made, as it meant it: its networks, its
// containers and services.
type Model struct {
	Nets []*NetM
	Ctrs []*CtrM
	Svcs []*SvcM
	next int // names and subnets are numbered from it
}

// NetM is a network of the model.
type NetM struct {
	Name, Subnet string
	Crypt        bool // -o encrypted
}

// CtrM is a container of the model.
type CtrM struct {
	Name    string
	Host    int
	Net     string
	Running bool
}

// SvcM is a service of the model.
type SvcM struct {
	Name, Net string
	Replicas  int
	VIP       bool
}

// NewModel holds the base network only.
func NewModel() *Model {
	return &Model{Nets: []*NetM{{Name: BaseNet, Subnet: "10.97.0.0/24"}}, next: 1}
}

// Running counts the running containers.
func (m *Model) Running() int {
	n := 0
	for _, c := range m.Ctrs {
		if c.Running {
			n++
		}
	}
	return n
}

// sealed returns the running containers on encrypted networks.
func (m *Model) sealed() []*CtrM {
	var out []*CtrM
	for _, c := range m.ctrs(true) {
		if slices.ContainsFunc(m.Nets, func(n *NetM) bool { return n.Name == c.Net && n.Crypt }) {
			out = append(out, c)
		}
	}
	return out
}

func (m *Model) ctrs(running bool) []*CtrM {
	var out []*CtrM
	for _, c := range m.Ctrs {
		if c.Running == running {
			out = append(out, c)
		}
	}
	return out
}

// Apply changes the model as op means to: what the lab should hold after
// it.
func (m *Model) Apply(op Op) {
	find := func(name string) *CtrM {
		for _, c := range m.Ctrs {
			if c.Name == name {
				return c
			}
		}
		return nil
	}
	switch op.Kind {
	case CtrStart:
		m.Ctrs = append(m.Ctrs, &CtrM{Name: op.Name, Host: op.Host, Net: op.Net, Running: true})
	case CtrStop, CtrKill:
		find(op.Name).Running = false
	case CtrRestart:
		find(op.Name).Running = true
	case CtrRemove:
		m.Ctrs = slices.DeleteFunc(m.Ctrs, func(c *CtrM) bool { return c.Name == op.Name })
	case SvcCreate:
		m.Svcs = append(m.Svcs, &SvcM{Name: op.Name, Net: op.Net, Replicas: op.Replicas, VIP: op.VIP})
	case SvcScale:
		for _, s := range m.Svcs {
			if s.Name == op.Name {
				s.Replicas = op.Replicas
			}
		}
	case SvcRemove:
		m.Svcs = slices.DeleteFunc(m.Svcs, func(s *SvcM) bool { return s.Name == op.Name })
	case NetCreate:
		m.Nets = append(m.Nets, &NetM{Name: op.Name, Subnet: op.Subnet, Crypt: op.Crypt})
	case NetRemove:
		m.Ctrs = slices.DeleteFunc(m.Ctrs, func(c *CtrM) bool { return c.Net == op.Name })
		m.Svcs = slices.DeleteFunc(m.Svcs, func(s *SvcM) bool { return s.Net == op.Name })
		m.Nets = slices.DeleteFunc(m.Nets, func(n *NetM) bool { return n.Name == op.Name })
	case EngineRestart:
		// dockerd stops its containers; the soak's have no restart policy.
		for _, c := range m.Ctrs {
			if c.Host == op.Host {
				c.Running = false
			}
		}
	}
	if op.Kind == CtrStart || op.Kind == SvcCreate || op.Kind == NetCreate {
		m.next++
	}
}

// Scheduler draws the next operation from a seeded generator.
type Scheduler struct {
	rng     *rand.Rand
	kinds   []Kind
	weights map[Kind]int
	lim     Limits
	seq     int
}

// NewScheduler draws from seed among kinds, weighted by DefaultWeights.
func NewScheduler(seed uint64, kinds []Kind, lim Limits) *Scheduler {
	ks := slices.Clone(kinds)
	slices.Sort(ks)
	return &Scheduler{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), kinds: ks, weights: DefaultWeights, lim: lim}
}

// applicable says whether kind can act on m now.
func (s *Scheduler) applicable(k Kind, m *Model) bool {
	switch k {
	case CtrStart:
		return m.Running() < s.lim.Running
	case CtrStop, CtrKill:
		return len(m.ctrs(true)) > 0
	case CtrRestart:
		return len(m.ctrs(false)) > 0 && m.Running() < s.lim.Running
	case CtrRemove:
		return len(m.ctrs(false)) > 0
	case SvcCreate:
		return len(m.Svcs) < s.lim.Services
	case SvcScale, SvcRemove:
		return len(m.Svcs) > 0
	case NetCreate:
		return len(m.Nets)-1 < s.lim.Networks
	case NetRemove:
		return len(m.Nets) > 1
	case WGRotate:
		return len(m.sealed()) > 0
	}
	return true
}

// Next draws the next operation for the model m (which it does not
// change: Apply the op once done).
func (s *Scheduler) Next(m *Model) Op {
	var cands []Kind
	total := 0
	for _, k := range s.kinds {
		if s.weights[k] > 0 && s.applicable(k, m) {
			cands = append(cands, k)
			total += s.weights[k]
		}
	}
	s.seq++
	op := Op{Seq: s.seq}
	if total == 0 {
		// Nothing fits (only container kinds and no container yet): start one.
		op.Kind = CtrStart
	} else {
		r := s.rng.IntN(total)
		for _, k := range cands {
			if r < s.weights[k] {
				op.Kind = k
				break
			}
			r -= s.weights[k]
		}
	}
	pickCtr := func(running bool) {
		cs := m.ctrs(running)
		c := cs[s.rng.IntN(len(cs))]
		op.Name, op.Host = c.Name, c.Host
	}
	pickNet := func(withBase bool) string {
		ns := m.Nets
		if !withBase {
			ns = ns[1:]
		}
		return ns[s.rng.IntN(len(ns))].Name
	}
	dur := func(min, max time.Duration) time.Duration {
		return min + time.Duration(s.rng.Int64N(int64(max-min)/int64(time.Second)+1))*time.Second
	}
	switch op.Kind {
	case CtrStart:
		op.Name = fmt.Sprintf("sk-c%d", m.next)
		op.Host = s.rng.IntN(s.lim.Hosts)
		op.Net = pickNet(true)
	case CtrStop, CtrKill:
		pickCtr(true)
	case CtrRestart, CtrRemove:
		pickCtr(false)
	case SvcCreate:
		op.Name = fmt.Sprintf("sk-s%d", m.next)
		op.Net = pickNet(true)
		op.Replicas = 1 + s.rng.IntN(s.lim.Replicas)
		op.VIP = s.rng.IntN(2) == 0
	case SvcScale, SvcRemove:
		sv := m.Svcs[s.rng.IntN(len(m.Svcs))]
		op.Name = sv.Name
		if op.Kind == SvcScale {
			// Another count than it has, 0 to Replicas+1.
			op.Replicas = s.rng.IntN(s.lim.Replicas + 1)
			if op.Replicas >= sv.Replicas {
				op.Replicas++
			}
		}
	case NetCreate:
		op.Name = fmt.Sprintf("sk-n%d", m.next)
		// The next free one of 10.97.1-250.0/24.
		for i := 0; ; i++ {
			op.Subnet = fmt.Sprintf("10.97.%d.0/24", 1+(m.next+i)%250)
			if !slices.ContainsFunc(m.Nets, func(n *NetM) bool { return n.Subnet == op.Subnet }) {
				break
			}
		}
		// Encrypted while the model has none (so that every run has one
		// soon), else one in three.
		op.Crypt = !slices.ContainsFunc(m.Nets, func(n *NetM) bool { return n.Crypt }) || s.rng.IntN(3) == 0
	case WGRotate:
		cs := m.sealed()
		op.Host = cs[s.rng.IntN(len(cs))].Host
	case NetRemove:
		op.Name = pickNet(false)
	case PluginRestart, PluginKill:
		op.Host = s.rng.IntN(s.lim.Hosts)
	case PluginDown:
		op.Host = s.rng.IntN(s.lim.Hosts)
		op.Dur = dur(5*time.Second, 20*time.Second)
	case StateDamage:
		op.Host = s.rng.IntN(s.lim.Hosts)
		op.Damage = []string{"missing", "corrupt"}[s.rng.IntN(2)]
	case EngineRestart:
		op.Host = s.lim.FaultHost
	case LinkCut:
		op.Host = s.lim.FaultHost
		op.Dur = dur(2*time.Second, 10*time.Second)
	case Partition:
		op.Host = s.lim.FaultHost
		op.Dur = dur(10*time.Second, 30*time.Second)
	}
	return op
}
