// Package soak runs weft under random churn and faults on a 3-host swarm
// lab for a set time, checking its invariants all along (see TestSoak and
// README's Development, Soak). The operation scheduler's own tests run
// anywhere; the soak needs root, WEFT_E2E=1 and WEFT_SOAK=1 (`make soak`).
package soak

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/weftnet/weft/test/lab"
)

// theLab is the soak's lab, apart from the tests' and the demo's.
var theLab *lab.Lab

const pluginName = "weft:latest"

func TestMain(m *testing.M) {
	if os.Getenv("WEFT_SOAK") != "1" {
		// `make test-e2e` runs ./test/...: the scheduler's tests only.
		os.Exit(m.Run())
	}
	os.Exit(lab.RunTests(m, "soak", &theLab, func(dir string) (lab.Config, error) {
		cfg, err := labConfig(os.Getenv)
		if err != nil {
			return cfg, err
		}
		cfg.Hosts = 3
		cfg.Swarm = true
		cfg.Image = true
		cfg.PluginDir = dir
		cfg.PluginName = pluginName
		cfg.PluginSettings = []string{"LOG_LEVEL=debug", "WEFT_DNS_UPSTREAM=none"}
		return cfg, nil
	}))
}

// labConfig names the soak's lab: weftsoak on 198.18.8.254/24 by default;
// WEFT_SOAK_LAB and WEFT_SOAK_SUBNET give another, so that two soaks, or a
// soak and the tests, share one machine.
func labConfig(getenv func(string) string) (lab.Config, error) {
	cfg := lab.DefaultConfig()
	cfg.Name = "weftsoak"
	cfg.Bridge = "weftsoak0"
	cfg.VethPrefix = "wsk"
	cfg.Underlay = netip.MustParsePrefix("198.18.8.254/24")
	cfg.StateRoot, cfg.RunRoot = "", ""
	if name := getenv("WEFT_SOAK_LAB"); name != "" && name != cfg.Name {
		// Veth prefix "s...": apart from the tests' labs' (wci, wlh, e...)
		// and weft's devices.
		var err error
		if cfg, err = cfg.Rename(name, getenv("WEFT_SOAK_SUBNET"), 's'); err != nil {
			return cfg, fmt.Errorf("WEFT_SOAK_LAB, WEFT_SOAK_SUBNET: %w", err)
		}
	}
	return cfg, nil
}
