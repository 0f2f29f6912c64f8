// Package e2e runs weft end to end: real dockerd engines in network
// namespaces on one machine, a real swarm across them, the plugin built
// from this tree installed as a managed plugin on every host, and real
// kernel VXLAN between the hosts. The tests need root and WEFT_E2E=1, and
// the plugin directory in WEFT_PLUGIN_DIR (`make test-e2e` sets both).
package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// theLab is shared by every test of the package: bringing up three
// engines and a swarm costs tens of seconds on two cores.
var theLab *lab.Lab

const pluginName = "weft:latest"

// metricsAddr is where the lab's plugins serve /metrics alone, besides
// their status endpoint (WEFT_METRICS_ADDR).
const metricsAddr = "127.0.0.1:9795"

func TestMain(m *testing.M) {
	// The tests run this binary again, as a plain memberlist node, in an
	// outsider's or a host's namespace (security_test.go).
	if len(os.Args) > 1 && os.Args[1] == meshProbeArg {
		os.Exit(meshProbeMain(os.Args[2:]))
	}
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
		// machine. No key set anywhere: the swarm keys the mesh by itself.
		cfg.PluginSettings = []string{"LOG_LEVEL=debug", "WEFT_DNS_UPSTREAM=none", "WEFT_METRICS_ADDR=" + metricsAddr}
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
		// Veth prefix "e...": no other lab's prefix (wci, wlh) nor weft's
		// devices start with it.
		var err error
		if cfg, err = cfg.Rename(name, getenv("WEFT_E2E_SUBNET"), 'e'); err != nil {
			return cfg, fmt.Errorf("WEFT_E2E_LAB, WEFT_E2E_SUBNET: %w", err)
		}
	}
	err := withOutside(&cfg, getenv)
	return cfg, err
}

// outsideMTU is the MTU of the hosts' default route in the lab: every host
// has a second interface of that MTU carrying its default route
// (lab.Config.Outside), on 198.19.<n>.0/24 beside the underlay's
// 198.18.<n>.0/24, while swarm, the mesh and VXLAN stay on the 1500-byte
// underlay — as on hosts whose jumbo-frame interface is not the cluster's,
// where a network's MTU must come from the VXLAN path
// (TestMTUFollowsTheVXLANPath). WEFT_E2E_OUTSIDE_MTU overrides it; 0
// keeps the default route on the underlay. Every other test runs unchanged
// in such a lab; bringing it up costs one more bridge and a veth per host
// (milliseconds).
const outsideMTU = 9000

// withOutside sets cfg.Outside and cfg.OutsideMTU as outsideMTU and the
// environment ask.
func withOutside(cfg *lab.Config, getenv func(string) string) error {
	mtu := outsideMTU
	if s := getenv("WEFT_E2E_OUTSIDE_MTU"); s != "" {
		var err error
		if mtu, err = strconv.Atoi(s); err != nil {
			return fmt.Errorf("WEFT_E2E_OUTSIDE_MTU=%q: %w", s, err)
		}
	}
	if mtu == 0 {
		return nil
	}
	u := cfg.Underlay.Addr().As4()
	if u[0] != 198 || u[1] != 18 {
		return fmt.Errorf("an outside network needs an underlay in 198.18.0.0/16 (it goes in 198.19.0.0/16), not %s", cfg.Underlay)
	}
	u[1] = 19
	cfg.Outside = netip.PrefixFrom(netip.AddrFrom4(u), cfg.Underlay.Bits())
	cfg.OutsideMTU = mtu
	return nil
}

func need(t *testing.T) *lab.Lab {
	t.Helper()
	if theLab == nil {
		t.Skip("needs the e2e lab (root and WEFT_E2E=1)")
	}
	labtest.ShowProblemsIfFailed(t, theLab)
	return theLab
}

func TestLabConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	cfg, err := labConfig(env())
	if err != nil || cfg.Name != "weftci" || cfg.Outside.IsValid() != (outsideMTU != 0) {
		t.Fatalf("default lab: %+v, %v", cfg, err)
	}
	cfg, err = labConfig(env("WEFT_E2E_LAB", "tests", "WEFT_E2E_SUBNET", "198.18.12.254/24", "WEFT_E2E_OUTSIDE_MTU", "9000"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bridge != "tests0" || cfg.Underlay.String() != "198.18.12.254/24" || cfg.Outside.String() != "198.19.12.254/24" || cfg.OutsideMTU != 9000 {
		t.Fatalf("lab with an outside network: bridge %s, underlay %s, outside %s MTU %d", cfg.Bridge, cfg.Underlay, cfg.Outside, cfg.OutsideMTU)
	}
	if _, err := labConfig(env("WEFT_E2E_LAB", "tests")); err == nil {
		t.Fatal("a lab of another name without a subnet accepted")
	}
	if _, err := labConfig(env("WEFT_E2E_OUTSIDE_MTU", "big")); err == nil {
		t.Fatal("a bad outside MTU accepted")
	}
}
