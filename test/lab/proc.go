package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is one long-running process of a host (containerd or dockerd).
// It is started detached (own session, output to a log file) so it outlives
// the process that started it; its pid is recorded in pidFile so a later
// process can find it. When this process started it, a goroutine reaps it.
type daemon struct {
	name    string   // "dockerd" or "containerd", for messages
	pidFile string   // written by start, read by pid
	logFile string   // stdout and stderr
	argv    []string // full command line, starting with nsenter
	marker  string   // a string its command line holds, checked before signalling
}

// start launches the daemon and records its pid. ready is polled until it
// returns nil, the daemon exits, or timeout passes.
func (d *daemon) start(ctx context.Context, timeout time.Duration, ready func() error) error {
	if err := os.MkdirAll(filepath.Dir(d.logFile), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(d.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", d.name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== weftlab: %s starting at %s: %s\n", d.name, time.Now().Format(time.RFC3339Nano), strings.Join(d.argv, " "))

	cmd := exec.Command(d.argv[0], d.argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = daemonEnv()
	// Own session: no signal from our terminal or process group reaches it,
	// and it survives our exit.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := os.WriteFile(d.pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("record %s pid: %w", d.name, err)
	}

	err = WaitFor(ctx, timeout, 100*time.Millisecond, func() error {
		select {
		case werr := <-exited:
			exited <- werr
			return stopError{fmt.Errorf("%s exited: %v", d.name, werr)}
		default:
		}
		return ready()
	})
	if err != nil {
		return fmt.Errorf("wait for %s (log %s): %w\n%s", d.name, d.logFile, err, tail(d.logFile, 20))
	}
	return nil
}

// pid returns the recorded pid if that process is alive and still ours.
func (d *daemon) pid() (int, bool) {
	b, err := os.ReadFile(d.pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !alive(pid) {
		return 0, false
	}
	if !strings.Contains(cmdline(pid), d.marker) {
		return 0, false // pid reused by something else
	}
	return pid, true
}

// stop sends sig, waits up to grace for the daemon to exit, then kills it.
func (d *daemon) stop(sig syscall.Signal, grace time.Duration) error {
	pid, ok := d.pid()
	if !ok {
		_ = os.Remove(d.pidFile)
		return nil
	}
	if err := stopPID(pid, sig, grace); err != nil {
		return fmt.Errorf("stop %s (pid %d): %w", d.name, pid, err)
	}
	_ = os.Remove(d.pidFile)
	return nil
}

// stopPID signals pid, and SIGKILLs it if it has not exited after grace.
func stopPID(pid int, sig syscall.Signal, grace time.Duration) error {
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if waitDead([]int{pid}, grace) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if !waitDead([]int{pid}, 10*time.Second) {
		return fmt.Errorf("still alive 10s after SIGKILL")
	}
	return nil
}

// waitDead polls until every pid has exited (or is a zombie) or timeout
// passes, and reports whether they all did.
func waitDead(pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, p := range pids {
			if alive(p) {
				left++
			}
		}
		if left == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether pid runs. A zombie is dead: its parent may be
// init, which need not reap it promptly.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may hold
	// spaces and parentheses itself.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// cmdline returns pid's command line with arguments joined by spaces.
func cmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}

// procInfo is what cleanup needs to know about one process.
type procInfo struct {
	pid, ppid int
	comm      string // executable's base name, from argv[0]
	args      []string
	netns     string // "net:[inode]"
}

// processes lists every process but this one.
func processes() []procInfo {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || !alive(pid) {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		p := procInfo{pid: pid, ppid: ppid, args: args, netns: ns}
		if len(args) > 0 {
			p.comm = filepath.Base(args[0])
		}
		out = append(out, p)
	}
	return out
}

// daemonEnv is the environment for the daemons: ours, without anything
// that points a docker client elsewhere.
func daemonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// run runs a command and returns its trimmed stdout; its error names the
// command and carries stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = daemonEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return strings.TrimRight(stdout.String(), "\n"), nil
}

// tail returns the last n lines of a file, or a note saying why not.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
