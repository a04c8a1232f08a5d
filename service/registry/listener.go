package registry

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// listener is a listener resource. l is nil while it is first bound and
// while a restored one backs off.
type listener struct {
	id      string
	spec    *switchboardv1.ListenerConfig
	cfg     transport.ListenerConfig // with ID and hooks set
	created time.Time
	l       *transport.Listener
	listed  bool          // the first bind ended and the resource exists
	ready   chan struct{} // closed once the first bind ended (listed, or the entry removed)
	retry   *retry        // non-nil while a restored listener backs off
	stop    *removal      // non-nil while StopListener runs
	stopped bool          // StopListener finished; final is its last snapshot
	final   transport.ListenerInfo
}

// removal is a StopListener or Disconnect in progress; calls made
// meanwhile wait for its result.
type removal struct {
	// keepState: the resource is released (Release), not removed; its
	// desired state stays recorded for the instance that takes it over.
	keepState bool
	done      chan struct{}
	err       error          // set before done closes
	conn      ConnectionView // Disconnect's result
}

func (e *listener) view() ListenerView {
	v := ListenerView{ID: e.id, Spec: e.spec, Created: e.created}
	switch {
	case e.stopped:
		v.Info = e.final
	case e.l != nil:
		v.Info = e.l.Info()
	default:
		v.Info = transport.ListenerInfo{ID: e.id}
		v.State = ListenerBackingOff
		if e.retry != nil {
			v.LastError, v.NextAttempt = e.retry.lastErr, e.retry.next
		}
		return v
	}
	v.State = boundState(v.Info.State)
	return v
}

// StartListener creates listener id with spec, binds it with cfg (whose
// ID, OnOpen and OnClose it sets) and records it in the state store. An
// empty id gets a new one. It returns the existing listener when id exists
// with an equal spec, whatever its state; one that backs off is first tried
// again at once.
func (r *Registry) StartListener(ctx context.Context, id string, spec *switchboardv1.ListenerConfig, cfg transport.ListenerConfig) (ListenerView, error) {
	if id == "" {
		id = newID("l-")
	}
	for {
		r.mu.Lock()
		if r.closing {
			r.mu.Unlock()
			return ListenerView{}, ErrShuttingDown
		}
		e, ok := r.listeners[id]
		if !ok {
			e = &listener{id: id, spec: proto.CloneOf(spec), ready: make(chan struct{})}
			r.listeners[id] = e
			r.mu.Unlock()
			return r.bind(ctx, e, cfg)
		}
		r.mu.Unlock()
		// Wait for a bind in progress: a retry must get the same answer.
		select {
		case <-e.ready:
		case <-ctx.Done():
			return ListenerView{}, ctx.Err()
		}
		r.mu.Lock()
		if r.listeners[id] != e { // its bind failed; try ours
			r.mu.Unlock()
			continue
		}
		defer r.mu.Unlock()
		switch {
		case !proto.Equal(e.spec, spec):
			return ListenerView{}, &ResourceError{TypeListener, id, ErrConflict}
		case e.stop != nil:
			return ListenerView{}, &ResourceError{TypeListener, id, ErrStopping}
		case e.l == nil && e.retry != nil:
			// The caller may just have freed the address.
			if err := r.tryNow(ctx, e.retry, false); err != nil {
				return ListenerView{}, err
			}
		}
		return e.view(), nil
	}
}

// bind does the I/O of StartListener without the lock (the bind, then the
// state write), then commits. A failure of either leaves nothing behind.
func (r *Registry) bind(ctx context.Context, e *listener, cfg transport.ListenerConfig) (ListenerView, error) {
	v, err := r.bind1(ctx, e, cfg)
	if err == nil {
		r.event(Event{Kind: EventListenerStarted, ListenerID: e.id, Address: v.Info.Addr})
	}
	return v, err
}

func (r *Registry) bind1(ctx context.Context, e *listener, cfg transport.ListenerConfig) (ListenerView, error) {
	e.cfg = r.listenerHooks(e.id, cfg)
	l, err := r.listen(ctx, e.cfg)
	if err != nil {
		r.event(Event{Kind: EventListenerBindFailed, ListenerID: e.id, Address: e.cfg.Address, Err: err})
	}
	created := time.Now()
	if err == nil {
		if err = r.putState(ctx, TypeListener, e.id, e.spec, created); err != nil {
			l.Close()
		}
	}
	r.mu.Lock()
	defer close(e.ready)
	if err == nil && r.closing {
		// Shutdown began meanwhile and did not see this listener.
		r.mu.Unlock()
		l.Close()
		r.forgetState(TypeListener, e.id)
		r.mu.Lock()
		err = ErrShuttingDown
	}
	defer r.mu.Unlock()
	if err != nil {
		delete(r.listeners, e.id)
		return ListenerView{}, err
	}
	e.l, e.created, e.listed = l, created, true
	return e.view(), nil
}

