package main

import (
	"context"
	"io"
	"log/slog"
)

// The engine logs a managed plugin's output line by line: what it writes to
// stdout at level info, to stderr at level error (moby's plugin manager,
// makeLoggerStreams, dockerd 20.10 and later). So the plugin sends its
// errors to stderr and everything else to stdout: an operator grepping the
// engine's log for level=error finds weft's errors only, and each line
// still carries weft's own level (level=WARN, level=DEBUG) inside it.

// splitHandler writes records below ErrorLevel through low and the others
// through high.
type splitHandler struct {
	low, high slog.Handler
}

// newSplitHandler returns a text handler writing to stdout, below error,
// and to stderr, from error on.
func newSplitHandler(stdout, stderr io.Writer, opts *slog.HandlerOptions) slog.Handler {
	return splitHandler{low: slog.NewTextHandler(stdout, opts), high: slog.NewTextHandler(stderr, opts)}
}

func (h splitHandler) pick(l slog.Level) slog.Handler {
	if l >= slog.LevelError {
		return h.high
	}
	return h.low
}

func (h splitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.pick(l).Enabled(ctx, l)
}

func (h splitHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

func (h splitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return splitHandler{low: h.low.WithAttrs(as), high: h.high.WithAttrs(as)}
}

func (h splitHandler) WithGroup(name string) slog.Handler {
	return splitHandler{low: h.low.WithGroup(name), high: h.high.WithGroup(name)}
}
