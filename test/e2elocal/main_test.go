// Package e2elocal runs weft's local mode end to end: three plain Docker
// engines (no swarm) in network namespaces, the plugin built from this
// tree installed on each as weft-local:latest with WEFT_SCOPE=local and
// the others' addresses in WEFT_PEERS, networks created with the same
// subnet on every engine and addressed by weft's own IPAM. The tests need
// root and WEFT_E2E=1, and the plugin directory in WEFT_PLUGIN_DIR
// (`make test-e2e` sets both).
package e2elocal

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// theLab is shared by every test of the package.
var theLab *lab.Lab

const pluginName = "weft-local:latest"

// reclaim is the lab's WEFT_IPAM_RECLAIM: short, so that a dead host's
// blocks come back within a test.
const reclaim = 10 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv("WEFT_E2E") != "1" || os.Geteuid() != 0 {
		fmt.Println("e2elocal: skipped (needs root and WEFT_E2E=1; run `make test-e2e`)")
		os.Exit(m.Run())
	}
	dir := os.Getenv("WEFT_PLUGIN_DIR")
	if dir == "" {
		fmt.Fprintln(os.Stderr, "e2elocal: WEFT_PLUGIN_DIR must name the plugin directory (run `make test-e2e`)")
		os.Exit(2)
	}
	// A lab of its own, apart from the swarm lab of test/e2e (weftci) and
	// the demo's (weftlab).
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
	}
	cfg.KeepLogs = true
	cfg.Logf = func(format string, args ...any) { fmt.Printf("lab: "+format+"\n", args...) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	start := time.Now()
	l, err := lab.Up(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2elocal: lab did not come up:", err)
		if l != nil {
			fmt.Fprintln(os.Stderr, l.LogTails(60))
			_ = l.Down(context.Background())
		}
		os.Exit(1)
	}
	fmt.Printf("e2elocal: lab up in %s\n", time.Since(start).Round(time.Second))
	theLab = l
	code := m.Run()
	if code != 0 {
		fmt.Println(l.LogTails(80))
	}
	if os.Getenv("WEFT_E2E_KEEP") == "" {
		if err := l.Down(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "e2elocal: lab teardown:", err)
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
