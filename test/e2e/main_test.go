// Package e2e runs weft end to end: real dockerd engines in network
// namespaces on one machine, a real swarm across them, the plugin built
// from this tree installed as a managed plugin on every host, and real
// kernel VXLAN between the hosts. The tests need root and WEFT_E2E=1, and
// the plugin directory in WEFT_PLUGIN_DIR (`make test-e2e` sets both).
package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// theLab is shared by every test of the package: bringing up three
// engines and a swarm costs tens of seconds on two cores.
var theLab *lab.Lab

const pluginName = "weft:latest"

func TestMain(m *testing.M) {
	if os.Getenv("WEFT_E2E") != "1" || os.Geteuid() != 0 {
		fmt.Println("e2e: skipped (needs root and WEFT_E2E=1; run `make test-e2e`)")
		os.Exit(m.Run())
	}
	dir := os.Getenv("WEFT_PLUGIN_DIR")
	if dir == "" {
		fmt.Fprintln(os.Stderr, "e2e: WEFT_PLUGIN_DIR must name the plugin directory (run `make test-e2e`)")
		os.Exit(2)
	}
	// A lab of its own, apart from the demo's (weftlab) so that running
	// the tests never disturbs a demo left up.
	cfg := lab.DefaultConfig()
	cfg.Name = "weftci"
	cfg.Bridge = "weftci0"
	cfg.VethPrefix = "wci"
	cfg.Underlay = netip.MustParsePrefix("198.18.2.254/24")
	cfg.StateRoot, cfg.RunRoot = "", ""
	cfg.Hosts = 3
	cfg.Swarm = true
	cfg.Image = true
	cfg.PluginDir = dir
	cfg.PluginName = pluginName
	cfg.PluginSettings = []string{"LOG_LEVEL=debug"}
	cfg.KeepLogs = true
	cfg.Logf = func(format string, args ...any) { fmt.Printf("lab: "+format+"\n", args...) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	start := time.Now()
	l, err := lab.Up(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: lab did not come up:", err)
		if l != nil {
			fmt.Fprintln(os.Stderr, l.LogTails(60))
			_ = l.Down(context.Background())
		}
		os.Exit(1)
	}
	fmt.Printf("e2e: lab up in %s\n", time.Since(start).Round(time.Second))
	theLab = l
	code := m.Run()
	if code != 0 {
		fmt.Println(l.LogTails(80))
	}
	if os.Getenv("WEFT_E2E_KEEP") == "" {
		if err := l.Down(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: lab teardown:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

func need(t *testing.T) *lab.Lab {
	t.Helper()
	if theLab == nil {
		t.Skip("needs the e2e lab (root and WEFT_E2E=1)")
	}
	return theLab
}
