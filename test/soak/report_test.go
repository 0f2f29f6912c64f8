package soak

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/test/labtest"
)

// writeReport fills the run's directory, beside its ops.log, with what a
// violation needs looked at: violation.txt (the message and the seed), and
// per host h<i>-status.txt (`weft status`, then --json), h<i>-kernel.txt
// (links, FDB, neighbours, nftables), h<i>-docker.txt (containers,
// networks, and on the manager services and tasks), h<i>-dockerd.log
// (with the plugin's output) and h<i>-containerd.log.
func (r *run) writeReport(msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(r.dir, name), []byte(text), 0o644); err != nil {
			fmt.Printf("soak report: %v\n", err)
		}
	}
	write("violation.txt", fmt.Sprintf("%s\n\nseed %d\nreplay: make soak SOAK_SEED=%d SOAK_DURATION=%s SOAK_OPS=%s\n\n%s",
		msg, r.s.seed, r.s.seed, r.s.duration, r.s.ops, r.figures(time.Since(r.start))))
	section := func(b *strings.Builder, title, out string, err error) {
		fmt.Fprintf(b, "### %s\n%s\n", title, out)
		if err != nil {
			fmt.Fprintf(b, "(error: %v)\n", err)
		}
		b.WriteString("\n")
	}
	for _, h := range r.l.Hosts {
		var st strings.Builder
		out, err := labtest.WeftCLI(ctx, h, "status")
		section(&st, "weft status", out, err)
		out, err = labtest.WeftCLI(ctx, h, "status", "--json")
		section(&st, "weft status --json", out, err)
		write(h.Name+"-status.txt", st.String())

		var k strings.Builder
		for _, cmd := range [][]string{
			{"ip", "-d", "link", "show"},
			{"ip", "addr", "show"},
			{"bridge", "fdb", "show"},
			{"ip", "neigh", "show"},
			{"iptables", "-S"},
			{"nft", "list", "ruleset"},
		} {
			out, err := h.Exec(ctx, cmd[0], cmd[1:]...)
			section(&k, strings.Join(cmd, " "), out, err)
		}
		write(h.Name+"-kernel.txt", k.String())

		var d strings.Builder
		cmds := [][]string{{"ps", "-a"}, {"network", "ls"}, {"plugin", "ls"}}
		if h == r.l.Manager() {
			cmds = append(cmds, []string{"node", "ls"}, []string{"service", "ls"})
			for _, s := range r.model.Svcs {
				cmds = append(cmds, []string{"service", "ps", "--no-trunc", s.Name})
			}
		}
		for _, cmd := range cmds {
			out, err := h.Docker(ctx, cmd...)
			section(&d, "docker "+strings.Join(cmd, " "), out, err)
		}
		write(h.Name+"-docker.txt", d.String())

		for _, f := range []struct{ src, dst string }{{h.DockerdLog, "-dockerd.log"}, {h.ContainerdLog, "-containerd.log"}} {
			if err := copyFile(f.src, filepath.Join(r.dir, h.Name+f.dst)); err != nil {
				fmt.Printf("soak report: %v\n", err)
			}
		}
	}
	fmt.Printf("soak report written to %s\n", r.dir)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// summary writes summary.txt and logs the run's figures.
func (r *run) summary(elapsed time.Duration) {
	text := r.figures(elapsed)
	if err := os.WriteFile(filepath.Join(r.dir, "summary.txt"), []byte(text), 0o644); err != nil {
		fmt.Printf("soak report: %v\n", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		r.logf("FIGURE soak: %s", line)
	}
}

// figures are the run's: operations per minute, per kind, and the settle
// times' distribution, overall and per kind.
func (r *run) figures(elapsed time.Duration) string {
	var b strings.Builder
	n := len(r.done)
	fmt.Fprintf(&b, "seed %d, operations %s: %d operations in %s, %.1f per minute\n", r.s.seed, r.s.ops, n, elapsed.Round(time.Second), float64(n)/elapsed.Minutes())
	byKind, weftByKind := map[Kind][]time.Duration{}, map[Kind][]time.Duration{}
	var all, weft []time.Duration
	for _, d := range r.done {
		byKind[d.op.Kind] = append(byKind[d.op.Kind], d.settled)
		weftByKind[d.op.Kind] = append(weftByKind[d.op.Kind], d.weft)
		all = append(all, d.settled)
		weft = append(weft, d.weft)
	}
	fmt.Fprintf(&b, "findings: %d\n", len(r.findings))
	for _, f := range r.findings {
		fmt.Fprintf(&b, "finding: %s\n", f)
	}
	var purges []time.Duration
	for _, d := range r.done {
		if d.purged > 0 {
			purges = append(purges, d.purged)
		}
	}
	if len(purges) > 0 {
		fmt.Fprintf(&b, "partitions (%d): each side forgot the other after %s\n", len(purges), dist(purges))
	}
	fmt.Fprintf(&b, "settle time (operation's end to settled), all: %s; weft's part (engines as meant to settled): %s\n", dist(all), dist(weft))
	var kinds []Kind
	for k := range byKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "%s (%d): settle %s; weft's part %s\n", k, len(byKind[k]), dist(byKind[k]), dist(weftByKind[k]))
	}
	return b.String()
}

// dist is a distribution's min, median, p90, max.
func dist(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)].Round(100 * time.Millisecond) }
	return fmt.Sprintf("min %s, p50 %s, p90 %s, max %s", q(0), q(0.5), q(0.9), q(1))
}
