package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Errors go to stderr, everything else to stdout, with the attributes
// and groups of derived loggers on both.
func TestSplitHandler(t *testing.T) {
	var out, errs bytes.Buffer
	log := slog.New(newSplitHandler(&out, &errs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "driver")
	log.Debug("kernel entry written", "vni", 7)
	log.Info("weft plugin serving")
	log.Warn("upstream resolver failed")
	log.WithGroup("g").Error("persist state", "err", "disk full")
	lines := func(b *bytes.Buffer) []string { return strings.Split(strings.TrimSpace(b.String()), "\n") }
	o, e := lines(&out), lines(&errs)
	if len(o) != 3 || len(e) != 1 {
		t.Fatalf("stdout %q, stderr %q", o, e)
	}
	for i, lv := range []string{"DEBUG", "INFO", "WARN"} {
		if !strings.Contains(o[i], "level="+lv) || !strings.Contains(o[i], "component=driver") {
			t.Errorf("stdout line %d: %q", i, o[i])
		}
	}
	if !strings.Contains(e[0], "level=ERROR") || !strings.Contains(e[0], "component=driver") || !strings.Contains(e[0], "g.err=\"disk full\"") {
		t.Errorf("stderr: %q", e[0])
	}
	// Below the level set: nothing.
	out.Reset()
	quiet := slog.New(newSplitHandler(&out, &errs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	quiet.Info("hidden")
	if out.Len() != 0 {
		t.Fatalf("an info line at level warn: %q", out.String())
	}
}