// listenerHooks sets the fields of a listener's transport config that the
// registry owns.
func (r *Registry) listenerHooks(id string, cfg transport.ListenerConfig) transport.ListenerConfig {
	cfg.ID = id
	cfg.OnOpen = r.opened
	cfg.OnClose = r.closed
	return cfg
}

// keepBinding binds a restored listener, and while its address cannot be
// bound retries with backoff, until it is bound, stopped or the registry
// shuts down. It runs in a goroutine the registry owns (e.retry's).
func (r *Registry) keepBinding(ctx context.Context, e *listener) {
	t := e.retry
	for first := true; ; first = false {
		if !first {
			r.mu.Lock()
			next := t.next
			r.mu.Unlock()
			if !t.wait(ctx, next, true) {
				return
			}
		}
		l, err := r.listen(ctx, e.cfg)
		r.mu.Lock()
		t.attempts++
		t.notify()
		if first {
			e.listed = true
		}
		// The first attempt's end is told after its event, so Restore
		// returns once the event is out.
		ready := func() {
			if first {
				close(e.ready)
			}
		}
		if ctx.Err() != nil || r.closing {
			r.mu.Unlock()
			ready()
			if l != nil {
				l.Close()
			}
			return
		}
		if err != nil {
			t.failedAt(time.Now(), err)
			next, failed := t.next, t.failed
			r.mu.Unlock()
			r.log.Warn("listener cannot bind its address; retrying", "listener_id", e.id, "address", e.cfg.Address,
				"err", err, "retry_in", time.Until(next).Round(time.Millisecond), "failed_binds", failed)
			r.event(Event{Kind: EventListenerBindFailed, ListenerID: e.id, Address: e.cfg.Address, Err: err, NextAttempt: next, Failed: failed})
			ready()
			continue
		}
		e.l, e.retry = l, nil
		r.mu.Unlock()
		r.event(Event{Kind: EventListenerStarted, ListenerID: e.id, Address: l.Addr().String()})
		ready()
		if !first {
			r.log.Info("listener bound after retrying", "listener_id", e.id, "local_addr", l.Addr().String())
		}
		return
	}
}

// StopListener stops and removes listener id: it deletes it from the state
// store, stops a bind retry, then drains the listener until deadline, and
// returns its final view. Concurrent calls wait for the same stop. When the
// state cannot be deleted nothing is stopped.
func (r *Registry) StopListener(ctx context.Context, id string, deadline time.Time) (ListenerView, error) {
	r.mu.Lock()
	e, ok := r.listeners[id]
	if !ok || !e.listed {
		r.mu.Unlock()
		return ListenerView{}, &ResourceError{TypeListener, id, ErrNotFound}
	}
	st := e.stop
	first := st == nil
	if first {
		st = &removal{done: make(chan struct{})}
		e.stop = st
	}
	r.mu.Unlock()
	if first {
		r.stopListener(ctx, e, st, deadline)
	}
	select {
	case <-st.done:
	case <-ctx.Done():
		return ListenerView{}, ctx.Err()
	}
	if st.err != nil {
		return ListenerView{}, st.err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return e.view(), nil
}

func (r *Registry) stopListener(ctx context.Context, e *listener, st *removal, deadline time.Time) {
	if err := r.deleteStateUnless(ctx, st.keepState, TypeListener, e.id); err != nil {
		r.mu.Lock()
		e.stop, st.err = nil, err
		close(st.done)
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	t := e.retry
	r.mu.Unlock()
	if t != nil {
		t.stop()
	}
	r.mu.Lock()
	l := e.l // read after the retry ended: it may just have bound
	r.mu.Unlock()
	info := transport.ListenerInfo{ID: e.id, State: transport.ListenerStopped}
	if l != nil {
		l.Stop(deadline)
		info = l.Info()
	}
	r.mu.Lock()
	e.final, e.stopped = info, true
	if r.listeners[e.id] == e {
		delete(r.listeners, e.id)
	}
	close(st.done)
	r.mu.Unlock()
	r.event(Event{Kind: EventListenerStopped, ListenerID: e.id, Address: info.Addr})
}

// Listener returns a view of listener id.
func (r *Registry) Listener(id string) (ListenerView, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.listeners[id]
	if !ok || !e.listed {
		return ListenerView{}, &ResourceError{TypeListener, id, ErrNotFound}
	}
	return e.view(), nil
}

// Listeners returns up to n listeners with ids greater than after, ordered
// by id, and whether more follow.
func (r *Registry) Listeners(after string, n int) ([]ListenerView, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := sortedAfter(r.listeners, after, func(e *listener) bool { return e.listed })
	more := len(ids) > n
	ids = ids[:min(n, len(ids))]
	out := make([]ListenerView, 0, len(ids))
	for _, id := range ids {
		out = append(out, r.listeners[id].view())
	}
	return out, more
}
