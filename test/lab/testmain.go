package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// Runner is what a package's TestMain hands over: *testing.M.
type Runner interface{ Run() int }

// RunTests is the body of an end-to-end package's TestMain: unless the
// tests may not run here (they need root and WEFT_E2E=1), it brings up the
// lab that configure describes for the plugin directory in
// WEFT_PLUGIN_DIR, stores it in *lab for the tests, runs them, prints the
// daemons' log tails if any failed, and takes the lab down (unless
// WEFT_E2E_KEEP is set). It returns the exit code for os.Exit.
func RunTests(m Runner, pkg string, lab **Lab, configure func(pluginDir string) (Config, error)) int {
	if os.Getenv("WEFT_E2E") != "1" || os.Geteuid() != 0 {
		fmt.Printf("%s: skipped (needs root and WEFT_E2E=1; run `make test-e2e`)\n", pkg)
		return m.Run()
	}
	dir := os.Getenv("WEFT_PLUGIN_DIR")
	if dir == "" {
		fmt.Fprintf(os.Stderr, "%s: WEFT_PLUGIN_DIR must name the plugin directory (run `make test-e2e`)\n", pkg)
		return 2
	}
	cfg, err := configure(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", pkg, err)
		return 2
	}
	cfg.KeepLogs = true
	cfg.Logf = func(format string, args ...any) { fmt.Printf("lab: "+format+"\n", args...) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	start := time.Now()
	l, err := Up(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: lab did not come up: %v\n", pkg, err)
		if l != nil {
			fmt.Fprintln(os.Stderr, l.LogTails(60))
			_ = l.Down(context.Background())
		}
		return 1
	}
	fmt.Printf("%s: lab up in %s\n", pkg, time.Since(start).Round(time.Second))
	*lab = l
	code := m.Run()
	if code != 0 {
		fmt.Println(l.LogTails(80))
	}
	if os.Getenv("WEFT_E2E_KEEP") == "" {
		if err := l.Down(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "%s: lab teardown: %v\n", pkg, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// ServerCmd makes a test container serve "weft-ok" over HTTP on port 8080
// (busybox httpd), so every container can be reached by ICMP and TCP.
var ServerCmd = []string{"sh", "-c", "mkdir -p /www && echo weft-ok > /www/index.html && exec httpd -f -p 8080 -h /www"}

// Fataler is the part of *testing.T that MustDocker and MustExec need.
type Fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// MustDocker runs the docker CLI against h within 3 minutes and returns its
// trimmed output, failing the test on an error.
func (h *Host) MustDocker(t Fataler, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := h.Docker(ctx, args...)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return strings.TrimSpace(out)
}

// MustExec runs a command in h's namespaces (see Exec) within 3 minutes and
// returns its trimmed output, failing the test on an error.
func (h *Host) MustExec(t Fataler, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := h.Exec(ctx, name, args...)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return strings.TrimSpace(out)
}
