package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// WaitFor calls fn every interval until it returns nil, timeout passes or
// ctx ends. The error it returns on timeout carries fn's last error, so a
// test failure says what was still wrong. An error wrapped by Permanent stops
// the wait at once.
func WaitFor(ctx context.Context, timeout, interval time.Duration, fn func() error) error {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		var stop stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s and %d attempts: %w", time.Since(start).Round(time.Millisecond), attempt, err)
		case <-tick.C:
		}
	}
}

// Hold calls fn every interval for d (and once at its end), and returns
// fn's first error, at once. It checks that something stays true for a
// span the scenario defines, where WaitFor waits for something to become
// true: use it only when the span is what is tested (a grace period to
// outlast, a partition's length), never to give something time to happen.
func Hold(ctx context.Context, d, interval time.Duration, fn func() error) error {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	start := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := fn(); err != nil {
			return fmt.Errorf("after %s of %s: %w", time.Since(start).Round(time.Millisecond), d, err)
		}
		if time.Since(start) >= d {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Permanent wraps an error so that WaitFor returns it at once instead of
// trying again.
func Permanent(err error) error { return stopError{err} }

type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }
func (e stopError) Unwrap() error { return e.err }

// TB is the part of testing.TB that SkipUnlessE2E uses.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
}

// SkipUnlessE2E skips a test unless it runs as root with WEFT_E2E=1: the lab
// changes the machine's network and starts Docker engines. Run such tests
// with -count=1: go test caches a passing result as long as the module's
// files and WEFT_E2E are unchanged, whatever the machine's state.
func SkipUnlessE2E(t TB) {
	t.Helper()
	if os.Getenv("WEFT_E2E") != "1" {
		t.Skipf("end-to-end test: set WEFT_E2E=1 (and run as root) to run it; it starts Docker engines in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skipf("end-to-end test: needs root to create namespaces and run dockerd (WEFT_E2E=1 is set, euid is %d)", os.Geteuid())
	}
}
