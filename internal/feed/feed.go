// Package feed hands a producer's events to each of its consumers through a
// queue of the consumer's own, as networkdb's Watch does: the producer never
// blocks and never drops an event, and no consumer polls the producer or
// calls back into it. A consumer waits on Ready, then Takes everything
// queued in one batch, which lets it coalesce work (rebuild a zone once for
// a hundred changes).
//
// Ordering: a subscription sees events in the order they were published.
// Producers that hand a new subscriber a snapshot (Subscribe's initial
// events) call Subscribe and Publish under the same lock of theirs, so no
// event falls between the snapshot and the stream.
package feed

import "sync"

// Feed fans events out to its subscriptions. The zero value is ready to
// use; it is safe for concurrent use.
type Feed[T any] struct {
	// mu guards subs.
	mu   sync.Mutex
	subs map[*Sub[T]]struct{}
}

// Sub is one consumer's queue.
type Sub[T any] struct {
	feed  *Feed[T]
	ready chan struct{} // capacity 1: something is queued

	// mu guards queue and closed.
	mu     sync.Mutex
	queue  []T
	closed bool
}

// Subscribe returns a new subscription whose queue starts with initial.
func (f *Feed[T]) Subscribe(initial ...T) *Sub[T] {
	s := &Sub[T]{feed: f, ready: make(chan struct{}, 1)}
	s.push(initial)
	f.mu.Lock()
	if f.subs == nil {
		f.subs = map[*Sub[T]]struct{}{}
	}
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	return s
}

// Publish queues evs on every subscription. It never blocks on a consumer.
func (f *Feed[T]) Publish(evs ...T) {
	if len(evs) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		s.push(evs)
	}
}

// Len returns the number of subscriptions.
func (f *Feed[T]) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (s *Sub[T]) push(evs []T) {
	if len(evs) == 0 {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, evs...)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready receives a value, coalesced, whenever events are queued.
func (s *Sub[T]) Ready() <-chan struct{} { return s.ready }

// Take returns every queued event, oldest first, and empties the queue.
func (s *Sub[T]) Take() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// Close ends the subscription: nothing more is queued and what is queued
// is dropped. It is safe to call more than once.
func (s *Sub[T]) Close() {
	s.feed.mu.Lock()
	delete(s.feed.subs, s)
	s.feed.mu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.queue = nil
	s.mu.Unlock()
}
