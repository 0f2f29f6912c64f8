package feed

import (
	"sync"
	"testing"
	"time"
)

func TestOrderAndSnapshot(t *testing.T) {
	var f Feed[int]
	a := f.Subscribe(1, 2)
	f.Publish(3)
	b := f.Subscribe()
	f.Publish(4, 5)
	if got := a.Take(); !equal(got, 1, 2, 3, 4, 5) {
		t.Errorf("a took %v", got)
	}
	if got := b.Take(); !equal(got, 4, 5) {
		t.Errorf("b took %v", got)
	}
	if got := a.Take(); len(got) != 0 {
		t.Errorf("second take %v, want nothing", got)
	}
}

func TestReadySignalsAndCoalesces(t *testing.T) {
	var f Feed[string]
	s := f.Subscribe()
	select {
	case <-s.Ready():
		t.Fatal("ready with nothing queued")
	default:
	}
	f.Publish("x")
	f.Publish("y")
	select {
	case <-s.Ready():
	case <-time.After(time.Second):
		t.Fatal("not ready after publish")
	}
	if got := s.Take(); len(got) != 2 {
		t.Errorf("took %v", got)
	}
}

func TestClose(t *testing.T) {
	var f Feed[int]
	s := f.Subscribe(1)
	s.Close()
	s.Close()
	f.Publish(2)
	if got := s.Take(); len(got) != 0 {
		t.Errorf("closed subscription took %v", got)
	}
	if f.Len() != 0 {
		t.Errorf("feed still has %d subscriptions", f.Len())
	}
}

// A slow consumer never blocks the producer and loses nothing.
func TestNeverBlocksNorDrops(t *testing.T) {
	var f Feed[int]
	s := f.Subscribe()
	const n = 100000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			f.Publish(i)
		}
	}()
	got := 0
	next := 0
	for got < n {
		<-s.Ready()
		for _, v := range s.Take() {
			if v != next {
				t.Fatalf("event %d out of order, want %d", v, next)
			}
			next++
			got++
		}
	}
	wg.Wait()
}

func equal(got []int, want ...int) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
