package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cleanup finds the lab's objects by scanning the machine, never from
// memory, so that it clears a run killed halfway as well as a healthy one.

// Clean removes every trace of the lab named by cfg (after defaults are
// filled): processes, mounts, namespaces, links, cgroups and directories.
// It is what Down does, for callers that have no *Lab (a later process).
func Clean(ctx context.Context, cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	return clean(ctx, c, true)
}

// Leftovers lists what remains of the lab named by cfg: processes, mounts,
// network namespaces, links, cgroups and directories. After Down it is
// empty (the log directory aside when KeepLogs is set).
func Leftovers(cfg Config) ([]string, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range labProcesses(c) {
		out = append(out, fmt.Sprintf("process %d: %s", p.pid, strings.Join(p.args, " ")))
	}
	mounts, err := labMounts(c)
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		out = append(out, "mount "+m)
	}
	for _, ns := range labNetns(c) {
		out = append(out, "netns "+ns)
	}
	for _, l := range labLinks(c) {
		out = append(out, "link "+l)
	}
	for _, cg := range labCgroups(c) {
		out = append(out, "cgroup "+cg)
	}
	for _, d := range []string{c.RunRoot, c.StateRoot} {
		ents, err := os.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			if c.KeepLogs && p == c.logDir() {
				continue
			}
			out = append(out, "path "+p)
		}
		if len(ents) == 0 {
			out = append(out, "path "+d)
		}
	}
	return out, nil
}

// clean removes the lab's objects. graceful first asks the daemons to stop
// (dockerd stops its containers and plugins); otherwise everything is killed
// at once, which is enough before a new Up.
func clean(ctx context.Context, c Config, graceful bool) error {
	var errs []error
	if graceful {
		// Down need not wait for every container's own stop timeout (10s
		// by default): what is still running after ShutdownTimeout is
		// killed below anyway.
		termAll(c, "dockerd", c.ShutdownTimeout)
		termAll(c, "containerd", 5*time.Second)
	}
	if err := killAll(c); err != nil {
		errs = append(errs, err)
	}
	// Shims create containerd's socket directory if it was missing; take
	// it away again when it is empty (os.Remove refuses otherwise).
	_ = os.Remove("/run/containerd/s")
	_ = os.Remove("/run/containerd")
	if err := unmountAll(c); err != nil {
		errs = append(errs, err)
	}
	if err := removeNet(ctx, c); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(c); err != nil {
		errs = append(errs, err)
	}
	if err := removeDirs(c); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean lab %s: %w", c.Name, err)
	}
	return nil
}

// daemonNames are the programs that may carry the lab's paths in their
// arguments. Other programs that merely name a lab path (an editor, tail -f
// on a log) are left alone unless they run inside a lab namespace.
var daemonNames = map[string]bool{
	"dockerd": true, "containerd": true, "containerd-shim": true,
	"containerd-shim-runc-v1": true, "containerd-shim-runc-v2": true,
	"runc": true, "docker-proxy": true, "docker-init": true,
	"nsenter": true, "unshare": true, RegistryProgram: true,
}

// labProcesses finds the lab's processes: its daemons and shims (by the lab
// paths in their arguments), anything inside a lab network namespace, and
// all their descendants (containers and managed plugins).
func labProcesses(c Config) []procInfo {
	nsIDs := map[string]bool{}
	for _, ns := range labNetns(c) {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join("/run/netns", ns), &st); err == nil {
			nsIDs[fmt.Sprintf("net:[%d]", st.Ino)] = true
		}
	}
	procs := processes()
	mine := map[int]bool{}
	for _, p := range procs {
		if nsIDs[p.netns] {
			mine[p.pid] = true
			continue
		}
		if !daemonNames[p.comm] {
			continue
		}
		for _, a := range p.args {
			if underRoot(a, c.RunRoot) || underRoot(a, c.StateRoot) || strings.Contains(a, "="+c.RunRoot+"/") {
				mine[p.pid] = true
				break
			}
		}
	}
	// Descendants, until nothing changes.
	for changed := true; changed; {
		changed = false
		for _, p := range procs {
			if !mine[p.pid] && mine[p.ppid] {
				mine[p.pid] = true
				changed = true
			}
		}
	}
	var out []procInfo
	for _, p := range procs {
		if mine[p.pid] {
			out = append(out, p)
		}
	}
	return out
}

// underRoot reports whether s is root or a path below it, possibly as a
// unix:// address.
func underRoot(s, root string) bool {
	s = strings.TrimPrefix(s, "unix://")
	return s == root || strings.HasPrefix(s, root+"/")
}

// termAll sends SIGTERM to the lab's processes named name and waits up to
// grace for them to exit. Stragglers are left to killAll.
func termAll(c Config, name string, grace time.Duration) {
	var pids []int
	for _, p := range labProcesses(c) {
		if p.comm == name {
			pids = append(pids, p.pid)
			_ = syscall.Kill(p.pid, syscall.SIGTERM)
		}
	}
	if len(pids) > 0 {
		c.logf("sent SIGTERM to %d %s process(es)", len(pids), name)
		waitDead(pids, grace)
	}
}

