package wg

import (
	"net/netip"
	"testing"
)

func TestOverlay(t *testing.T) {
	sub := netip.MustParsePrefix("10.250.0.0/16")
	for _, c := range []struct{ vtep, want string }{
		{"198.18.65.3", "10.250.65.3"},
		{"192.168.1.20", "10.250.1.20"},
		{"::ffff:172.16.4.5", "10.250.4.5"},
		{"10.0.0.0", ""},     // the subnet's own address
		{"10.1.255.255", ""}, // its broadcast
		{"2001:db8::1", ""},  // not IPv4
	} {
		got, err := Overlay(sub, netip.MustParseAddr(c.vtep))
		if c.want == "" {
			if err == nil {
				t.Errorf("Overlay(%s) = %s, want an error", c.vtep, got)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("Overlay(%s) = %s, %v; want %s", c.vtep, got, err, c.want)
		}
	}
	if _, err := Overlay(netip.MustParsePrefix("10.250.0.0/24"), netip.MustParseAddr("1.2.3.4")); err == nil {
		t.Error("a /24 subnet accepted")
	}
}
