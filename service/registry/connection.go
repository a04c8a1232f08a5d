package registry

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// connection is an outbound connection resource or an inbound session.
//
// An outbound one owns a goroutine (keepOpen) from the moment it is listed
// until Disconnect or Shutdown: it waits for the session to end, backs off,
// and dials again. Its state moves so (guarded by Registry.mu):
//
//	Connect's first dial ok ─> Open ──session lost──> BackingOff ──due──> Connecting
//	Restore ─> Connecting ──ok──> Open                    ^                  │
//	                      └─failed──> BackingOff ─────────┴─────failed───────┘
//
// With reconnection disabled, lost and failed lead to Closed instead, which
// only Connect (tryNow) leaves.
type connection struct {
	id         string
	listenerID string                          // inbound only
	spec       *switchboardv1.ConnectionConfig // outbound only
	dial       transport.DialConfig            // outbound only: how to open a session
	created    time.Time
	listed     bool          // outbound: the first dial ended and the resource exists
	ready      chan struct{} // outbound: closed once the first dial ended
	session    *transport.Conn
	final      *transport.ConnInfo // the session's snapshot once it closed

	// Outbound only; guarded by Registry.mu.
	state      ConnState // Open (the session's own state then applies), Connecting, BackingOff or Closed
	retry      *retry
	reconnects int64
	everOpen   bool
	removing   *removal // non-nil while Disconnect runs
	// announced is closed once OutboundChanged was told of the creation;
	// Disconnect waits for it, so the outbox never hears of a removal
	// before the creation.
	announced chan struct{}
}

func (e *connection) reconnectDisabled() bool { return e.spec.GetReconnect().GetDisabled() }

func (e *connection) view() ConnectionView {
	v := ConnectionView{ID: e.id, Spec: e.spec}
	switch {
	case e.final != nil:
		v.Info = *e.final
	case e.session != nil:
		v.Info = e.session.Info()
	default: // no session opened yet
		v.Info = transport.ConnInfo{ID: e.id, Direction: transport.Outbound, State: transport.StateClosed}
	}
	v.State = sessionState(v.Info.State)
	if e.spec == nil {
		return v
	}
	if e.state != ConnOpen {
		v.State = e.state
	}
	t := e.retry
	v.LastError, v.FailedConnects, v.Reconnects = t.lastErr, t.failed, e.reconnects
	if v.State == ConnBackingOff {
		v.NextAttempt = t.next
	}
	return v
}

// settle handles an outbound session that closed a moment ago, before its
// close hook ran, so that no reader sees an open connection without an
// open session (the hook then only keeps the final snapshot). Called with
// r.mu held, before anything reads e's state.
func (r *Registry) settle(e *connection) {
	if e.spec != nil && e.state == ConnOpen && e.session.State() == transport.StateClosed {
		r.lost(e, e.session.Info())
	}
}

// setState moves an outbound connection to s and wakes its waiters.
func (e *connection) setState(s ConnState) {
	e.state = s
	e.retry.notify()
}

// opened registers an inbound session (the listener's OnOpen hook).
func (r *Registry) opened(c *transport.Conn) {
	r.mu.Lock()
	r.conns[c.ID()] = &connection{id: c.ID(), session: c, listenerID: c.ListenerID(), listed: true}
	r.mu.Unlock()
}

// closed handles a session that closed (the OnClose hook, run on the
// session's goroutine before its Done channel closes): an inbound one is
// forgotten; an outbound one keeps its final snapshot and its resource
// backs off.
func (r *Registry) closed(c *transport.Conn, info transport.ConnInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.conns[c.ID()]
	if !ok || e.session != c {
		return
	}
	if c.Direction() == transport.Inbound {
		delete(r.conns, c.ID())
		return
	}
	if e.state != ConnOpen { // already handled (settle, or when committed)
		e.final = &info
		return
	}
	r.lost(e, info)
}

// lost moves an outbound connection whose session closed to BackingOff
// (Closed when it does not reconnect). Called with r.mu held.
func (r *Registry) lost(e *connection, info transport.ConnInfo) {
	e.final = &info
	if r.closing {
		e.setState(ConnClosed)
		return
	}
	t := e.retry
	t.lastErr = fmt.Errorf("connection lost: %s", info.CloseReason)
	if info.CloseErr != nil {
		t.lastErr = fmt.Errorf("connection lost: %s: %w", info.CloseReason, info.CloseErr)
	}
	if info.CloseTime.Sub(info.OpenTime) >= stableSession {
		t.sched.reset()
	}
	if e.reconnectDisabled() {
		e.setState(ConnClosed)
		return
	}
	t.next = time.Now().Add(t.sched.next())
	e.setState(ConnBackingOff)
}

