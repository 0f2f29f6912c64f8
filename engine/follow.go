package engine

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Follower follows the engine for one consumer: it calls Resync whenever
// its event stream (re)starts — after the plugin's start, or the engine's —
// and every Interval, and Handle for each event matching Filters. Resync
// and Handle are never called at once. The engine may not answer for a
// while (it starts plugins before its API): Follow retries with a backoff
// and never gives up until ctx ends.
type Follower struct {
	// Filters select the events (the API's filters); nil: none are
	// streamed, Resync only runs on its timer and at start.
	Filters map[string][]string
	// Interval between resyncs without a restart of the stream.
	Interval time.Duration
	// Resync reads whatever the consumer needs in full.
	Resync func(ctx context.Context)
	// Handle acts on one event.
	Handle func(Event)
	// Logger receives retries at debug level.
	Logger *slog.Logger
}

// Follow runs f against c until ctx ends.
func (c *Client) Follow(ctx context.Context, f Follower) {
	log := f.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var mu sync.Mutex // serialises Resync and Handle
	resync := func() {
		mu.Lock()
		defer mu.Unlock()
		if f.Resync != nil {
			f.Resync(ctx)
		}
	}
	if f.Interval > 0 {
		go func() {
			t := time.NewTicker(f.Interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					resync()
				}
			}
		}()
	}
	if f.Filters == nil {
		// No stream to follow: resync at once, then on the timer, and
		// retry the first one until the engine answers.
		f.Filters = map[string][]string{"type": {"daemon"}, "event": {"reload"}}
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.Events(ctx, f.Filters, func() {
			backoff = 100 * time.Millisecond
			resync()
		}, func(ev Event) {
			if f.Handle == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			f.Handle(ev)
		})
		if ctx.Err() != nil {
			return
		}
		log.Debug("engine event stream ended; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
