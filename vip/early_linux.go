package vip

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The early path: the engine learns a starting container's network
// namespace in the runtime's prestart hook, mounts it at the container's
// sandbox key, moves the endpoints' interfaces into it and only then lets
// the container's process start, while the engine's API answers nothing
// about the container until its start is over (its inspect waits on the
// start). So the balancer watches the directory of the sandbox keys: a new
// key is waited on until the namespace is mounted and holds the interface
// of one of this host's endpoints (known by its MAC, from the catalog),
// and its table is written then, most often before the process runs. The
// container's start event later confirms the sandbox under its ID.

// macs maps this host's endpoints' MACs to their networks, for the early
// path's goroutines; Run's goroutine writes it.
func (b *Balancer) setMAC(mac, network string, present bool) {
	b.macMu.Lock()
	defer b.macMu.Unlock()
	if present {
		b.macs[mac] = network
	} else {
		delete(b.macs, mac)
	}
}

func (b *Balancer) networkOfMAC(mac string) (string, bool) {
	b.macMu.Lock()
	defer b.macMu.Unlock()
	n, ok := b.macs[mac]
	return n, ok
}

// watchKeys watches dir, where the engine mounts sandboxes' namespaces,
// until ctx ends, and hands every new sandbox holding one of this host's
// endpoints to Run.
func (b *Balancer) watchKeys(ctx context.Context, dir string) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE); err != nil {
		unix.Close(fd)
		return err
	}
	f := os.NewFile(uintptr(fd), "inotify:"+dir)
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := f.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if len(name) > 0 {
				b.early(ctx, filepath.Join(dir, string(name)))
			}
		}
	}
}

// early waits, from a goroutine of its own, until a new sandbox key at
// path is a namespace holding one of this host's endpoints, and hands it
// to Run. Keys of namespaces that hold none (Docker's own, or a container
// on other networks) are dropped once the wait ends.
func (b *Balancer) early(ctx context.Context, path string) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		deadline := time.Now().Add(2 * time.Second)
		for pause := 200 * time.Microsecond; ctx.Err() == nil && time.Now().Before(deadline); pause = min(2*pause, 5*time.Millisecond) {
			if nets := b.earlyNetworks(path); len(nets) > 0 {
				b.updates.Publish(update{sandbox: &Sandbox{Path: path, Networks: nets}, seen: time.Now()})
				return
			}
			time.Sleep(pause)
		}
	}()
}

// earlyNetworks returns the networks of this host's endpoints whose
// interfaces are in the namespace at path, sorted; none while it is not
// mounted yet.
func (b *Balancer) earlyNetworks(path string) []string {
	ns, err := openNamespace(path)
	if err != nil {
		return nil
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil
	}
	var nets []string
	for _, l := range links {
		mac := l.Attrs().HardwareAddr
		if len(mac) != 6 {
			continue
		}
		if n, ok := b.networkOfMAC(net.HardwareAddr(mac).String()); ok && !slices.Contains(nets, n) {
			nets = append(nets, n)
		}
	}
	slices.Sort(nets)
	return nets
}

// keysDir returns where the engine mounts sandboxes' namespaces, as this
// process reaches it: the directory of a known sandbox key, else the
// engine's --exec-root (or its default) followed by "netns".
func (r *reader) keysDir() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sb := range r.known {
		return filepath.Dir(sb.Path)
	}
	root := "/var/run/docker"
	if r.pid > 0 {
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(r.pid) + "/cmdline"); err == nil {
			args := strings.Split(string(b), "\x00")
			for i, a := range args {
				if v, ok := strings.CutPrefix(a, "--exec-root="); ok {
					root = v
				} else if a == "--exec-root" && i+1 < len(args) {
					root = args[i+1]
				}
			}
		}
	}
	return r.nsPath(filepath.Join(root, "netns"))
}
