// Package e2e runs weft end to end: real dockerd engines in network
// namespaces on one machine, a real swarm across them, the plugin built
// from this tree installed as a managed plugin on every host, and real
// kernel VXLAN between the hosts. The tests need root and WEFT_E2E=1, and
// the plugin directory in WEFT_PLUGIN_DIR (`make test-e2e` sets both).
package e2e

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"testing"

	"github.com/weftnet/weft/test/lab"
)

// theLab is shared by every test of the package: bringing up three
// engines and a swarm costs tens of seconds on two cores.
var theLab *lab.Lab

const pluginName = "weft:latest"

// testMeshKey is the lab's cluster key (32 bytes, base64).
const testMeshKey = "d2VmdC1sYWItY2x1c3Rlci1rZXktMzItYnl0ZXMhISE="

func TestMain(m *testing.M) {
	os.Exit(lab.RunTests(m, "e2e", &theLab, func(dir string) (lab.Config, error) {
		cfg, err := labConfig(os.Getenv)
		if err != nil {
			return cfg, err
		}
		cfg.Hosts = 3
		cfg.Swarm = true
		cfg.Image = true
		cfg.PluginDir = dir
		cfg.PluginName = pluginName
		// No upstream resolver: the lab must never send queries off this
		// machine. A keyed mesh, as README asks of production.
		cfg.PluginSettings = []string{"LOG_LEVEL=debug", "WEFT_DNS_UPSTREAM=none", "WEFT_MESH_KEY=" + testMeshKey}
		return cfg, nil
	}))
}

// labConfig names the tests' lab. By default it is weftci, apart from the
// demo's (weftlab) so that running the tests never disturbs a demo left
// up. WEFT_E2E_LAB=name (and WEFT_E2E_SUBNET=bridge-address/prefix) give
// a lab of another name, bridge, veth prefix and underlay, so that two
// runs of the tests can share one machine.
func labConfig(getenv func(string) string) (lab.Config, error) {
	cfg := lab.DefaultConfig()
	cfg.Name = "weftci"
	cfg.Bridge = "weftci0"
	cfg.VethPrefix = "wci"
	cfg.Underlay = netip.MustParsePrefix("198.18.2.254/24")
	cfg.StateRoot, cfg.RunRoot = "", ""
	if name := getenv("WEFT_E2E_LAB"); name != "" && name != cfg.Name {
		cfg.Name = name
		cfg.Bridge = name + "0"
		// Short, derived from the name, and starting with a letter that
		// no other lab's prefix (wci, wlh) nor weft's devices use.
		h := fnv.New32a()
		h.Write([]byte(name))
		cfg.VethPrefix = fmt.Sprintf("e%04x", h.Sum32()&0xffff)
		subnet := getenv("WEFT_E2E_SUBNET")
		if subnet == "" {
			return cfg, fmt.Errorf("WEFT_E2E_LAB=%s needs WEFT_E2E_SUBNET (the bridge's address and prefix, e.g. 198.18.4.254/24) apart from other labs'", name)
		}
		p, err := netip.ParsePrefix(subnet)
		if err != nil {
			return cfg, fmt.Errorf("WEFT_E2E_SUBNET=%q: %w", subnet, err)
		}
		cfg.Underlay = p
	}
	return cfg, nil
}

func need(t *testing.T) *lab.Lab {
	t.Helper()
	if theLab == nil {
		t.Skip("needs the e2e lab (root and WEFT_E2E=1)")
	}
	return theLab
}