// setSession makes c the open session of e. Called with r.mu held.
func (r *Registry) setSession(e *connection, c *transport.Conn) {
	if e.everOpen {
		e.reconnects++
	}
	e.everOpen = true
	e.session, e.final = c, nil
	t := e.retry
	t.failed, t.lastErr, t.next = 0, nil, time.Time{}
	e.setState(ConnOpen)
	if c.State() == transport.StateClosed {
		// The peer hung up at once; the close hook found no session to
		// record it on.
		r.settle(e)
	}
}

// Connect creates outbound connection id with spec: it opens a session with
// cfg (whose ID and OnClose it sets), records the resource in the state
// store and starts its reconnect loop. An empty id gets a new one. A failed
// first dial or state write creates nothing.
//
// When id exists with an equal spec it returns it: one that is connecting
// is waited for; one that is backing off or closed is tried again at once
// and returned whatever the outcome, except that with reconnection disabled
// the failed redial is the error (as before reconnection existed).
func (r *Registry) Connect(ctx context.Context, id string, spec *switchboardv1.ConnectionConfig, cfg transport.DialConfig) (ConnectionView, error) {
	if id == "" {
		id = newID("c-")
	}
	for {
		r.mu.Lock()
		if r.closing {
			r.mu.Unlock()
			return ConnectionView{}, ErrShuttingDown
		}
		e, ok := r.conns[id]
		switch {
		case !ok:
			e = &connection{id: id, spec: proto.CloneOf(spec), dial: r.dialHooks(id, cfg), ready: make(chan struct{}), announced: make(chan struct{})}
			r.conns[id] = e
			r.mu.Unlock()
			return r.create(ctx, e)
		case e.spec == nil || !proto.Equal(e.spec, spec):
			r.mu.Unlock()
			return ConnectionView{}, &ResourceError{TypeConnection, id, ErrConflict}
		case !e.listed:
			ch := e.ready
			r.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return ConnectionView{}, ctx.Err()
			}
			continue
		}
		defer r.mu.Unlock()
		r.settle(e)
		if e.state == ConnOpen {
			return e.view(), nil
		}
		if err := r.tryNow(ctx, e.retry, e.state == ConnConnecting); err != nil {
			return ConnectionView{}, err
		}
		switch {
		case r.conns[id] != e:
			return ConnectionView{}, &ResourceError{TypeConnection, id, ErrNotFound}
		case e.state == ConnClosed && e.retry.lastErr != nil:
			return ConnectionView{}, e.retry.lastErr
		}
		return e.view(), nil
	}
}

// dialHooks sets the fields of a connection's transport config that the
// registry owns.
func (r *Registry) dialHooks(id string, cfg transport.DialConfig) transport.DialConfig {
	cfg.ID = id
	cfg.OnClose = r.closed
	return cfg
}

// create does the I/O of a new Connect without the lock (the first dial,
// then the state write), then commits and starts the reconnect loop.
func (r *Registry) create(ctx context.Context, e *connection) (ConnectionView, error) {
	c, err := r.dial(ctx, e.dial)
	created := time.Now()
	if err == nil {
		if err = r.putState(ctx, TypeConnection, e.id, e.spec, created); err != nil {
			c.Close()
		}
	}
	r.mu.Lock()
	if err == nil && r.closing {
		// Shutdown began meanwhile and did not see this connection.
		r.mu.Unlock()
		c.Close()
		r.forgetState(TypeConnection, e.id)
		r.mu.Lock()
		err = ErrShuttingDown
	}
	close(e.ready)
	if err != nil {
		delete(r.conns, e.id)
		r.mu.Unlock()
		return ConnectionView{}, err
	}
	e.created, e.listed = created, true
	e.retry = newRetry(reconnectBackoff(e.spec.GetReconnect()))
	r.setSession(e, c)
	r.start(e.retry, func(ctx context.Context) { r.keepOpen(ctx, e) })
	v := e.view()
	r.mu.Unlock()
	r.outboundChanged(e, false)
	return v, nil
}

// outboundChanged tells Config.OutboundChanged, a removal only after the
// creation. Called without r.mu.
func (r *Registry) outboundChanged(e *connection, removed bool) {
	r.outboundChanged1(e, removed, false)
}

