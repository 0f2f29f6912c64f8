// Package e2elocal runs weft's local mode end to end: three plain Docker
// engines (no swarm) in network namespaces, the plugin built from this
// tree installed on each as weft-local:latest with WEFT_SCOPE=local and
// the others' addresses in WEFT_PEERS, networks created with the same
// subnet on every engine and addressed by weft's own IPAM. The tests need
// root and WEFT_E2E=1, and the plugin directory in WEFT_PLUGIN_DIR
// (`make test-e2e` sets both).
package e2elocal

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// theLab is shared by every test of the package.
var theLab *lab.Lab

const pluginName = "weft-local:latest"

// reclaim is the lab's WEFT_IPAM_RECLAIM: short, so that a dead host's
// blocks come back within a test.
const reclaim = 10 * time.Second

func TestMain(m *testing.M) {
	os.Exit(lab.RunTests(m, "e2elocal", &theLab, func(dir string) (lab.Config, error) {
		// A lab of its own, apart from the swarm lab of test/e2e (weftci)
		// and the demo's (weftlab).
		cfg := lab.DefaultConfig()
		cfg.Name = "weftloc"
		cfg.Bridge = "weftloc0"
		cfg.VethPrefix = "wlo"
		cfg.Underlay = netip.MustParsePrefix("198.18.6.254/24")
		cfg.StateRoot, cfg.RunRoot = "", ""
		cfg.Hosts = 3
		cfg.Swarm = false
		cfg.Image = true
		cfg.PluginDir = dir
		cfg.PluginName = pluginName
		cfg.PluginSettings = []string{
			"WEFT_SCOPE=local",
			"WEFT_PEERS=198.18.6.1,198.18.6.2,198.18.6.3",
			"WEFT_DNS_UPSTREAM=none", // the lab never sends queries off this machine
			"WEFT_IPAM_RECLAIM=" + reclaim.String(),
			"LOG_LEVEL=debug",
			// Local mode needs a key: the lab's (32 bytes, base64).
			"WEFT_MESH_KEY=d2VmdC1sYWItY2x1c3Rlci1rZXktMzItYnl0ZXMhISE=",
		}
		return cfg, nil
	}))
}

func need(t *testing.T) *lab.Lab {
	t.Helper()
	if theLab == nil {
		t.Skip("needs the e2e lab (root and WEFT_E2E=1)")
	}
	labtest.ShowProblemsIfFailed(t, theLab)
	return theLab
}
