package lab

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// No registry is reachable, so images are made here: a tarball imported
// with "docker import" on every host.

// buildImageTar writes the test image's root filesystem to path: busybox
// with a link per applet, iperf3 with the shared libraries ldd names, and
// the few files programs expect.
func buildImageTar(c Config, path string) error {
	applets, err := exec.Command(c.Busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("list busybox applets of %s: %w", c.Busybox, err)
	}
	libs, err := sharedLibs(c.Iperf3)
	if err != nil {
		return err
	}

	w, err := newTarWriter(path)
	if err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "var", "run", "proc", "sys", "dev", "lib", "lib64"} {
		w.dir(d, 0o755)
	}
	w.dir("tmp", 0o1777)
	w.dir("var/tmp", 0o1777)
	w.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	w.file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	w.file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n"))
	w.copy("bin/busybox", c.Busybox, 0o755)
	for _, a := range strings.Fields(string(applets)) {
		if a != "busybox" {
			w.symlink("bin/"+a, "busybox")
		}
	}
	w.copy("usr/bin/iperf3", c.Iperf3, 0o755)
	dirs := map[string]bool{}
	for _, l := range libs {
		for d := filepath.Dir(l); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted) // parents first
	for _, d := range sorted {
		w.dir(strings.TrimPrefix(d, "/"), 0o755)
	}
	for _, l := range libs {
		w.copy(strings.TrimPrefix(l, "/"), l, 0o755)
	}
	return w.close()
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// sharedLibs lists the libraries and loader that ldd says bin needs, as
// absolute paths (symlinks are copied as the files they point at).
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if m := lddLine.FindStringSubmatch(sc.Text()); m != nil {
			libs = append(libs, m[1])
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s named no library", bin)
	}
	return libs, nil
}

// tarWriter writes a tarball, keeping the first error.
type tarWriter struct {
	f    *os.File
	tw   *tar.Writer
	seen map[string]bool // names written; docker import refuses duplicates
	err  error
}

func newTarWriter(path string) (*tarWriter, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return nil, err
	}
	return &tarWriter{f: f, tw: tar.NewWriter(f), seen: map[string]bool{}}, nil
}

func (w *tarWriter) header(h *tar.Header) {
	if w.err == nil && w.seen[h.Name] {
		w.err = fmt.Errorf("%s added twice", h.Name)
	}
	if w.err == nil {
		w.seen[h.Name] = true
		h.ModTime = time.Unix(0, 0)
		w.err = w.tw.WriteHeader(h)
	}
}

func (w *tarWriter) dir(name string, mode int64) {
	if w.seen[name+"/"] {
		return
	}
	w.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
}

func (w *tarWriter) symlink(name, target string) {
	w.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
}

func (w *tarWriter) file(name string, mode int64, data []byte) {
	w.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))})
	if w.err == nil {
		_, w.err = w.tw.Write(data)
	}
}

// copy adds the file src (following symlinks) as name.
func (w *tarWriter) copy(name, src string, mode int64) {
	if w.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		w.err = err
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		w.err = err
		return
	}
	w.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: st.Size()})
	if w.err == nil {
		_, w.err = io.Copy(w.tw, f)
	}
}

// close finishes the tarball and moves it into place.
func (w *tarWriter) close() error {
	err := errors.Join(w.err, w.tw.Close(), w.f.Close())
	name := strings.TrimSuffix(w.f.Name(), ".tmp")
	if err != nil {
		_ = os.Remove(w.f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return os.Rename(w.f.Name(), name)
}

// importImage imports the test image on every host, building its tarball
// first if the lab has none yet.
func (l *Lab) importImage(ctx context.Context) error {
	path := filepath.Join(l.cfg.StateRoot, "images", "busybox.tar")
	if _, err := os.Stat(path); err != nil {
		start := time.Now()
		if err := buildImageTar(l.cfg, path); err != nil {
			return fmt.Errorf("build test image: %w", err)
		}
		l.cfg.logf("built test image tarball in %s", time.Since(start).Round(time.Millisecond))
	}
	return l.eachHost(func(h *Host) error {
		_, err := h.Docker(ctx, "import", "--change", `CMD ["sh"]`, path, ImageTag)
		return err
	})
}

// ImportBinary imports a static binary as a one-file image named tag on
// every host: the binary at /app as its entrypoint, plus an empty /tmp.
func (l *Lab) ImportBinary(ctx context.Context, binaryPath, tag string) error {
	images := filepath.Join(l.cfg.StateRoot, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(images, "bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "image.tar")
	w, err := newTarWriter(path)
	if err != nil {
		return err
	}
	w.copy("app", binaryPath, 0o755)
	w.dir("tmp", 0o1777)
	if err := w.close(); err != nil {
		return err
	}
	return l.eachHost(func(h *Host) error {
		_, err := h.Docker(ctx, "import", "--change", `ENTRYPOINT ["/app"]`, path, tag)
		return err
	})
}
