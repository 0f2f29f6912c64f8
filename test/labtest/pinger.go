package labtest

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// Pinger is a container that pings a target every 10 ms until stopped, so
// that a test can count what an event cost in packets.
type Pinger struct {
	h            *lab.Host
	name, target string
}

func (p *Pinger) String() string { return fmt.Sprintf("%s on %s -> %s", p.name, p.h.Name, p.target) }

// StartPinger runs a container on h that waits until it reaches target,
// then pings it every 10 ms; it returns once the pings have started. The
// container is removed when the test ends.
func StartPinger(t testing.TB, h *lab.Host, name, network, target string) *Pinger {
	t.Helper()
	h.MustDocker(t, "run", "-d", "--name", name, "--network", network, lab.ImageTag, "sh", "-c",
		`until ping -c1 -W1 "$0" >/dev/null 2>&1; do sleep 0.1; done; exec ping -i 0.01 "$0"`, target)
	t.Cleanup(func() { removeContainers(h, name) })
	p := &Pinger{h, name, target}
	p.WaitMore(t, 1)
	return p
}

// replies counts the replies logged so far.
func (p *Pinger) replies(ctx context.Context) (int, error) {
	out, err := p.h.Docker(ctx, "logs", p.name)
	if err != nil {
		return 0, err
	}
	return strings.Count(out, " seq="), nil
}

