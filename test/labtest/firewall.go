package labtest

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/test/lab"
)

var setElements = regexp.MustCompile(`(?s)elements = \{([^}]*)\}`)

// FirewallMembers reads the addresses weft's nftables table lets in on h;
// ok is false when h has no such table.
func FirewallMembers(ctx context.Context, h *lab.Host) (members []string, ok bool, err error) {
	out, err := h.Exec(ctx, "nft", "list", "set", "ip", firewall.TableName, "members")
	if err != nil {
		if strings.Contains(err.Error(), "No such file") {
			return nil, false, nil
		}
		return nil, false, err
	}
	if m := setElements.FindStringSubmatch(out); m != nil {
		for _, f := range strings.Split(m[1], ",") {
			if f = strings.TrimSpace(f); f != "" {
				members = append(members, f)
			}
		}
	}
	slices.Sort(members)
	return members, true, nil
}

// WaitFirewall waits until h's table is there and lets in every host of
// hosts (present), or until it is gone (!present).
func WaitFirewall(t testing.TB, h *lab.Host, hosts []*lab.Host, present bool, within time.Duration) []string {
	t.Helper()
	var members []string
	err := lab.WaitFor(context.Background(), within, 200*time.Millisecond, func() error {
		m, ok, err := FirewallMembers(context.Background(), h)
		if err != nil {
			return err
		}
		members = m
		if ok != present {
			return fmt.Errorf("weft's nftables table on %s: present=%v, want %v", h.Name, ok, present)
		}
		for _, o := range hosts {
			if present && !slices.Contains(m, o.Addr().String()) {
				return fmt.Errorf("weft's nftables table on %s lets in %v, not %s", h.Name, m, o)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return members
}