// killAll SIGKILLs every process of the lab until none is left, and removes
// the sockets their shims leave behind in containerd's fixed directory.
func killAll(c Config) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		procs := labProcesses(c)
		if len(procs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var names []string
			for _, p := range procs {
				names = append(names, fmt.Sprintf("%d (%s)", p.pid, p.comm))
			}
			return fmt.Errorf("processes survive SIGKILL: %s", strings.Join(names, ", "))
		}
		pids := make([]int, 0, len(procs))
		for _, p := range procs {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
			pids = append(pids, p.pid)
		}
		c.logf("killed %d leftover process(es)", len(pids))
		waitDead(pids, 5*time.Second)
		for _, p := range procs {
			if s := shimSocket(p); s != "" {
				_ = os.Remove(s)
			}
		}
	}
}

// shimSocket returns the socket a containerd runc v2 shim listens on. The
// shim does not take it as an argument: containerd 1.6 derives it from the
// containerd address, namespace and task id, under its fixed state
// directory, and removes it only when the shim exits cleanly.
func shimSocket(p procInfo) string {
	if p.comm != "containerd-shim-runc-v2" {
		return ""
	}
	var ns, id, addr string
	for i := 0; i+1 < len(p.args); i++ {
		switch p.args[i] {
		case "-namespace":
			ns = p.args[i+1]
		case "-id":
			id = p.args[i+1]
		case "-address":
			addr = p.args[i+1]
		}
	}
	if ns == "" || id == "" || addr == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(filepath.Join(addr, ns, id)))
	return fmt.Sprintf("/run/containerd/s/%x", sum)
}

// labMounts lists the mount points under the lab's roots and its netns
// files, deepest first.
func labMounts(c Config) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if underRoot(mp, c.RunRoot) || underRoot(mp, c.StateRoot) ||
			isHostSuffix(filepath.Base(mp), c.Name+"-h") && filepath.Dir(mp) == "/run/netns" {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// Deepest first; among equals, the later (upper) mount first.
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Count(out[i], "/") > strings.Count(out[j], "/")
	})
	return out, nil
}

// unescapeMount decodes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll lazily unmounts the lab's mounts, deepest first, until none
// is left (mounts may be stacked on one point).
func unmountAll(c Config) error {
	for round := 0; ; round++ {
		mounts, err := labMounts(c)
		if err != nil {
			return err
		}
		if len(mounts) == 0 {
			return nil
		}
		if round == 10 {
			return fmt.Errorf("mounts survive unmounting: %s", strings.Join(mounts, ", "))
		}
		if round == 0 {
			c.logf("unmounting %d leftover mount(s)", len(mounts))
		}
		for _, m := range mounts {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil &&
				!errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
}

// labCgroups lists the cgroup directories of the lab in every hierarchy:
// the hosts' --cgroup-parent, holding their containers, and the managed
// plugins' own, which dockerd 20.10 puts at the top, named by plugin id
// (found from the data roots, so only while those exist).
func labCgroups(c Config) []string {
	var out []string
	for _, pat := range []string{"/sys/fs/cgroup/*/" + c.Name + "-h*", "/sys/fs/cgroup/" + c.Name + "-h*"} {
		matches, _ := filepath.Glob(pat)
		for _, m := range matches {
			if isHostSuffix(filepath.Base(m), c.Name+"-h") {
				out = append(out, m)
			}
		}
	}
	return append(out, pluginCgroups(pluginIDs(c))...)
}

// pluginIDs lists the ids of the managed plugins in the lab's data roots.
func pluginIDs(c Config) []string {
	matches, _ := filepath.Glob(filepath.Join(c.StateRoot, "h*", "docker", "plugins", "*"))
	var out []string
	for _, m := range matches {
		if id := filepath.Base(m); isHexID(id) {
			out = append(out, id)
		}
	}
	return out
}

// pluginCgroups lists the existing cgroups of the given plugin ids.
func pluginCgroups(ids []string) []string {
	var out []string
	for _, id := range ids {
		for _, pat := range []string{"/sys/fs/cgroup/*/" + id, "/sys/fs/cgroup/" + id} {
			matches, _ := filepath.Glob(pat)
			out = append(out, matches...)
		}
	}
	return out
}

// isHexID reports whether s is a 64-hex-digit Docker id.
func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// removeCgroups removes the lab's cgroups, children first. Their
// processes must be gone already.
func removeCgroups(c Config) error {
	var errs []error
	for _, root := range labCgroups(c) {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// removeDirs removes the lab's directories, refusing while anything is
// still mounted below them: RemoveAll would descend into the mount.
func removeDirs(c Config) error {
	mounts, err := labMounts(c)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("not removing %s and %s: still mounted: %s", c.RunRoot, c.StateRoot, strings.Join(mounts, ", "))
	}
	if err := os.RemoveAll(c.RunRoot); err != nil {
		return err
	}
	if !c.KeepLogs {
		return os.RemoveAll(c.StateRoot)
	}
	ents, err := os.ReadDir(c.StateRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if p := filepath.Join(c.StateRoot, e.Name()); p != c.logDir() {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
}
