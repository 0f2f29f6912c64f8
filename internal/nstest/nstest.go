// Package nstest gives root tests fresh network namespaces made with
// iproute2 and removed when the test ends, so that no test touches the
// namespace it runs in. It is for tests only.
package nstest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// NeedRoot skips the test unless it runs as root with every tool of
// tools on the PATH; what names the tests in the skip message.
func NeedRoot(t testing.TB, what string, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("%s need root (they create network namespaces)", what)
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s need %s", what, tool)
		}
	}
}

// Run runs a command and returns its combined output; a failure fails
// the test with the output.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NewNS makes a named namespace (prefix, then this process's ID and a
// random number) with its loopback up, and returns its name and a handle;
// both go when the test ends.
func NewNS(t testing.TB, prefix string) (string, netns.NsHandle) {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), rand.IntN(1<<30))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name, h
}
