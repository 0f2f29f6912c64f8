package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// TestEncryptedNetwork: an -o encrypted network beside a plain one, a
// container of each on every host.
//   - every pair of hosts is connected on the encrypted network;
//   - a marker sent over TCP from h1 to h2 is seen in clear on h1's
//     underlay for the plain network (the capture's positive control)
//     and never for the encrypted one;
//   - a plaintext VXLAN frame crafted in h3's host namespace (a member's
//     address, the sender's real container as inner source) delivers an
//     echo request on the plain network (control) and nothing on the
//     encrypted one;
//   - key rotations while containers ping across every 10 ms, one way
//     around the three hosts: h2 alone (`weft tunnel rotate`), then h1 and
//     h3 at once: not one ping lost;
//   - the plugin restarted on h2 while containers ping across every 10 ms:
//     the plain network loses nothing, the encrypted one comes back, and
//     the gap is the figure.
func TestEncryptedNetwork(t *testing.T) {
	l := need(t)
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	labtest.CreateSwarmNetwork(t, l, "enc", "10.96.0.0/24", "encrypted")
	labtest.CreateSwarmNetwork(t, l, "clr", "10.97.0.0/24")
	hosts := []*lab.Host{h1, h2, h3}
	encIP, clrIP := map[string]string{}, map[string]string{}
	for _, h := range hosts {
		labtest.Run(t, h, "enc-"+h.Name, "enc")
		labtest.Run(t, h, "clr-"+h.Name, "clr")
		encIP[h.Name] = labtest.ContainerIP(t, h, "enc-"+h.Name, "enc")
		clrIP[h.Name] = labtest.ContainerIP(t, h, "clr-"+h.Name, "clr")
	}
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				labtest.Reach(t, a, "enc-"+a.Name, encIP[b.Name], 60*time.Second)
			}
		}
	}
	labtest.Reach(t, h1, "clr-h1", clrIP["h2"], 30*time.Second)
	rep := labtest.Status(t, h1)
	t.Logf("h1's encrypted links: %+v", rep.Links)
	if len(rep.Links) != 2 {
		t.Errorf("h1 shows %d encrypted links, want 2 (h2, h3): %+v", len(rep.Links), rep.Links)
	}
	for _, lk := range rep.Links {
		if lk.Path != "userspace" || lk.HandshakeAgeSeconds < 0 {
			t.Errorf("link %+v: want the userspace path with a handshake", lk)
		}
	}
	var encVNI, clrVNI uint32
	encID := strings.TrimSpace(h1.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", "enc"))
	clrID := strings.TrimSpace(h1.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", "clr"))
	for _, n := range rep.Networks {
		switch n.ID {
		case encID:
			encVNI = n.VNI
		case clrID:
			clrVNI = n.VNI
		}
	}
	if encVNI == 0 || clrVNI == 0 {
		t.Fatalf("h1's status lacks the networks: %+v", rep.Networks)
	}

	t.Run("marker", func(t *testing.T) {
		veth := l.Config().VethPrefix + "1"
		for _, c := range []struct {
			net, ctr, peer string
			clear          bool
		}{{"clr", "clr-h1", "clr-h2", true}, {"enc", "enc-h1", "enc-h2", false}} {
			marker := fmt.Sprintf("WEFT-MARKER-%s-%d", c.net, time.Now().UnixNano())
			capt := startCapture(t, veth, []byte(marker))
			h2.MustDocker(t, "exec", "-d", c.peer, "sh", "-c", "nc -l -p 5099 > /tmp/got")
			target := clrIP["h2"]
			if !c.clear {
				target = encIP["h2"]
			}
			err := lab.WaitFor(context.Background(), 20*time.Second, 300*time.Millisecond, func() error {
				_, _ = h1.Docker(context.Background(), "exec", c.ctr, "sh", "-c", "echo "+marker+" | nc -w 2 "+target+" 5099")
				out, _ := h2.Docker(context.Background(), "exec", c.peer, "cat", "/tmp/got")
				if !strings.Contains(out, marker) {
					return errors.New("marker not received yet")
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s: the marker did not reach the other host's container: %v", c.net, err)
			}
			frames, seen := capt.stop()
			t.Logf("FIGURE %s: marker delivered; %d frames captured on h1's underlay, marker in clear in %d", c.net, frames, seen)
			if c.clear && seen == 0 {
				t.Fatalf("positive control failed: the plain network's marker never showed on the underlay (%d frames captured)", frames)
			}
			if !c.clear && seen != 0 {
				t.Fatalf("the encrypted network's marker showed in clear on the underlay %d times", seen)
			}
		}
	})

	t.Run("plaintext", func(t *testing.T) {
		// h3 crafts VXLAN carrying an echo request from its own container
		// to h2's: plain network (control), then encrypted.
		for _, c := range []struct {
			net, src, dst string
			vni           uint32
			clear         bool
		}{{"clr", "clr-h3", "clr-h2", clrVNI, true}, {"enc", "enc-h3", "enc-h2", encVNI, false}} {
			srcMAC := containerMAC(t, h3, c.src, c.net)
			dstMAC := containerMAC(t, h2, c.dst, c.net)
			srcIP := netip.MustParseAddr(labtest.ContainerIP(t, h3, c.src, c.net))
			dstIP := netip.MustParseAddr(labtest.ContainerIP(t, h2, c.dst, c.net))
			frame := vxlanEcho(c.vni, srcMAC, dstMAC, srcIP, dstIP)
			before := icmpInEchos(t, h2, c.dst)
			sendRawUDP(t, h3, h2, 4790, frame, 20)
			var got int
			err := lab.WaitFor(context.Background(), 5*time.Second, 200*time.Millisecond, func() error {
				if got = icmpInEchos(t, h2, c.dst) - before; got < 18 {
					return fmt.Errorf("%d echo requests arrived", got)
				}
				return nil
			})
			t.Logf("FIGURE crafted plaintext VXLAN (vni %d, %s): %d of 20 echo requests delivered", c.vni, c.net, got)
			if c.clear && err != nil {
				t.Fatalf("positive control failed: crafted frames on the plain network delivered %d of 20, so 0 proves nothing", got)
			}
			if !c.clear && got != 0 {
				t.Fatalf("crafted plaintext frames for the encrypted VNI delivered %d echo requests", got)
			}
		}
		out, _ := h2.Exec(context.Background(), "nft", "list", "chain", "ip", "weft_sealed", "input")
		t.Logf("h2's arrival drop rule:\n%s", out)
		if !strings.Contains(out, "counter packets 20 ") {
			t.Errorf("h2's drop rule did not count the 20 crafted frames")
		}
	})

	t.Run("rotation", func(t *testing.T) {
		var pingers []*labtest.Pinger
		for i, h := range hosts {
			to := hosts[(i+1)%len(hosts)]
			pingers = append(pingers, labtest.StartPinger(t, h, "enc-rot-"+h.Name, "enc", encIP[to.Name]))
		}
		for _, p := range pingers {
			p.WaitMore(t, 100)
		}
		for _, step := range [][]*lab.Host{{h2}, {h1, h3}} {
			start := time.Now()
			from := map[*lab.Host]string{}
			for _, h := range step {
				wgs := wgLinks(t, h)
				if len(wgs) != 1 {
					t.Fatalf("%s has WireGuard interfaces %v before its rotation, want one", h.Name, wgs)
				}
				from[h] = wgs[0]
				out, err := labtest.WeftCLI(context.Background(), h, "tunnel", "--state", h.StateDir, "rotate")
				if err != nil {
					t.Fatalf("weft tunnel rotate on %s: %v\n%s", h.Name, err, out)
				}
				t.Logf("%s: %s", h.Name, strings.TrimSpace(out))
			}
			for _, h := range step {
				waitRotated(t, h, from[h])
			}
			t.Logf("FIGURE key rotation on %d host(s): done (new interface carrying, old one closed) after %s", len(step), time.Since(start).Round(100*time.Millisecond))
			for _, p := range pingers {
				p.WaitMore(t, 100)
			}
		}
		for _, p := range pingers {
			res := p.Stop(t)
			t.Logf("FIGURE key rotations, encrypted network: %s: %s", p, res)
			res.Check(t, p)
		}
	})

	t.Run("restart", func(t *testing.T) {
		enc := labtest.StartPinger(t, h1, "enc-ping", "enc", encIP["h2"])
		clr := labtest.StartPinger(t, h1, "clr-ping", "clr", clrIP["h2"])
		enc.WaitMore(t, 100)
		clr.WaitMore(t, 100)
		start := time.Now()
		h2.MustDocker(t, "plugin", "disable", "-f", pluginName)
		h2.MustDocker(t, "plugin", "enable", pluginName)
		t.Logf("FIGURE plugin disable -f + enable on h2 took %s", time.Since(start).Round(time.Millisecond))
		enc.WaitMore(t, 300)
		clr.WaitMore(t, 300)
		er, cr := enc.Stop(t), clr.Stop(t)
		t.Logf("FIGURE restart, encrypted (userspace WireGuard): %s = %d ms without replies (10 ms interval)", er, 10*len(er.Lost))
		t.Logf("FIGURE restart, plain network: %s", cr)
		cr.Check(t, clr)
		if er.Received < 100 {
			t.Errorf("encrypted network did not come back: %s", er)
		}
	})
}

// wgLinks returns the names of h's WireGuard interfaces (TUNs of the
// userspace path).
func wgLinks(t *testing.T, h *lab.Host) []string {
	t.Helper()
	out, err := h.Exec(context.Background(), "ip", "-o", "link", "show", "type", "tun")
	if err != nil {
		t.Fatalf("links of %s: %v", h.Name, err)
	}
	var wgs []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "weftwg") {
			wgs = append(wgs, strings.TrimSuffix(f[1], ":"))
		}
	}
	return wgs
}

// waitRotated waits until h's key rotation has finished: one WireGuard
// interface left, and not from, the one it began on.
func waitRotated(t *testing.T, h *lab.Host, from string) {
	t.Helper()
	err := lab.WaitFor(context.Background(), 60*time.Second, 200*time.Millisecond, func() error {
		if wgs := wgLinks(t, h); len(wgs) != 1 || wgs[0] == from {
			return fmt.Errorf("WireGuard interfaces on %s: %v (began on %s)", h.Name, wgs, from)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// containerMAC returns the MAC of ctr on network.
func containerMAC(t *testing.T, h *lab.Host, ctr, network string) net.HardwareAddr {
	t.Helper()
	s := strings.TrimSpace(h.MustDocker(t, "inspect", "-f", `{{with index .NetworkSettings.Networks "`+network+`"}}{{.MacAddress}}{{end}}`, ctr))
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("MAC of %s: %q: %v", ctr, s, err)
	}
	return mac
}

// vxlanEcho returns a VXLAN payload (header and inner frame) carrying an
// ICMP echo request.
func vxlanEcho(vni uint32, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr) []byte {
	icmp := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
	icmp = append(icmp, []byte("weft-crafted")...)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_ICMP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	out := []byte{0x08, 0, 0, 0}
	out = binary.BigEndian.AppendUint32(out, vni<<8)
	out = append(out, dstMAC...)
	out = append(out, srcMAC...)
	out = append(out, 0x08, 0x00)
	out = append(out, ip...)
	return append(out, icmp...)
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// sendRawUDP sends payload n times in UDP from h's underlay address to
// dst's port, as whole Ethernet frames on h's underlay interface through
// a packet socket opened in h's host namespace (the socket keeps its
// namespace; the thread is switched back before it is unlocked). A packet
// socket passes by h's own output rules, which keep an encrypted VNI's
// VXLAN off the underlay: the frame tests dst's arrival rule alone.
func sendRawUDP(t *testing.T, h, dst *lab.Host, port int, payload []byte, n int) {
	t.Helper()
	mac := func(x *lab.Host) net.HardwareAddr {
		out, err := x.Exec(context.Background(), "cat", "/sys/class/net/"+lab.UnderlayIf+"/address")
		m, perr := net.ParseMAC(strings.TrimSpace(out))
		if err != nil || perr != nil {
			t.Fatalf("underlay MAC of %s: %q %v %v", x.Name, out, err, perr)
		}
		return m
	}
	srcMAC, dstMAC := mac(h), mac(dst)
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], uint16(port))
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...) // checksum 0: none, allowed over IPv4
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	s4, d4 := h.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	frame := append(append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00), append(ip, udp...)...)
	var fd, ifindex int
	err := inNetNS(h.NetNS, func() error {
		ifi, err := net.InterfaceByName(lab.UnderlayIf)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		return err
	})
	if err != nil {
		t.Fatalf("packet socket in %s: %v", h.Name, err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], dstMAC)
	for range n {
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			t.Fatalf("send from %s: %v", h.Name, err)
		}
		time.Sleep(20 * time.Millisecond) // paces the echo requests, not a wait for a condition
	}
}

