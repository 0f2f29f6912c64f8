package labtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// NameProbe asks a name server for one name again and again from inside a
// running container, so that a test can tell whether names were answered
// all through an event, as a Pinger tells it for packets.
type NameProbe struct {
	h                       *lab.Host
	ctr, name, server, want string
}

func (p *NameProbe) String() string {
	return fmt.Sprintf("name probe in %s on %s: %s at %s", p.ctr, p.h.Name, p.name, p.server)
}

// The probe runs in the container (busybox sh), appending one line per
// query to probeLog until probeStop exists: "ok", or "fail", the time and
// nslookup's output on one line. A query is answered when nslookup's
// answer (what follows "Name:") holds the wanted address as a whole word.
// busybox nslookup asks twice, 2.5 s apart, before it gives up.
const (
	probeLog    = "/weft-name-probe.log"
	probeStop   = "/weft-name-probe.stop"
	probeScript = `rm -f ` + probeStop + `; : > ` + probeLog + `
while [ ! -e ` + probeStop + ` ]; do
	out=$(nslookup "$0" "$1" 2>&1)
	if echo "$out" | sed -n '/^Name:/,$p' | grep -qw -- "$2"; then echo ok; else echo "fail $(date +%T) $(echo $out)"; fi
	sleep 0.2
done >> ` + probeLog + ` 2>&1
echo done >> ` + probeLog
)

// StartNameProbe starts asking server (weft's name server on a network's
// gateway, say) for name from the running container ctr on h, every 0.2 s
// once the previous answer came, expecting want among the answer's
// addresses; it returns once a first answer came. The probe stops when the
// test ends, or at Stop.
func StartNameProbe(t testing.TB, h *lab.Host, ctr, name, server, want string) *NameProbe {
	t.Helper()
	p := &NameProbe{h: h, ctr: ctr, name: name, server: server, want: want}
	h.MustDocker(t, "exec", "-d", ctr, "sh", "-c", probeScript, name, server, want)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = h.Docker(ctx, "exec", ctr, "touch", probeStop)
	})
	p.WaitMore(t, 1)
	return p
}

// lines reads the probe's log.
func (p *NameProbe) lines(ctx context.Context) ([]string, error) {
	out, err := p.h.Docker(ctx, "exec", p.ctr, "cat", probeLog)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(out), "\n"), nil
}

func countOK(lines []string) int {
	n := 0
	for _, l := range lines {
		if l == "ok" {
			n++
		}
	}
	return n
}

// WaitMore waits until n more queries have been answered.
func (p *NameProbe) WaitMore(t testing.TB, n int) {
	t.Helper()
	ctx := context.Background()
	ls, err := p.lines(ctx)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	base := countOK(ls)
	err = lab.WaitFor(ctx, time.Minute, 200*time.Millisecond, func() error {
		ls, err := p.lines(ctx)
		if err != nil {
			return err
		}
		if got := countOK(ls) - base; got < n {
			return fmt.Errorf("%d more answers, waiting for %d (last: %s)", got, n, ls[len(ls)-1])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// NameResult counts a probe's queries.
type NameResult struct {
	Asked, Answered int
	Failed          []string // "fail <time> <nslookup's output>"
}

func (r NameResult) String() string {
	return fmt.Sprintf("%d asked, %d answered, %d failed", r.Asked, r.Answered, len(r.Failed))
}

// Check fails the test (without stopping it) if a query went unanswered or
// fewer than 20 were asked.
func (r NameResult) Check(t testing.TB, p *NameProbe) { r.CheckRefusedAtMost(t, p, 0) }

// CheckRefusedAtMost is Check, letting up to refused queries fail by being
// refused (ICMP port unreachable: "Connection refused"), and no other way.
func (r NameResult) CheckRefusedAtMost(t testing.TB, p *NameProbe, refused int) {
	t.Helper()
	n := 0
	for _, f := range r.Failed {
		if !strings.Contains(f, "Connection refused") {
			n = refused + 1 // another failure: never let in
			break
		}
		n++
	}
	if n > refused || r.Asked < 20 {
		shown := r.Failed
		if len(shown) > 5 {
			shown = shown[:5]
		}
		t.Errorf("%s: %s:\n%s", p, r, strings.Join(shown, "\n"))
	}
}

// Stop ends the probe, waiting for its query in flight, and counts.
func (p *NameProbe) Stop(t testing.TB) NameResult {
	t.Helper()
	p.h.MustDocker(t, "exec", p.ctr, "touch", probeStop)
	ctx := context.Background()
	var ls []string
	err := lab.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		var err error
		if ls, err = p.lines(ctx); err != nil {
			return err
		}
		if ls[len(ls)-1] != "done" {
			return fmt.Errorf("still asking")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	var r NameResult
	for _, l := range ls[:len(ls)-1] {
		r.Asked++
		if l == "ok" {
			r.Answered++
		} else {
			r.Failed = append(r.Failed, l)
		}
	}
	return r
}
