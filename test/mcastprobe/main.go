// Command mcastprobe sends and receives UDP broadcast and multicast on one
// network of a container, for weft's end-to-end tests (a static binary in
// a one-file image). The network is named by its subnet: the interface
// holding an address in it carries the traffic, whatever the container's
// default route (Docker's gateway bridge) says.
//
//	mcastprobe listen SUBNET GROUP PORT   join GROUP there, print "got MSG" per datagram to PORT
//	mcastprobe send SUBNET ADDR:PORT MSG COUNT   send MSG COUNT times, 100 ms apart
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mcastprobe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 4 && len(args) != 5 {
		return errors.New("usage: listen SUBNET GROUP PORT | send SUBNET ADDR:PORT MSG COUNT")
	}
	subnet, err := netip.ParsePrefix(args[1])
	if err != nil {
		return err
	}
	ifi, err := ifaceIn(subnet)
	if err != nil {
		return err
	}
	switch args[0] {
	case "listen":
		return listen(ifi, args[2], args[3])
	case "send":
		if len(args) != 5 {
			return errors.New("send needs SUBNET ADDR:PORT MSG COUNT")
		}
		n, err := strconv.Atoi(args[4])
		if err != nil {
			return err
		}
		return send(ifi, args[2], args[3], n)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// ifaceIn returns the interface holding an address in subnet.
func ifaceIn(subnet netip.Prefix) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifi := range ifs {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && subnet.Contains(p.Addr()) {
				return &ifi, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface has an address in %s", subnet)
}

// control returns a socket option setter for net.ListenConfig.
func control(f func(fd int) error) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = f(int(fd)) }); err != nil {
			return err
		}
		return serr
	}
}

func listen(ifi *net.Interface, group, port string) error {
	g, err := netip.ParseAddr(group)
	if err != nil || !g.Is4() || !g.IsMulticast() {
		return fmt.Errorf("group %q is not an IPv4 multicast address", group)
	}
	lc := net.ListenConfig{Control: control(func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		m := &unix.IPMreqn{Ifindex: int32(ifi.Index), Multiaddr: g.As4()}
		return unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, m)
	})}
	c, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:"+port)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s, member of %s\n", ifi.Name, g)
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		fmt.Printf("got %s from %s\n", buf[:n], from)
	}
}

func send(ifi *net.Interface, to, msg string, count int) error {
	dst, err := net.ResolveUDPAddr("udp4", to)
	if err != nil {
		return err
	}
	lc := net.ListenConfig{Control: control(func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
			return err
		}
		// Out of the network's interface, for multicast and broadcast
		// alike: the default route leads to Docker's gateway bridge.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 4); err != nil {
			return err
		}
		return unix.BindToDevice(fd, ifi.Name)
	})}
	c, err := lc.ListenPacket(context.Background(), "udp4", ":0")
	if err != nil {
		return err
	}
	defer c.Close()
	for i := range count {
		if i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := c.WriteTo([]byte(msg), dst); err != nil {
			return fmt.Errorf("send to %s: %w", dst, err)
		}
	}
	return nil
}
