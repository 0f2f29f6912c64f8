package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Table is the mesh table that carries endpoint records.
const Table = "endpoint"

// Record is one endpoint as it travels between hosts. Its JSON field names
// are part of the wire format that older weft builds read: add fields,
// never rename or retype one.
type Record struct {
	// Network is the Docker network ID.
	Network string `json:"net"`
	// VNI of the network's segment.
	VNI uint32 `json:"vni"`
	// Endpoint is the Docker endpoint ID.
	Endpoint string `json:"ep"`
	// IP is the endpoint's IPv4 address (no prefix).
	IP string `json:"ip"`
	// IP6 is the endpoint's IPv6 address (no prefix) on a dual-stack
	// network; empty otherwise. Builds before it ignore the field.
	IP6 string `json:"ip6,omitempty"`
	// MAC is the endpoint's hardware address.
	MAC string `json:"mac"`
	// VTEP is the underlay address of the endpoint's host.
	VTEP string `json:"vtep"`
	// Host is the mesh name of the endpoint's host. Receivers set it from
	// the entry's owner, whatever the value says.
	Host string `json:"host,omitempty"`
	// Names are the endpoint's DNS names (hostname, container name,
	// aliases, service names), most specific first.
	Names []string `json:"names,omitempty"`
	// Down is set by the receiving catalog, never sent: the record's host
	// is down in the mesh (its weft stopped; its host still answers), so
	// the record is kept but may be stale. Where a live record claims the
	// same address, the live one wins (driver).
	Down bool `json:"-"`
}

// Equal reports whether two records say the same.
func (r Record) Equal(o Record) bool {
	return r.Network == o.Network && r.VNI == o.VNI && r.Endpoint == o.Endpoint &&
		r.IP == o.IP && r.IP6 == o.IP6 && r.MAC == o.MAC && r.VTEP == o.VTEP && r.Host == o.Host &&
		slices.Equal(r.Names, o.Names) && r.Down == o.Down
}

// Clone returns a copy that shares nothing with r.
func (r Record) Clone() Record {
	r.Names = slices.Clone(r.Names)
	return r
}

// Addrs returns the record's IP, MAC and VTEP parsed, or an error naming
// what is malformed.
func (r Record) Addrs() (ip netip.Addr, mac net.HardwareAddr, vtep netip.Addr, err error) {
	ip, err = netip.ParseAddr(r.IP)
	if err != nil || !ip.Is4() {
		return ip, nil, vtep, fmt.Errorf("endpoint %s: address %q is not IPv4", r.Endpoint, r.IP)
	}
	mac, err = net.ParseMAC(r.MAC)
	if err != nil || len(mac) != 6 {
		return ip, nil, vtep, fmt.Errorf("endpoint %s: MAC %q is not a 48-bit MAC", r.Endpoint, r.MAC)
	}
	vtep, err = netip.ParseAddr(r.VTEP)
	if err != nil || !vtep.Is4() {
		return ip, nil, vtep, fmt.Errorf("endpoint %s: VTEP %q is not IPv4", r.Endpoint, r.VTEP)
	}
	return ip, mac, vtep, nil
}

// Addr6 returns the record's IPv6 address; an invalid Addr when it has
// none, an error when it is malformed.
func (r Record) Addr6() (netip.Addr, error) {
	if r.IP6 == "" {
		return netip.Addr{}, nil
	}
	ip, err := netip.ParseAddr(r.IP6)
	if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("endpoint %s: address %q is not IPv6", r.Endpoint, r.IP6)
	}
	return ip, nil
}

// Key is the mesh key of an endpoint's record. It names the host, so that
// a host that comes back under a new identity (its state directory lost)
// never contends for a key with its former self: the old identity's copy,
// which may carry a newer Lamport clock, would otherwise win, and then
// vanish with the old identity.
func Key(host, endpointID string) string { return host + "/" + endpointID }

// encode returns the record as it is stored in the mesh.
func encode(r Record) ([]byte, error) {
	return json.Marshal(r)
}

// decode reads a record from the mesh entry of owner under key; Host is
// set to the owner.
func decode(owner, key string, value []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(value, &r); err != nil {
		return r, fmt.Errorf("endpoint record %s of %s: %w", key, owner, err)
	}
	if r.Endpoint == "" {
		return r, errors.New("endpoint record " + key + " of " + owner + " has no endpoint ID")
	}
	r.Host = owner
	return r, nil
}
