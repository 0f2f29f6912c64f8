package catalog

import (
	"encoding/json"
	"strings"
	"testing"
)

// The IPv6 address is a field added to the wire: a record with one
// carries it as "ip6", one without leaves it out (its bytes are those of
// builds before it), and a build that predates it reads the rest alike.
func TestRecordIP6OnTheWire(t *testing.T) {
	r := Record{Network: "n", VNI: 7, Endpoint: "e", IP: "10.0.0.2", IP6: "fd00:7::2", MAC: "02:42:0a:00:00:02", VTEP: "198.18.0.2"}
	b, err := encode(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"ip6":"fd00:7::2"`) {
		t.Fatalf("encoded %s, want an ip6 field", b)
	}
	v4 := r
	v4.IP6 = ""
	b4, _ := encode(v4)
	if strings.Contains(string(b4), "ip6") {
		t.Fatalf("a record without IPv6 encodes %s", b4)
	}
	// A build before the field: the same decoder over its own struct.
	var old struct {
		Network string `json:"net"`
		VNI     uint32 `json:"vni"`
		IP      string `json:"ip"`
		MAC     string `json:"mac"`
	}
	if err := json.Unmarshal(b, &old); err != nil || old.IP != r.IP || old.VNI != r.VNI || old.MAC != r.MAC {
		t.Fatalf("an older build reads %+v, %v", old, err)
	}
	got, err := decode("h2", "h2/e", b)
	if err != nil || got.IP6 != r.IP6 {
		t.Fatalf("decode: %+v, %v", got, err)
	}
	if a, err := got.Addr6(); err != nil || a.String() != "fd00:7::2" {
		t.Fatalf("Addr6: %v, %v", a, err)
	}
	for _, bad := range []string{"10.0.0.2", "::ffff:10.0.0.2", "fe80::1%eth0", "nonsense"} {
		if _, err := (Record{Endpoint: "e", IP6: bad}).Addr6(); err == nil {
			t.Errorf("Addr6 accepted %q", bad)
		}
	}
}