// outboundChanged1 is outboundChanged; released: a removal that keeps the
// desired state (Release), told to Config.OutboundReleased.
func (r *Registry) outboundChanged1(e *connection, removed, released bool) {
	if removed {
		<-e.announced
	}
	switch f, g := r.cfg.OutboundChanged, r.cfg.OutboundReleased; {
	case released && g != nil:
		g(e.id)
	case released:
		// Nobody to tell: a worker started by OutboundChanged keeps
		// running, which is better than failing its messages.
	case f != nil:
		f(e.id, e.spec, removed)
	}
	if !removed {
		close(e.announced)
	}
}

// keepOpen is an outbound connection's reconnect loop: it waits for the
// session to end, backs off, and dials again, until ctx ends (Disconnect,
// Shutdown).
func (r *Registry) keepOpen(ctx context.Context, e *connection) {
	t := e.retry
	for ctx.Err() == nil {
		r.mu.Lock()
		state, c, next := e.state, e.session, t.next
		lastErr, failed := t.lastErr, t.failed
		r.mu.Unlock()
		switch state {
		case ConnOpen:
			// The close hook moves the state on before Done closes.
			select {
			case <-c.Done():
			case <-ctx.Done():
			}
			continue
		case ConnBackingOff:
			// Once per failed connect or lost session: each leads here once.
			r.event(Event{Kind: EventConnectionReconnecting, ConnectionID: e.id, Address: e.dial.Address,
				Err: lastErr, NextAttempt: next, Failed: failed})
			if !t.wait(ctx, next, true) {
				return
			}
		case ConnClosed: // reconnection disabled: only Connect reopens it
			if !t.wait(ctx, time.Time{}, false) {
				return
			}
		}
		r.attempt(ctx, e)
	}
}

// attempt dials once for e and commits the outcome.
func (r *Registry) attempt(ctx context.Context, e *connection) {
	t := e.retry
	r.mu.Lock()
	e.setState(ConnConnecting)
	r.mu.Unlock()
	c, err := r.dial(ctx, e.dial)
	r.mu.Lock()
	t.attempts++
	if ctx.Err() != nil || r.closing {
		// Disconnect or Shutdown ended the loop during the dial and did not
		// see this session.
		e.setState(ConnClosed)
		r.mu.Unlock()
		if c != nil {
			c.Close()
		}
		return
	}
	if err != nil {
		t.failedAt(time.Now(), err)
		state := ConnBackingOff
		if e.reconnectDisabled() {
			state = ConnClosed
		}
		e.setState(state)
		next, failed := t.next, t.failed
		r.mu.Unlock()
		if state == ConnBackingOff {
			r.log.Warn("connect failed; retrying", "connection_id", e.id, "address", e.dial.Address, "err", err,
				"retry_in", time.Until(next).Round(time.Millisecond), "failed_connects", failed)
		} else {
			r.log.Warn("connect failed", "connection_id", e.id, "address", e.dial.Address, "err", err)
		}
		return
	}
	r.setSession(e, c)
	reconnects := e.reconnects
	r.mu.Unlock()
	r.log.Info("connection open", "connection_id", e.id, "address", e.dial.Address, "reconnect_count", reconnects)
}

// Disconnect closes connection id and returns its final view. An outbound
// connection is removed: deleted from the state store (when that fails
// nothing is closed), its reconnect loop stopped and its session closed.
// An inbound one is closed.
func (r *Registry) Disconnect(ctx context.Context, id string) (ConnectionView, error) {
	r.mu.Lock()
	e, ok := r.conns[id]
	if !ok || !e.listed {
		r.mu.Unlock()
		return ConnectionView{}, &ResourceError{TypeConnection, id, ErrNotFound}
	}
	if e.spec == nil {
		c := e.session
		r.mu.Unlock()
		c.Close()
		info := c.Info()
		return ConnectionView{ID: e.id, State: sessionState(info.State), Info: info}, nil
	}
	rm := e.removing
	first := rm == nil
	if first {
		rm = &removal{done: make(chan struct{})}
		e.removing = rm
	}
	r.mu.Unlock()
	if first {
		r.remove(ctx, e, rm)
	}
	select {
	case <-rm.done:
	case <-ctx.Done():
		return ConnectionView{}, ctx.Err()
	}
	return rm.conn, rm.err
}

