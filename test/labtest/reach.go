package labtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// CanPing reports whether ctr on h gets an ICMP echo reply from target (an
// address or a name).
func CanPing(h *lab.Host, ctr, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := h.Docker(ctx, "exec", ctr, "ping", "-c1", "-W1", target)
	return err
}

// CanFetch reports whether ctr on h fetches "weft-ok" from target:8080
// over TCP, as served by lab.ServerCmd. (busybox's nc, not its wget: wget
// -T crashes in busybox-static.)
func CanFetch(h *lab.Host, ctr, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.Docker(ctx, "exec", ctr, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$0" 8080`, target)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "weft-ok") {
		return fmt.Errorf("fetched %q, want weft-ok", out)
	}
	return nil
}

// Reach waits until ctr on h reaches target by ICMP and TCP.
func Reach(t testing.TB, h *lab.Host, ctr, target string, within time.Duration) {
	t.Helper()
	err := lab.WaitFor(context.Background(), within, 200*time.Millisecond, func() error {
		if err := CanPing(h, ctr, target); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		return CanFetch(h, ctr, target)
	})
	if err != nil {
		t.Fatalf("%s on %s cannot reach %s: %v", ctr, h.Name, target, err)
	}
}

// Unreachable checks that ctr on h reaches target by neither ICMP nor TCP.
func Unreachable(t testing.TB, h *lab.Host, ctr, target string) {
	t.Helper()
	if err := CanPing(h, ctr, target); err == nil {
		t.Fatalf("%s on %s pings %s, which it must not reach", ctr, h.Name, target)
	}
	if err := CanFetch(h, ctr, target); err == nil {
		t.Fatalf("%s on %s fetches from %s, which it must not reach", ctr, h.Name, target)
	}
}
