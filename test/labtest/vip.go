package labtest

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/vip"
)

// HostnameServerCmd makes a test container serve its own hostname over
// HTTP on port 8080 (busybox httpd), so that a client tells the tasks of a
// service apart by what they answer: a task's hostname is its container's
// short ID unless the service sets another.
var HostnameServerCmd = []string{"sh", "-c", "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"}

// CreateHostnameService creates a swarm service whose tasks serve their
// hostname (HostnameServerCmd), with the given "service create" arguments,
// and removes it when the test ends.
func CreateHostnameService(t testing.TB, l *lab.Lab, name string, args ...string) {
	t.Helper()
	full := append([]string{"service", "create", "--detach", "--no-resolve-image", "--name", name}, args...)
	full = append(full, lab.ImageTag)
	l.Manager().MustDocker(t, append(full, HostnameServerCmd...)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = l.Manager().Docker(ctx, "service", "rm", name)
	})
}

// fetchLoop is the shell loop of a client fetching from "$0":8080 and
// printing each answer's last line (the serving task's hostname), or FAIL
// when the connection failed or nothing came back within 2 s; "$1" is the
// number of fetches (0: forever) and "$2" the pause between them, in µs.
const fetchLoop = `i=0; while [ "$1" = 0 ] || [ $i -lt "$1" ]; do i=$((i+1)); ` +
	`r=$(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$0" 8080 | tail -n 1); echo "${r:-FAIL}"; ` +
	`[ "$2" = 0 ] || usleep "$2"; done`

// FetchN makes n connections, one after the other, from ctr on h to
// target:8080 and returns what each answered (FAIL for a failure).
func FetchN(t testing.TB, h *lab.Host, ctr, target string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*3*time.Second+30*time.Second)
	defer cancel()
	out, err := h.Docker(ctx, "exec", ctr, "sh", "-c", fetchLoop, target, strconv.Itoa(n), "0")
	if err != nil {
		t.Fatalf("%d fetches from %s on %s to %s: %v", n, ctr, h.Name, target, err)
	}
	return strings.Fields(out)
}

// Answer is one connection of a Stream: when its answer arrived, and
// which hostname answered ("FAIL": none).
type Answer struct {
	At  time.Time
	Who string
}

// Stream is a client making connections to a target without pause (50 ms
// apart), each answer stamped when it reaches the test.
type Stream struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}

	// mu guards answers and err.
	mu      sync.Mutex
	answers []Answer
	err     error
}

// StartStream starts a Stream from ctr on h to target:8080; it stops when
// the test ends.
func StartStream(t testing.TB, h *lab.Host, ctr, target string) *Stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Stream{name: fmt.Sprintf("%s on %s -> %s", ctr, h.Name, target), cancel: cancel, done: make(chan struct{})}
	cmd := h.DockerCmd(ctx, "exec", ctr, "sh", "-c", fetchLoop, target, "0", "50000")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start stream %s: %v", s.name, err)
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.mu.Lock()
			s.answers = append(s.answers, Answer{At: time.Now(), Who: strings.TrimSpace(sc.Text())})
			s.mu.Unlock()
		}
		err := cmd.Wait()
		s.mu.Lock()
		if ctx.Err() == nil {
			s.err = fmt.Errorf("stream %s ended: %v", s.name, err)
		}
		s.mu.Unlock()
	}()
	t.Cleanup(s.Stop)
	return s
}

// Stop ends the stream; it may be called more than once.
func (s *Stream) Stop() {
	s.cancel()
	<-s.done
}

// Answers returns the answers so far.
func (s *Stream) Answers() []Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Answer(nil), s.answers...)
}

// WaitAnswers waits until the stream has n answers in all.
func (s *Stream) WaitAnswers(t testing.TB, n int, within time.Duration) {
	t.Helper()
	err := lab.WaitFor(context.Background(), within, 50*time.Millisecond, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err != nil {
			return s.err
		}
		if len(s.answers) < n {
			return fmt.Errorf("stream %s: %d answers, want %d", s.name, len(s.answers), n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// VIPTable reads the VIP table of ctr on h (vip.ReadTable in its network
// namespace): its VIPs and their backends, as addresses.
func VIPTable(ctx context.Context, h *lab.Host, ctr string) (map[string][]string, error) {
	out, err := h.Docker(ctx, "inspect", "-f", "{{.State.Pid}}", ctr)
	if err != nil {
		return nil, err
	}
	vips, err := vip.ReadTable("/proc/" + strings.TrimSpace(out) + "/ns/net")
	if err != nil {
		return nil, err
	}
	m := map[string][]string{}
	for _, v := range vips {
		bs := []string{}
		for _, b := range v.Backends {
			bs = append(bs, b.String())
		}
		m[v.Addr.String()] = bs
	}
	return m, nil
}

// WaitVIPBackends waits until ctr's table on h holds exactly one VIP with
// the given backends (in any order), and returns the VIP.
func WaitVIPBackends(t testing.TB, h *lab.Host, ctr string, backends []string, within time.Duration) string {
	t.Helper()
	var got string
	want := strings.Join(sorted(backends), ",")
	err := lab.WaitFor(context.Background(), within, 100*time.Millisecond, func() error {
		m, err := VIPTable(context.Background(), h, ctr)
		if err != nil {
			return err
		}
		if len(m) != 1 {
			return fmt.Errorf("%s on %s balances %v, want one VIP over %s", ctr, h.Name, m, want)
		}
		for a, bs := range m {
			if strings.Join(sorted(bs), ",") != want {
				return fmt.Errorf("%s on %s balances %s over %v, want %s", ctr, h.Name, a, bs, want)
			}
			got = a
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func sorted(ss []string) []string { return slices.Sorted(slices.Values(ss)) }

// StartedAt returns when ctr on h started, as the engine says.
func StartedAt(t testing.TB, h *lab.Host, ctr string) time.Time {
	t.Helper()
	out := h.MustDocker(t, "inspect", "-f", "{{.State.StartedAt}}", ctr)
	at, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("start time of %s on %s: %v", ctr, h.Name, err)
	}
	return at
}
