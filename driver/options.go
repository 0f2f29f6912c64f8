package driver

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/weftnet/weft/dataplane"
)

// Options weft understands on `docker network create -o KEY=VALUE`.
const (
	// OptMTU is Docker's own MTU option, honoured by weft.
	OptMTU = "com.docker.network.driver.mtu"
	// OptVNI chooses the network's VXLAN network identifier.
	OptVNI = "weft.vni"
	// OptEncrypted makes the network's traffic between hosts travel inside
	// WireGuard (encrypted.go); "-o encrypted" alone means true.
	OptEncrypted = "encrypted"
	// OptMulticast, "true", makes the network carry broadcast and
	// multicast to every host with an endpoint on it (multicast.go).
	OptMulticast = "weft.multicast"
)

// genericKey is where Docker puts the driver options in CreateNetwork.
const genericKey = "com.docker.network.generic"

// MinAutoVNI is the lowest VNI weft picks by itself; the range below is
// left to users who choose theirs with -o weft.vni.
const MinAutoVNI = 4096

// netOptions are the parsed driver options of one network.
type netOptions struct {
	// MTU chosen by the user; 0 when unset.
	MTU int
	// VNI chosen by the user or by AllocateNetwork; 0 when unset.
	VNI uint32
	// Encrypted: -o encrypted.
	Encrypted bool
	// Multicast: the network carries broadcast and multicast.
	Multicast bool
}

var knownOptions = []string{OptMTU, OptVNI, OptEncrypted, OptMulticast}

// parseOptions checks the driver options of a network. Keys Docker itself
// adds (com.docker.*) are passed over; any other unknown key is refused so
// that a typo never goes unnoticed.
func parseOptions(opts map[string]string) (netOptions, error) {
	var o netOptions
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		v := strings.TrimSpace(opts[k])
		switch k {
		case OptMTU:
			n, err := strconv.Atoi(v)
			if err != nil || n < 68 || n > 65535-dataplane.Overhead {
				return o, fmt.Errorf("option %s=%q is not an MTU between 68 and %d", k, opts[k], 65535-dataplane.Overhead)
			}
			o.MTU = n
		case OptVNI:
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 || n > dataplane.MaxVNI {
				return o, fmt.Errorf("option %s=%q is not a VNI between 1 and %d", k, opts[k], dataplane.MaxVNI)
			}
			if n == dataplane.ProbeVNI {
				return o, fmt.Errorf("option %s=%q: VNI %d is reserved for weft's data-path probe; choose another", k, opts[k], n)
			}
			o.VNI = uint32(n)
		case OptEncrypted:
			b, err := parseEncrypted(v)
			if err != nil {
				return o, fmt.Errorf("option %s=%q is not true or false", k, opts[k])
			}
			o.Encrypted = b
		case OptMulticast:
			switch v {
			case "true":
				o.Multicast = true
			case "false":
			default:
				return o, fmt.Errorf("option %s=%q is neither true nor false", k, opts[k])
			}
		default:
			if strings.HasPrefix(k, "com.docker.") {
				continue
			}
			return o, fmt.Errorf("unknown option %q for the weft driver (known: %s)", k, strings.Join(knownOptions, ", "))
		}
	}
	if o.Encrypted && o.Multicast {
		// The flood entries would aim at the hosts' underlay addresses,
		// outside the tunnel, where the network's VXLAN is dropped.
		return o, fmt.Errorf("options %s and %s cannot be combined yet: an encrypted network carries no broadcast or multicast", OptEncrypted, OptMulticast)
	}
	return o, nil
}

// genericOptions extracts the driver options from CreateNetwork's Options.
func genericOptions(raw map[string]any) (map[string]string, error) {
	out := map[string]string{}
	g, ok := raw[genericKey]
	if !ok || g == nil {
		return out, nil
	}
	m, ok := g.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("driver options are a %T, not a map", g)
	}
	for k, v := range m {
		switch v := v.(type) {
		case string:
			out[k] = v
		case float64:
			out[k] = strconv.FormatFloat(v, 'f', -1, 64)
		case bool:
			out[k] = strconv.FormatBool(v)
		default:
			return nil, fmt.Errorf("driver option %q has a value of type %T, not a string", k, v)
		}
	}
	return out, nil
}

// autoVNI derives a network's VNI from its ID, so that every host that
// computes it gets the same answer; taken reports VNIs already in use,
// which are skipped.
func autoVNI(networkID string, taken func(uint32) bool) (uint32, error) {
	h := fnv.New32a()
	h.Write([]byte(networkID))
	span := uint32(dataplane.MaxVNI - MinAutoVNI + 1)
	start := h.Sum32() % span
	for i := uint32(0); i < 1024; i++ {
		vni := MinAutoVNI + (start+i)%span
		if !taken(vni) && vni != dataplane.ProbeVNI {
			return vni, nil
		}
	}
	return 0, fmt.Errorf("no free VNI found for network %s", networkID)
}

// subnetVNI derives a local-scope network's VNI from its subnet: engines
// that are not in a swarm give one network different IDs, but every host
// creates it with the same subnet. Collisions are not skipped, since the
// hosts would not skip alike; CreateNetwork refuses them instead.
func subnetVNI(subnet string) uint32 {
	key := subnet
	if p, err := netip.ParsePrefix(subnet); err == nil {
		key = p.Masked().String()
	}
	h := fnv.New32a()
	h.Write([]byte("subnet:" + key))
	span := uint32(dataplane.MaxVNI - MinAutoVNI + 1)
	vni := MinAutoVNI + h.Sum32()%span
	if vni == dataplane.ProbeVNI {
		vni-- // reserved: one subnet in 16 million takes its neighbour
	}
	return vni
}
