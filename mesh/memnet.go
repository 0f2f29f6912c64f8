package mesh

// This file owns MemNetwork, an in-memory network of memberlist
// transports for the tests of the mesh and of its users.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemNetwork is an in-memory network for memberlist transports, for tests
// of the mesh and of its users: no sockets, any number of members in one
// process. Unlike memberlist's MockNetwork it behaves like a lossy network:
// packets to an absent, closed or cut-off address are dropped rather than
// blocking the sender, a full receive queue drops packets like a full
// socket buffer, and Partition cuts groups of addresses apart.
//
// It emulates hosts too, for Config.HostProbe (MemTransport.ProbeHost):
// the host of an address answers while a transport is attached at its IP,
// or while KeepHost says it stays up without one (its weft is down, its
// kernel alive); a host with neither is gone, as is one cut off by
// Partition.
type MemNetwork struct {
	mu    sync.Mutex
	nodes map[string]*MemTransport // by "ip:port"; guarded by mu
	group map[string]int           // address -> partition group; guarded by mu
	kept  map[string]bool          // host IPs up without a transport; guarded by mu
	next  int                      // guarded by mu
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: make(map[string]*MemTransport), group: make(map[string]int), kept: make(map[string]bool)}
}

// KeepHost says whether the host of addr ("ip" or "ip:port") answers
// probes while no transport is attached at its IP: true emulates a host
// whose weft is down while its kernel still answers (a disabled plugin);
// false, the default, a host that is gone once its transports are.
func (n *MemNetwork) KeepHost(addr string, up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if up {
		n.kept[hostOf(addr)] = true
	} else {
		delete(n.kept, hostOf(addr))
	}
}

// hostOf returns the IP of "ip:port", or addr itself.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// probe reports whether from reaches a host at addr's IP that answers.
func (n *MemNetwork) probe(from, addr string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, b := n.group[from], n.group[addr]; a != 0 && b != 0 && a != b {
		return fmt.Errorf("memnet: host of %s is cut off from %s", addr, from)
	}
	host := hostOf(addr)
	if n.kept[host] {
		return nil
	}
	for _, t := range n.nodes {
		if hostOf(t.key) == host {
			return nil
		}
	}
	return fmt.Errorf("memnet: no host at %s", host)
}

// memQueue is a transport's receive queue, in packets.
const memQueue = 4096

// NewTransport attaches a transport at addr ("ip:port"), or at the next free
// address 10.99.x.y:DefaultPort if addr is empty. An address can be reused
// once the transport holding it has shut down, as a restarted host would.
func (n *MemNetwork) NewTransport(addr string) (*MemTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if addr == "" {
		for {
			n.next++
			addr = net.JoinHostPort(fmt.Sprintf("10.99.%d.%d", n.next/250, n.next%250+1), strconv.Itoa(DefaultPort))
			if n.nodes[addr] == nil {
				break
			}
		}
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("memnet address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	port, err := strconv.Atoi(p)
	if ip == nil || err != nil {
		return nil, fmt.Errorf("memnet address %q: want ip:port", addr)
	}
	if n.nodes[addr] != nil {
		return nil, fmt.Errorf("memnet address %s is in use", addr)
	}
	t := &MemTransport{
		net:     n,
		addr:    &net.UDPAddr{IP: ip, Port: port},
		key:     addr,
		packets: make(chan *memberlist.Packet, memQueue),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	n.nodes[addr] = t
	return t, nil
}

// Partition cuts the network into the given groups of addresses: members
// of different groups cannot reach each other. Addresses in no group reach
// everyone. It replaces any earlier partition; connections already open
// stay up.
func (n *MemNetwork) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.group)
	for i, g := range groups {
		for _, a := range g {
			n.group[a] = i + 1
		}
	}
}

// Heal removes any partition.
func (n *MemNetwork) Heal() { n.Partition() }

// route returns the transport at addr if from may reach it.
func (n *MemNetwork) route(from, addr string) (*MemTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.nodes[addr]
	if t == nil {
		return nil, fmt.Errorf("memnet: no host at %s", addr)
	}
	if a, b := n.group[from], n.group[addr]; a != 0 && b != 0 && a != b {
		return nil, fmt.Errorf("memnet: %s is cut off from %s", addr, from)
	}
	return t, nil
}

func (n *MemNetwork) remove(t *MemTransport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes[t.key] == t {
		delete(n.nodes, t.key)
	}
}

// MemTransport is one host's attachment to a MemNetwork. It implements
// memberlist.Transport.
type MemTransport struct {
	net     *MemNetwork
	addr    *net.UDPAddr
	key     string
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{} // closed by Shutdown
	once    sync.Once
}

var _ memberlist.Transport = (*MemTransport)(nil)

// Addr returns the transport's address, "ip:port".
func (t *MemTransport) Addr() string { return t.key }

// FinalAdvertiseAddr returns the transport's own address whatever is asked.
func (t *MemTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.addr.IP, t.addr.Port, nil
}

// WriteTo delivers a copy of b to addr, or drops it like UDP would.
func (t *MemTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	select {
	case <-t.done:
		return now, errors.New("memnet: transport is shut down")
	default:
	}
	dst, err := t.net.route(t.key, addr)
	if err != nil {
		return now, nil // lost, as a datagram would be
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: t.addr, Timestamp: now}
	select {
	case <-dst.done:
	case dst.packets <- p:
	default: // receive queue full: dropped
	}
	return now, nil
}

// PacketCh returns received packets.
func (t *MemTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout opens a stream to addr; it fails at once if addr is absent or
// cut off, like a refused or unroutable connection.
func (t *MemTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	select {
	case <-t.done:
		return nil, errors.New("memnet: transport is shut down")
	default:
	}
	dst, err := t.net.route(t.key, addr)
	if err != nil {
		return nil, err
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dst.streams <- remote:
		return local, nil
	case <-dst.done:
	case <-t.done:
	case <-timer.C:
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("memnet: dial %s: no answer", addr)
}

// ProbeHost implements HostProber: nil if the host of addr answers this
// transport (see MemNetwork). It answers at once, whatever ctx.
func (t *MemTransport) ProbeHost(_ context.Context, addr string) error {
	return t.net.probe(t.key, addr)
}

var _ HostProber = (*MemTransport)(nil)

// StreamCh returns accepted streams.
func (t *MemTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown detaches the transport; its address becomes free.
func (t *MemTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		t.net.remove(t)
	})
	return nil
}
