package engine

import (
	"context"
	"fmt"
	"net"
	"syscall"
)

// PID returns the process ID of the engine, as the caller's PID namespace
// numbers it (0 when the engine's process is not in it): the peer of a
// connection to its socket.
func (c *Client) PID(ctx context.Context) (int, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return 0, fmt.Errorf("engine API at %s: %w", c.socket, err)
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var serr error
	err = raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("engine's process at %s: %w", c.socket, err)
	}
	return int(cred.Pid), nil
}
