package labtest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/test/lab"
)

func TestEntryDiff(t *testing.T) {
	got := entryDiff("FDB entry", []string{"a 1", "b 2", "b 2", "c 3"}, []string{"a 1", "b 2", "d 4"})
	want := []string{"FDB entry duplicated: b 2", "FDB entry missing: d 4", "FDB entry stale: c 3"}
	if !slices.Equal(got, want) {
		t.Errorf("entryDiff = %q, want %q", got, want)
	}
	if got := entryDiff("x", []string{"a"}, []string{"a"}); len(got) != 0 {
		t.Errorf("equal lists differ: %q", got)
	}
}

// TestStray: what a host namespace may hold besides weft's devices. An
// endpoint interface is a leak there; another child of a weft device (an
// announcer, whatever its name) is not; the lab's own interfaces and the
// veths (Docker's, on docker_gwbridge or left by it) are not either.
func TestStray(t *testing.T) {
	k := &dataplane.KernelState{Links: []dataplane.Link{
		{Name: "lo", Kind: "device"},
		{Name: lab.UnderlayIf, Kind: "veth"},
		{Name: lab.OutsideIf, Kind: "veth"},
		{Name: "weft42", Kind: "vxlan"},
		{Name: "wa42", Kind: "macvlan", Parent: "weft42"},
		{Name: "wv0123456789ab", Kind: "macvlan", Parent: "weft42"},
		{Name: "docker_gwbridge", Kind: "bridge"},
		{Name: "veth1", Kind: "veth", Master: "docker_gwbridge"},
		{Name: "veth2", Kind: "veth", Master: "docker_gwbridge"},
		{Name: "veth3", Kind: "veth"},
		{Name: "br0", Kind: "bridge"},
	}}
	problems := stray(k)
	want := []string{"endpoint interface wv0123456789ab (on weft42) in the host namespace", "bridge br0"}
	if !slices.Equal(problems, want) {
		t.Errorf("stray = %q; want %q", problems, want)
	}
	for name, want := range map[string]bool{"wv0123456789ab": true, "wv0123456789": false, "wvmoved": false, "wv0123456789abc": false, "wv0123456789AB": false} {
		if endpointIf.MatchString(name) != want {
			t.Errorf("endpoint interface name %q: %v, want %v", name, !want, want)
		}
	}
}

// A run past busybox's 65536th ping starts its seq again at 0: no
// duplicate, and a gap in the second lap is a loss.
func TestCountPings(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 70000; i++ {
		if i == 66000 {
			continue
		}
		fmt.Fprintf(&b, "64 bytes from 10.0.0.2: seq=%d ttl=64 time=0.1 ms\n", i%65536)
	}
	b.WriteString("70001 packets transmitted, 69999 packets received, 0% packet loss\n")
	r := countPings(b.String())
	if r.Sent != 70001 || r.Received != 69999 || r.Dups != 0 || len(r.Lost) != 1 || r.Lost[0] != 66000 {
		t.Fatalf("%s, lost %v", r, r.Lost)
	}
}

// With docker logs -t's times, each run of lost pings is told with the
// time of the reply before it.
func TestPingGaps(t *testing.T) {
	start := time.Date(2026, 11, 30, 23, 23, 52, 0, time.UTC)
	var b strings.Builder
	for i := 0; i < 100; i++ {
		if i == 0 || (i >= 40 && i <= 42) || i == 70 {
			continue
		}
		fmt.Fprintf(&b, "%s 64 bytes from 10.0.0.2: seq=%d ttl=64 time=0.1 ms\n", start.Add(time.Duration(i)*10*time.Millisecond).Format(time.RFC3339Nano), i)
	}
	fmt.Fprintf(&b, "%s 101 packets transmitted, 95 packets received, 5%% packet loss\n", start.Add(time.Second).Format(time.RFC3339Nano))
	r := countPings(b.String())
	want := []Gap{{0, 0, time.Time{}}, {40, 42, start.Add(390 * time.Millisecond)}, {70, 70, start.Add(690 * time.Millisecond)}}
	if r.Sent != 101 || len(r.Lost) != 5 || !slices.Equal(r.Gaps, want) {
		t.Fatalf("%s: gaps %v, want %v", r, r.Gaps, want)
	}
	if got := r.String(); !strings.Contains(got, "(lost 0, 40-42 after 23:23:52.390, 70 after 23:23:52.690)") {
		t.Errorf("String: %s", got)
	}
}