func (r *Registry) remove(ctx context.Context, e *connection, rm *removal) {
	if err := r.deleteStateUnless(ctx, rm.keepState, TypeConnection, e.id); err != nil {
		r.mu.Lock()
		e.removing, rm.err = nil, err
		close(rm.done)
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	if r.conns[e.id] == e {
		delete(r.conns, e.id)
	}
	e.retry.notify() // WaitOpen calls find it gone
	r.mu.Unlock()
	e.retry.stop()
	r.mu.Lock()
	c := e.session // read after the loop ended: it may just have dialled
	r.mu.Unlock()
	if c != nil {
		c.Close()
	}
	r.mu.Lock()
	v := e.view()
	v.State, v.NextAttempt = ConnClosed, time.Time{}
	rm.conn = v
	close(rm.done)
	r.mu.Unlock()
	r.outboundChanged1(e, true, rm.keepState)
}

// Conn returns the session of connection id for a Send that does not wait:
// the open session of an outbound connection, an inbound connection's
// session (which may be draining). An outbound connection without an open
// session is an error wrapping ErrReconnecting while it reconnects (see
// WaitOpen) and ErrNotOpen when it does not.
func (r *Registry) Conn(id string) (*transport.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.conns[id]
	switch {
	case !ok || !e.listed:
		return nil, &ResourceError{TypeConnection, id, ErrNotFound}
	case e.spec == nil:
		return e.session, nil
	}
	r.settle(e)
	switch {
	case e.state == ConnOpen:
		return e.session, nil
	case r.closing || e.reconnectDisabled():
		return nil, e.notOpen(ErrNotOpen, nil)
	}
	return nil, e.notOpen(ErrReconnecting, nil)
}

// notOpen is the error for e without an open session, with the last error
// and why the caller stopped waiting, if it did. Called with r.mu held.
func (e *connection) notOpen(why, waitErr error) error {
	err := why
	if last := e.retry.lastErr; last != nil {
		err = fmt.Errorf("%w (last error: %w)", why, last)
	}
	if waitErr != nil {
		err = fmt.Errorf("%w: %w", err, waitErr)
	}
	return &ResourceError{TypeConnection, e.id, err}
}

// WaitOpen returns the open session of connection id, waiting while an
// outbound connection is connecting, backing off or closed (it opens again
// only through Connect when reconnection is disabled), until ctx ends: then
// the error wraps ErrNotOpen and ctx's error. An inbound connection's
// session is returned as it is. It returns ErrNotFound for an unknown or
// removed connection, ErrShuttingDown once Shutdown began.
func (r *Registry) WaitOpen(ctx context.Context, id string) (*transport.Conn, error) {
	for {
		r.mu.Lock()
		if r.closing {
			r.mu.Unlock()
			return nil, ErrShuttingDown
		}
		e, ok := r.conns[id]
		if !ok || !e.listed {
			r.mu.Unlock()
			return nil, &ResourceError{TypeConnection, id, ErrNotFound}
		}
		c := e.session
		if e.spec == nil {
			r.mu.Unlock()
			return c, nil
		}
		r.settle(e)
		if e.state == ConnOpen {
			r.mu.Unlock()
			return c, nil
		}
		changed := e.retry.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			r.mu.Lock()
			err := e.notOpen(ErrNotOpen, ctx.Err())
			r.mu.Unlock()
			return nil, err
		}
	}
}

// Connection returns a view of connection id.
func (r *Registry) Connection(id string) (ConnectionView, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.conns[id]
	if !ok || !e.listed {
		return ConnectionView{}, &ResourceError{TypeConnection, id, ErrNotFound}
	}
	r.settle(e)
	return e.view(), nil
}

// ConnFilter selects connections; zero fields match everything.
type ConnFilter struct {
	ListenerID string
	Direction  transport.Direction
}

func (f ConnFilter) match(e *connection) bool {
	if !e.listed || f.ListenerID != "" && e.listenerID != f.ListenerID {
		return false
	}
	switch f.Direction {
	case transport.Inbound:
		return e.spec == nil
	case transport.Outbound:
		return e.spec != nil
	}
	return true
}

// Connections returns up to n connections matching f with ids greater than
// after, ordered by id, and whether more follow.
func (r *Registry) Connections(f ConnFilter, after string, n int) ([]ConnectionView, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := sortedAfter(r.conns, after, f.match)
	more := len(ids) > n
	ids = ids[:min(n, len(ids))]
	out := make([]ConnectionView, 0, len(ids))
	for _, id := range ids {
		e := r.conns[id]
		r.settle(e)
		out = append(out, e.view())
	}
	return out, more
}