func inNetNS(name string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	defer func() { _ = netns.Set(orig) }()
	return f()
}

// capture counts frames on a root-namespace interface and those holding
// marker.
type capture struct {
	fd      int
	done    chan struct{}
	stopped chan struct{}
	mu      sync.Mutex
	frames  int
	seen    int
}

func startCapture(t *testing.T, ifname string, marker []byte) *capture {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatalf("capture interface %s: %v", ifname, err)
	}
	proto := uint16(unix.ETH_P_ALL<<8&0xff00 | unix.ETH_P_ALL>>8)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto))
	if err != nil {
		t.Fatalf("AF_PACKET socket: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		t.Fatalf("bind capture to %s: %v", ifname, err)
	}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	c := &capture{fd: fd, done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(c.stopped)
		buf := make([]byte, 65536)
		flags := 0
		for {
			select {
			case <-c.done:
				flags = unix.MSG_DONTWAIT // drain what is queued, then end
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, flags)
			if err != nil {
				if flags != 0 && errors.Is(err, unix.EAGAIN) {
					return
				}
				continue
			}
			c.mu.Lock()
			c.frames++
			if bytes.Contains(buf[:n], marker) {
				c.seen++
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.close(); <-c.stopped; unix.Close(fd) })
	return c
}

func (c *capture) close() {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
}

func (c *capture) stop() (frames, seen int) {
	c.close()
	<-c.stopped
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames, c.seen
}
