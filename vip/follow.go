package vip

import (
	"context"
	"time"

	"github.com/weftnet/weft/engine"
)

// events are the engine events the balancer follows: containers that
// start or die, attachments to networks, and (on managers) services and
// nodes that change (a node drained stops its tasks).
var events = map[string][]string{
	"type":  {"container", "network", "service", "node"},
	"event": {"start", "die", "connect", "disconnect", "create", "update", "remove"},
}

// followUps are when the engine is read again after a service changed:
// the orchestrator acts on the change a moment after the event.
var followUps = []time.Duration{250 * time.Millisecond, time.Second, 2500 * time.Millisecond}

// followEngine reads the engine for Run until ctx ends: in full when its
// event stream (re)starts, every Resync and after events that may change
// services or tasks (coalesced), and one container at a time as it
// starts or is attached.
func (b *Balancer) followEngine(ctx context.Context) {
	kick := make(chan struct{}, 1)
	kickNow := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
				b.readFull(ctx)
			}
		}
	}()
	b.cfg.Engine.Follow(ctx, engine.Follower{
		Filters:  events,
		Interval: b.cfg.Resync,
		Logger:   b.log,
		Resync:   b.readFull,
		Handle: func(ev engine.Event) {
			attrs := ev.Actor.Attributes
			switch {
			case ev.Type == "network" && (ev.Action == "connect" || ev.Action == "disconnect"):
				if b.reader.isWeft(ev.Actor.ID, attrs["type"]) {
					b.watchSandbox(ctx, attrs["container"])
					kickNow()
				}
			case ev.Type == "container" && ev.Action == "start":
				b.watchSandbox(ctx, ev.Actor.ID)
			case ev.Type == "container" && ev.Action == "die":
				b.updates.Publish(update{gone: ev.Actor.ID})
				kickNow()
			case ev.Type == "service" || ev.Type == "node":
				kickNow()
				for _, d := range followUps {
					time.AfterFunc(d, kickNow)
				}
			}
		},
	})
}

// readFull reads the engine in full and hands the view to Run.
func (b *Balancer) readFull(ctx context.Context) {
	v, err := b.reader.full(ctx)
	if err != nil {
		b.log.Debug("engine not read", "err", err)
		return
	}
	if v == nil {
		return
	}
	b.updates.Publish(update{view: v})
	b.followKeys(ctx, b.reader.keysDir())
}

// followKeys makes sure the sandbox keys' directory dir is watched: once
// it is known, and again when it moves (the engine restarted with another
// process ID) or a watch failed.
func (b *Balancer) followKeys(ctx context.Context, dir string) {
	b.keysMu.Lock()
	defer b.keysMu.Unlock()
	if b.keysDir == dir {
		return
	}
	if b.stopKeys != nil {
		b.stopKeys()
	}
	wctx, stop := context.WithCancel(ctx)
	b.keysDir, b.stopKeys = dir, stop
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		err := b.watchKeys(wctx, dir)
		if err != nil {
			b.log.Debug("sandbox keys not watched; containers are found by their start event only", "dir", dir, "err", err)
		}
		b.keysMu.Lock()
		if b.keysDir == dir {
			b.keysDir = "" // watched again after the next read
		}
		b.keysMu.Unlock()
	}()
}

// watchSandbox finds a container's sandbox and, once the engine has
// mounted its namespace, hands it to Run, from a goroutine of its own: a
// container being started gets its namespace a moment after it is
// attached, and its process right after that.
func (b *Balancer) watchSandbox(ctx context.Context, id string) {
	if id == "" {
		return
	}
	b.watchMu.Lock()
	if b.watching[id] {
		b.watchMu.Unlock()
		return
	}
	b.watching[id] = true
	b.watchMu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer func() {
			b.watchMu.Lock()
			delete(b.watching, id)
			b.watchMu.Unlock()
		}()
		deadline := time.Now().Add(b.cfg.MountWait)
		for pause := time.Millisecond; ; pause = min(2*pause, 20*time.Millisecond) {
			sb, ok, err := b.reader.sandbox(ctx, id)
			if err != nil {
				b.log.Debug("inspect container", "container", engine.ShortID(id), "err", err)
				return
			}
			if ok && (len(sb.Networks) == 0 || b.waitMounted(ctx, sb.Path, deadline)) {
				b.updates.Publish(update{sandbox: &sb, seen: time.Now()})
				return
			}
			// Not running yet (attached, being started): ask again.
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			if time.Now().After(deadline) {
				return
			}
		}
	}()
}

// waitMounted polls until a namespace is mounted at path, the deadline
// passes or ctx ends, and reports whether it is.
func (b *Balancer) waitMounted(ctx context.Context, path string, deadline time.Time) bool {
	for {
		if b.cfg.Kernel.Mounted(path) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}
