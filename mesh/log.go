package mesh

// This file owns logging helpers: memberlist's log lines as slog records,
// and warnings limited in rate.

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"
)

// logWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records at the matching level.
type logWriter struct {
	l *slog.Logger
}

func (w *logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	level := slog.LevelInfo
	for _, lv := range []struct {
		prefix string
		level  slog.Level
	}{
		{"[DEBUG] ", slog.LevelDebug},
		{"[INFO] ", slog.LevelInfo},
		{"[WARN] ", slog.LevelWarn},
		{"[ERR] ", slog.LevelError},
		{"[ERROR] ", slog.LevelError},
	} {
		if bytes.HasPrefix(line, []byte(lv.prefix)) {
			line = line[len(lv.prefix):]
			level = lv.level
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	w.l.Log(context.Background(), level, string(line), "component", "memberlist")
	return len(p), nil
}

// rateLog logs a kind of problem at most once per interval and counts what
// it held back, so garbage from the network cannot flood the log.
type rateLog struct {
	l        *slog.Logger
	interval time.Duration

	mu   sync.Mutex
	last map[string]time.Time // guarded by mu
	held map[string]int       // guarded by mu
}

func newRateLog(l *slog.Logger, interval time.Duration) *rateLog {
	return &rateLog{l: l, interval: interval, last: make(map[string]time.Time), held: make(map[string]int)}
}

// warn logs msg under kind unless one was logged within the interval.
func (r *rateLog) warn(kind, msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	if t, ok := r.last[kind]; ok && now.Sub(t) < r.interval {
		r.held[kind]++
		r.mu.Unlock()
		return
	}
	held := r.held[kind]
	r.last[kind] = now
	r.held[kind] = 0
	r.mu.Unlock()
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	r.l.Warn(msg, args...)
}