// A reply received twice is counted, told with its time, and set beside
// busybox's own count of duplicates.
func TestPingDuplicates(t *testing.T) {
	start := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	var b strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "%s 64 bytes from 10.0.0.2: seq=%d ttl=64 time=0.1 ms\n", start.Add(time.Duration(i)*10*time.Millisecond).Format(time.RFC3339Nano), i)
		if i == 50 {
			fmt.Fprintf(&b, "%s 64 bytes from 10.0.0.2: seq=%d ttl=64 time=0.2 ms (DUP!)\n", start.Add(505*time.Millisecond).Format(time.RFC3339Nano), i)
		}
	}
	fmt.Fprintf(&b, "%s 100 packets transmitted, 100 packets received, +1 duplicates, 0%% packet loss\n", start.Add(time.Second).Format(time.RFC3339Nano))
	r := countPings(b.String())
	if r.Dups != 1 || r.BusyboxDups != 1 || len(r.Lost) != 0 || !slices.Equal(r.DupsAt, []Dup{{50, start.Add(505 * time.Millisecond)}}) {
		t.Fatalf("%s: %+v", r, r)
	}
	if got := r.String(); !strings.Contains(got, "(duplicated 50 at 02:00:00.505; busybox counted 1)") {
		t.Errorf("String: %s", got)
	}
}

// A reply line printed twice without busybox's "(DUP!)", which busybox
// did not count either (its SIGINT handler's stdio re-entering a flush:
// seen on the last reply of a run), is told but is no duplicate.
func TestPingReprintedLine(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "64 bytes from 10.0.0.2: seq=%d ttl=64 time=0.1 ms\n", i)
	}
	b.WriteString("64 bytes from 10.0.0.2: seq=99 ttl=64 time=0.1 ms\n")
	b.WriteString("100 packets transmitted, 100 packets received, 0% packet loss\n")
	r := countPings(b.String())
	if r.Dups != 0 || r.BusyboxDups != 0 || len(r.Reprinted) != 1 || r.Reprinted[0].Seq != 99 || len(r.Lost) != 0 {
		t.Fatalf("%s: %+v", r, r)
	}
	if got := r.String(); !strings.Contains(got, "printed twice, not received twice: 99") {
		t.Errorf("String: %s", got)
	}
}

// Problems reads the plugin's warnings and errors and the engine's own
// from a dockerd log, after an offset, the last ones only; memberlist's
// and lower levels are left out.
func TestProblems(t *testing.T) {
	log := filepath.Join(t.TempDir(), "dockerd.log")
	before := `time="2026-11-30T20:00:00Z" level=error msg="before the offset"` + "\n"
	lines := []string{
		`time="2026-11-30T20:19:21.609Z" level=error msg="fatal task error" error="Pool overlaps with other one on this address space" module=node/agent/taskmanager`,
		`time="2026-11-30T20:19:22Z" level=info msg="time=2026-11-30T20:19:22.0Z level=WARN msg=\"mesh send failed\" component=mesh peer=h2" plugin=a4fc`,
		`time="2026-11-30T20:19:23Z" level=info msg="time=2026-11-30T20:19:23.0Z level=INFO msg=\"endpoint created\" component=driver" plugin=a4fc`,
		`time="2026-11-30T20:19:24Z" level=error msg="time=2026-11-30T20:19:24.0Z level=ERROR msg=\"failed to receive\" component=mesh component=memberlist" plugin=a4fc`,
		`time="2026-11-30T20:19:25.1Z" level=warning msg="rmServiceBinding possible transient state"`,
		`time="2026-11-30T20:19:26.1Z" level=info msg="ignoring event"`,
	}
	if err := os.WriteFile(log, []byte(before+strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &lab.Host{Name: "h1", DockerdLog: log}
	got := Problems(h, int64(len(before)), 10)
	want := []string{
		`engine error msg="fatal task error" error="Pool overlaps with other one on this address space" module=node/agent/taskmanager`,
		`plugin WARN msg="mesh send failed" component=mesh peer=h2`,
		`engine warning msg="rmServiceBinding possible transient state"`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("Problems:\n%q\nwant\n%q", got, want)
	}
	if got := Problems(h, int64(len(before)), 1); !slices.Equal(got, want[2:]) {
		t.Errorf("the last one: %q", got)
	}
	if got := Problems(h, 1<<20, 10); len(got) != 4 {
		t.Errorf("an offset past the end (a new log) reads it whole: %q", got)
	}
}
