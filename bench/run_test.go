package bench

import (
	"strings"
	"testing"
	"time"
)

// TestMergedKeepsOrigins: a part merged from an earlier run keeps the run
// that measured it, even through a second merge, and its notes; notes of a
// part measured again are not carried over.
func TestMergedKeepsOrigins(t *testing.T) {
	first := &Results{Date: time.Date(2026, 11, 26, 15, 13, 0, 0, time.UTC), Commit: "aaaa", Machine: "one", Reps: 3, Seconds: 1620,
		Data: []DataRun{{}}, Control: &ControlResult{}, Scale: []ScaleResult{{Members: 10}}, Kernel: &KernelResult{Entries: 10000},
		PartNotes: map[string][]string{PartData: {"data failed once"}, PartScale: {"scale timed out"}}}
	o := &Options{Parts: []string{PartScale}}
	second := &Results{Date: first.Date.Add(time.Hour), Commit: "bbbb", Machine: "one", Reps: 5, Seconds: 240, OwnSeconds: 240, Scale: []ScaleResult{{Members: 200}}}
	m := merged(second, first, o)
	third := &Results{Date: first.Date.Add(2 * time.Hour), Commit: "cccc", Reps: 5, Seconds: 360, OwnSeconds: 360, Scale: []ScaleResult{{Members: 50}}, Machine: "another"}
	m = merged(third, m, o)

	for _, part := range []string{PartData, PartControl, PartKernel} {
		if got := m.Origins[part]; !strings.Contains(got, "commit aaaa") {
			t.Errorf("%s part: origin %q, want the first run", part, got)
		}
	}
	if _, ok := m.Origins[PartScale]; ok || m.Scale[0].Members != 50 {
		t.Errorf("scale: origin %q, members %d; want this run's", m.Origins[PartScale], m.Scale[0].Members)
	}
	if got := m.PartNotes[PartData]; len(got) != 1 {
		t.Errorf("data notes %q, want the first run's", got)
	}
	if got := m.PartNotes[PartScale]; len(got) != 0 {
		t.Errorf("scale notes %q carried over a part measured again", got)
	}
	if got := m.Origins[PartScale]; got != "" {
		t.Errorf("scale origin %q", got)
	}
	if m.Seconds != 1620+240+360 || m.OwnSeconds != 360 {
		t.Errorf("seconds %v (own %v), want all runs' and this run's", m.Seconds, m.OwnSeconds)
	}
	if m.Reps != 3 || m.Commit != "cccc" {
		t.Errorf("reps %d, commit %s; want the fewest repetitions and the latest commit", m.Reps, m.Commit)
	}
	if got := Report(m, ""); !strings.Contains(got, "- The machine named above is this run's; the parts merged in were measured on one.") {
		t.Errorf("report does not say the merged parts come from another machine")
	}
	if got := Report(m, ""); !strings.Contains(got, "The data part comes from the run of 2026-11-26 15:13 UTC (commit aaaa") {
		t.Errorf("report does not say where the data part comes from")
	}
	// A fourth run on the third's machine: the parts measured on the
	// first machine still say so.
	fourth := &Results{Date: first.Date.Add(3 * time.Hour), Commit: "dddd", Reps: 5, Seconds: 60, OwnSeconds: 60, Scale: []ScaleResult{{Members: 10}}, Machine: "another"}
	if got := Report(merged(fourth, m, o), ""); !strings.Contains(got, "- The machine named above is this run's; the parts merged in were measured on one.") {
		t.Errorf("a merge of a merge forgot the machine the merged parts were measured on")
	}
}

// TestKernelReport: the kernel part's table shows both ways side by side
// with their ratio, and the target row its verdict.
func TestKernelReport(t *testing.T) {
	r := &Results{Kernel: &KernelResult{Entries: 10000, Fill: 1.2,
		TableAdd: Floats{40, 38, 42}, TableRemove: Floats{39, 37, 41},
		OneAdd: Floats{1, 0.5, 2}, OneRemove: Floats{0.5, 0.25, 1}}}
	got := Report(r, "")
	for _, want := range []string{
		"## Targets (issues 6 and 12)",
		"| one endpoint changed at 10,000 remote endpoints: a few ms (≤ 5 ms) | added 1.00 (0.50–2.00) ms, removed 0.50 (0.25–1.00) ms | met |",
		"## Kernel entries, per change, 10,000 remote endpoints",
		"| endpoint added | 40.00 (38.00–42.00) | 1.00 (0.50–2.00) | 40 (21–76) |",
		"| endpoint removed | 39.00 (37.00–41.00) | 0.50 (0.25–1.00) | 78 (41–148) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestVIPReport: the VIP part's table shows both ways side by side with
// their ratio, and a target row per figure with its verdict.
func TestVIPReport(t *testing.T) {
	r := &Results{Kernel: &KernelResult{}, VIP: &VIPResult{ConnSeconds: 5,
		Via:      map[string]Floats{VIPConn1: {960, 980, 1000}, VIPTCP1: {9, 9.5, 10}},
		Straight: map[string]Floats{VIPConn1: {1000, 1000, 1000}, VIPTCP1: {10, 10, 10}},
	}}
	got := Report(r, "")
	for _, want := range []string{
		"## Targets (issues 6, 12 and 14)",
		"| new connections/s, 1 task through a VIP ≥ 0.95 × straight to the task | 0.98 (0.96–1.00) × | met |",
		"| TCP, 1 stream, 1 task (Gbit/s) through a VIP ≥ 0.95 × straight to the task | 0.95 (0.90–1.00) × | met |",
		"| new connections/s, 3 tasks through a VIP ≥ 0.95 × straight to the task | n/a × | not measured |",
		"## Service VIPs, 1500-byte underlay",
		"| new connections/s, 1 task | 980 (960–1000) | 1000 | 0.98 (0.96–1.00) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