// WaitMore waits until n more replies have come in.
func (p *Pinger) WaitMore(t testing.TB, n int) {
	t.Helper()
	ctx := context.Background()
	base, err := p.replies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = lab.WaitFor(ctx, time.Minute, 100*time.Millisecond, func() error {
		got, err := p.replies(ctx)
		if err != nil {
			return err
		}
		if got < base+n {
			return fmt.Errorf("%d replies, waiting for %d", got-base, n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// PingResult counts a pinger's run.
type PingResult struct {
	Sent, Received int
	// Dups counts the replies received twice: busybox marks each one it
	// receives again "(DUP!)", and counts them in its summary.
	Dups int
	Lost []int // sequence numbers without a reply
	// DupsAt are the duplicate replies, each with its sequence number
	// and the time it was logged, to be read beside the plugins' logs.
	DupsAt []Dup
	// BusyboxDups is the count of duplicates busybox's summary gives
	// ("+N duplicates"); it equals Dups.
	BusyboxDups int
	// Reprinted are reply lines printed twice that busybox did not
	// receive twice (no "(DUP!)", not in its count): busybox's SIGINT
	// handler prints its summary through stdio while the interrupted
	// main loop may be flushing a line, and that line comes out again.
	// Shown, not counted as duplicates.
	Reprinted []Dup
	// Gaps are the runs of lost sequence numbers, each with the time of
	// the reply before it, to be read beside the plugins' logs.
	Gaps []Gap
}

// Gap is a run of sequence numbers without a reply, First to Last, lost
// after a reply logged at After (zero: none before it).
type Gap struct {
	First, Last int
	After       time.Time
}

// Dup is a reply received again: its sequence number and when it was
// logged.
type Dup struct {
	Seq int
	At  time.Time
}

func (d Dup) String() string {
	s := strconv.Itoa(d.Seq)
	if !d.At.IsZero() {
		s += " at " + d.At.UTC().Format("15:04:05.000")
	}
	return s
}

func (g Gap) String() string {
	s := strconv.Itoa(g.First)
	if g.Last != g.First {
		s += "-" + strconv.Itoa(g.Last)
	}
	if !g.After.IsZero() {
		s += " after " + g.After.UTC().Format("15:04:05.000")
	}
	return s
}

func (r PingResult) String() string {
	s := fmt.Sprintf("%d sent, %d received, %d lost, %d duplicates", r.Sent, r.Received, len(r.Lost), r.Dups)
	if len(r.Gaps) > 0 {
		shown := r.Gaps
		if len(shown) > 10 {
			shown = shown[:10]
		}
		parts := make([]string, len(shown))
		for i, g := range shown {
			parts[i] = g.String()
		}
		s += " (lost " + strings.Join(parts, ", ")
		if len(r.Gaps) > len(shown) {
			s += fmt.Sprintf(", and %d gaps more", len(r.Gaps)-len(shown))
		}
		s += ")"
	}
	if len(r.DupsAt) > 0 {
		shown := r.DupsAt
		if len(shown) > 10 {
			shown = shown[:10]
		}
		parts := make([]string, len(shown))
		for i, d := range shown {
			parts[i] = d.String()
		}
		s += fmt.Sprintf(" (duplicated %s; busybox counted %d)", strings.Join(parts, ", "), r.BusyboxDups)
	}
	if len(r.Reprinted) > 0 {
		parts := make([]string, len(r.Reprinted))
		for i, d := range r.Reprinted {
			parts[i] = d.String()
		}
		s += fmt.Sprintf(" (reply line printed twice, not received twice: %s)", strings.Join(parts, ", "))
	}
	return s
}

// Check fails the test (without stopping it) if p lost or duplicated a
// packet, or sent fewer than 100.
func (r PingResult) Check(t testing.TB, p *Pinger) {
	t.Helper()
	r.CheckAtMost(t, p, 0)
}

// CheckAtMost is Check allowing up to maxLost lost packets: for a known
// loss a test bounds and reports rather than hides (README says which).
func (r PingResult) CheckAtMost(t testing.TB, p *Pinger, maxLost int) {
	t.Helper()
	if len(r.Lost) > maxLost || r.Dups > 0 || r.BusyboxDups != r.Dups || r.Sent < 100 {
		shown := r.Lost
		if len(shown) > 20 {
			shown = shown[:20]
		}
		t.Errorf("%s: %s; lost seq %v", p, r, shown)
	}
}

var (
	pingSeq     = regexp.MustCompile(`^\d+ bytes from .*: seq=(\d+) `)
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)
	pingDups    = regexp.MustCompile(`\+(\d+) duplicates`)
)

// Stop interrupts the ping, which prints its summary, and counts.
func (p *Pinger) Stop(t testing.TB) PingResult {
	t.Helper()
	p.h.MustDocker(t, "kill", "-s", "INT", p.name)
	p.h.MustDocker(t, "wait", p.name)
	out := p.h.MustDocker(t, "logs", "-t", p.name)
	r := countPings(out)
	if r.Sent == 0 {
		t.Fatalf("%s printed no summary:\n%s", p, out)
	}
	return r
}

// countPings reads a busybox ping's output: one line per reply, then its
// summary; each line may begin with the time docker logs -t gives it.
func countPings(out string) PingResult {
	var r PingResult
	got := map[int]bool{}
	at := map[int]time.Time{}
	// busybox's seq wraps at 65536 (after 11 minutes at 10 ms): unwrapped
	// here, so that a long run's second lap is no duplicate.
	prev, lap := -1, 0
	for _, line := range strings.Split(out, "\n") {
		var when time.Time
		if stamp, rest, ok := strings.Cut(line, " "); ok {
			if ts, err := time.Parse(time.RFC3339Nano, stamp); err == nil {
				when, line = ts, rest
			}
		}
		if m := pingSeq.FindStringSubmatch(line); m != nil {
			seq, _ := strconv.Atoi(m[1])
			if prev >= 0 && seq+lap < prev-30000 {
				lap += 65536
			}
			seq += lap
			prev = seq
			switch {
			case strings.Contains(line, "DUP!"):
				r.Dups++
				r.DupsAt = append(r.DupsAt, Dup{Seq: seq, At: when})
			case got[seq]:
				r.Reprinted = append(r.Reprinted, Dup{Seq: seq, At: when})
			}
			got[seq] = true
			at[seq] = when
		}
		if m := pingSummary.FindStringSubmatch(line); m != nil {
			r.Sent, _ = strconv.Atoi(m[1])
			r.Received, _ = strconv.Atoi(m[2])
			if d := pingDups.FindStringSubmatch(line); d != nil {
				r.BusyboxDups, _ = strconv.Atoi(d[1])
			}
		}
	}
	for seq := 0; seq < r.Sent; seq++ {
		// busybox counts seq 0..sent-1; the last may have been in flight
		// when the ping was interrupted.
		if got[seq] || seq == r.Sent-1 {
			continue
		}
		r.Lost = append(r.Lost, seq)
		if n := len(r.Gaps); n > 0 && r.Gaps[n-1].Last == seq-1 {
			r.Gaps[n-1].Last = seq
			continue
		}
		r.Gaps = append(r.Gaps, Gap{First: seq, Last: seq, After: at[seq-1]})
	}
	return r
}
