package labtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/status"
	"github.com/weftnet/weft/test/lab"
)

// The plugin under test is the lab's (Config.PluginDir, as installed on
// every host under Config.PluginName); its binary also serves as the weft
// command.

// WeftCLI runs the weft command of the build under test in h's namespaces,
// within 20 seconds.
func WeftCLI(ctx context.Context, h *lab.Host, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return h.Exec(ctx, filepath.Join(h.Config().PluginDir, "rootfs", "weft"), args...)
}

// FetchStatus reads h's `weft status --json`.
func FetchStatus(ctx context.Context, h *lab.Host) (status.Report, error) {
	var rep status.Report
	out, err := WeftCLI(ctx, h, "status", "--json")
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		return rep, fmt.Errorf("%s: weft status --json: %w", h.Name, err)
	}
	return rep, nil
}

// Status reads h's weft status, failing the test on an error.
func Status(t testing.TB, h *lab.Host) status.Report {
	t.Helper()
	rep, err := FetchStatus(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// FindPluginPID returns the pid of the weft plugin process running in h's
// network namespace.
func FindPluginPID(h *lab.Host) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(h.NetNSPath(), &st); err != nil {
		return 0, err
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || string(cmdline) != "/weft\x00plugin\x00" {
			continue
		}
		if ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err == nil && ns == want {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		return 0, fmt.Errorf("%d weft plugin processes on %s: %v", len(pids), h.Name, pids)
	}
	return pids[0], nil
}

// PluginPID is FindPluginPID, failing the test on an error.
func PluginPID(t testing.TB, h *lab.Host) int {
	t.Helper()
	pid, err := FindPluginPID(h)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// WaitPluginAnswers waits until a plugin process other than oldPID serves
// weft's status on h and Docker reports the plugin enabled.
func WaitPluginAnswers(t testing.TB, h *lab.Host, oldPID int, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	err := lab.WaitFor(ctx, within, 50*time.Millisecond, func() error {
		pid, err := FindPluginPID(h)
		if err != nil {
			return err
		}
		if pid == oldPID {
			return fmt.Errorf("old plugin process %d still runs", pid)
		}
		if _, err := FetchStatus(ctx, h); err != nil {
			return err
		}
		out, err := h.Docker(ctx, "plugin", "inspect", "-f", "{{.Enabled}}", h.Config().PluginName)
		if err != nil || strings.TrimSpace(out) != "true" {
			return fmt.Errorf("plugin enabled = %q (%v)", out, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("plugin on %s: %v", h.Name, err)
	}
}

// BuildPluginDir builds weft from this module with another version string
// and lays out a managed plugin directory around it, like `make
// plugin-dir`, with the config.json of the lab's plugin.
func BuildPluginDir(t testing.TB, l *lab.Lab, version string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "plugin")
	for _, d := range []string{"rootfs/run/docker/plugins", "rootfs/var/lib/weft", "rootfs/var/lib/docker/swarm", "rootfs/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "rootfs/tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(GoBinary(), "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version,
		"-o", filepath.Join(dir, "rootfs", "weft"), "github.com/weftnet/weft/cmd/weft")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build weft %s: %v\n%s", version, err, out)
	}
	config, err := os.ReadFile(filepath.Join(l.Config().PluginDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// LogSize returns the current length of h's dockerd log, where the
// plugin's output lands: an offset for PluginWarnings.
func LogSize(t testing.TB, h *lab.Host) int64 {
	t.Helper()
	st, err := os.Stat(h.DockerdLog)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// pluginLogMsg matches a warning or error of the plugin's in dockerd's log,
// where dockerd quotes the plugin's own line: its level, then its message
// and attributes.
var pluginLogMsg = regexp.MustCompile(`level=(WARN|ERROR) (.*)" plugin=`)

// PluginWarnings returns the plugin's warnings and errors logged in h's
// dockerd log after offset, each as "LEVEL msg=... attributes", leaving
// out memberlist's own.
func PluginWarnings(t testing.TB, h *lab.Host, offset int64) []string {
	t.Helper()
	b, err := os.ReadFile(h.DockerdLog)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		if !strings.Contains(line, " plugin=") {
			continue
		}
		if m := pluginLogMsg.FindStringSubmatch(line); m != nil && !strings.Contains(line, "component=memberlist") {
			out = append(out, m[1]+" "+strings.ReplaceAll(m[2], `\"`, `"`))
		}
	}
	return out
}

// WeftCLIStdin returns, unstarted, the weft command of the build under
// test in h's namespaces, reading stdin (a key, say) on its standard input.
func WeftCLIStdin(h *lab.Host, stdin string, args ...string) *exec.Cmd {
	cmd := h.ExecCmd(context.Background(), filepath.Join(h.Config().PluginDir, "rootfs", "weft"), args...)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

// engineLogProblem matches a warning or error of dockerd's own.
var engineLogProblem = regexp.MustCompile(`level=(warning|error|fatal) (msg=.*)`)

// Problems returns what went wrong on h after offset, as h's dockerd log
// tells it: the plugin's warnings and errors (as PluginWarnings gives
// them) and the engine's own, in the order they were written, the last
// max of them. It reads nothing else and never fails the test: it is what
// a failed test shows of each host.
func Problems(h *lab.Host, offset int64, max int) []string {
	b, err := os.ReadFile(h.DockerdLog)
	if err != nil {
		return []string{err.Error()}
	}
	if offset > int64(len(b)) {
		offset = 0 // the log was replaced (an engine restart with a new file)
	}
	var out []string
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		if strings.Contains(line, " plugin=") {
			if m := pluginLogMsg.FindStringSubmatch(line); m != nil && !strings.Contains(line, "component=memberlist") {
				out = append(out, "plugin "+m[1]+" "+strings.ReplaceAll(m[2], `\"`, `"`))
			}
			continue
		}
		if m := engineLogProblem.FindStringSubmatch(line); m != nil {
			out = append(out, "engine "+m[1]+" "+m[2])
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

// watched holds the tests ShowProblemsIfFailed watches already.
var watched sync.Map

// ShowProblemsIfFailed logs, if t fails, what went wrong on each of l's
// hosts while it ran (Problems, the last 25 of each). Its lines carry the
// test's own file and line, which CI keeps (`make test-e2e` filters the
// rest of the output), so a failure seen there shows its hosts' side.
// Calling it again for the same test does nothing.
func ShowProblemsIfFailed(t *testing.T, l *lab.Lab) {
	t.Helper()
	if _, dup := watched.LoadOrStore(t, true); dup {
		return
	}
	offsets := map[*lab.Host]int64{}
	for _, h := range l.Hosts {
		if st, err := os.Stat(h.DockerdLog); err == nil {
			offsets[h] = st.Size()
		}
	}
	t.Cleanup(func() {
		t.Helper()
		watched.Delete(t)
		if !t.Failed() {
			return
		}
		for _, h := range l.Hosts {
			for _, p := range Problems(h, offsets[h], 25) {
				t.Logf("%s while the test ran: %s", h.Name, p)
			}
		}
	})
}
