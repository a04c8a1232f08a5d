// Package registry holds Switchboard's resources: the listeners and outbound
// connections callers created, with their spec (what was asked for) and the
// transport objects that make them real (the bound listener, the current
// TCP session), plus the inbound sessions of every listener.
//
// It owns those objects' lifetimes: they outlive the calls that created
// them, and Shutdown drains and closes them. Its lock is never held across
// I/O: a call reserves the id, binds or dials without the lock, then
// commits, so a slow DNS lookup in one call stalls nothing else (accepts,
// closes, Sends, lists).
//
// The registry is gRPC-free; it keeps specs as the API's messages because
// they are the one schema for resources (the API, and later the durable
// state store and the config file). Desired state lives only in memory for
// now; a state store behind an interface plugs in at create, remove and
// New.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// Errors, wrapped in a *ResourceError naming the resource.
var (
	// ErrNotFound: no resource with that id.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the id exists with a different spec.
	ErrConflict = errors.New("exists with a different config")
	// ErrStopping: the listener is being stopped.
	ErrStopping = errors.New("is stopping")
	// ErrShuttingDown: the registry is shutting down; nothing new starts.
	ErrShuttingDown = errors.New("server is shutting down")
)

// ResourceError says which resource an error is about.
type ResourceError struct {
	Type string // "listener" or "connection"
	ID   string
	Err  error
}

func (e *ResourceError) Error() string { return fmt.Sprintf("%s %q %v", e.Type, e.ID, e.Err) }

func (e *ResourceError) Unwrap() error { return e.Err }

// Resource types, as ResourceError.Type.
const (
	TypeListener   = "listener"
	TypeConnection = "connection"
)

// Registry is the set of live resources. It is safe for concurrent use.
type Registry struct {
	cfg Config
	log *slog.Logger
	// listen and dial are transport.Listen and transport.Dial; tests
	// replace them to hold an I/O step open.
	listen func(context.Context, transport.ListenerConfig) (*transport.Listener, error)
	dial   func(context.Context, transport.DialConfig) (*transport.Conn, error)

	mu        sync.Mutex
	listeners map[string]*listener
	conns     map[string]*connection
	closing   bool
}

// listener is a listener resource. l is nil while it is being bound.
type listener struct {
	id      string
	spec    *switchboardv1.ListenerConfig
	created time.Time
	l       *transport.Listener
	ready   chan struct{} // closed once the bind finished (l set, or the entry removed)
	stopped chan struct{} // non-nil once StopListener began; closed when it ended
	final   transport.ListenerInfo
}

// connection is an outbound connection resource or an inbound session.
type connection struct {
	id         string
	spec       *switchboardv1.ConnectionConfig // outbound only
	dial       transport.DialConfig            // outbound only: how to open a session
	session    *transport.Conn                 // nil while the first dial runs
	final      *transport.ConnInfo             // the last session's snapshot once it closed
	dialing    chan struct{}                   // non-nil while a dial runs; closed when it ends
	listenerID string                          // inbound only
}

// Config configures a Registry.
type Config struct {
	// Logger receives lifecycle logs; nil discards them.
	Logger *slog.Logger
	// State keeps desired state durably; nil keeps it in memory only (it
	// is lost with the process).
	State StateStore
	// ListenerConfig and DialConfig build the transport configuration of a
	// spec, for resources the registry recreates by itself (after a
	// restart). Required with State.
	ListenerConfig func(*switchboardv1.ListenerConfig) transport.ListenerConfig
	DialConfig     func(*switchboardv1.ConnectionConfig) transport.DialConfig
	// OutboundChanged is called after an outbound connection resource is
	// created (by Connect or when restored) and after it is removed
	// (Disconnect), outside the registry's lock, so the outbox can start
	// and stop the connection's worker.
	OutboundChanged func(id string, spec *switchboardv1.ConnectionConfig, removed bool)
}

// New returns an empty registry.
func New(cfg Config) *Registry {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		cfg:       cfg,
		log:       logger,
		listen:    transport.Listen,
		dial:      transport.Dial,
		listeners: make(map[string]*listener),
		conns:     make(map[string]*connection),
	}
}

// newID returns a random id with the given prefix, for resources whose
// caller chose none.
func newID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// ListenerView is a snapshot of a listener resource.
type ListenerView struct {
	ID      string
	Spec    *switchboardv1.ListenerConfig // as given; never modify
	Created time.Time
	State   ListenerState
	Info    transport.ListenerInfo
}

// ConnectionView is a snapshot of a connection.
type ConnectionView struct {
	ID    string
	Spec  *switchboardv1.ConnectionConfig // outbound only; as given; never modify
	State ConnState
	Info  transport.ConnInfo
}

func (e *listener) view() ListenerView {
	v := ListenerView{ID: e.id, Spec: e.spec, Created: e.created, Info: e.final}
	if e.stopped == nil || !isClosed(e.stopped) {
		v.Info = e.l.Info()
	}
	v.State = boundState(v.Info.State)
	return v
}

func (e *connection) view() ConnectionView {
	v := ConnectionView{ID: e.id, Spec: e.spec}
	switch {
	case e.final != nil:
		v.Info = *e.final
	case e.session != nil:
		v.Info = e.session.Info()
	default: // first dial still running
		v.Info = transport.ConnInfo{ID: e.id, Direction: transport.Outbound, State: transport.StateClosed}
	}
	v.State = sessionState(v.Info.State)
	return v
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// StartListener creates listener id with spec and binds it with cfg (whose
// ID, OnOpen and OnClose it sets). An empty id gets a new one. It returns
// the existing listener when id exists with an equal spec.
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
		case e.stopped != nil:
			return ListenerView{}, &ResourceError{TypeListener, id, ErrStopping}
		}
		return e.view(), nil
	}
}

// bind does the I/O of StartListener without the lock, then commits.
func (r *Registry) bind(ctx context.Context, e *listener, cfg transport.ListenerConfig) (ListenerView, error) {
	cfg.ID = e.id
	cfg.OnOpen = r.opened
	cfg.OnClose = r.closed
	l, err := r.listen(ctx, cfg)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(e.ready)
	if err == nil && r.closing {
		// Shutdown began during the bind and did not see this listener.
		l.Close()
		err = ErrShuttingDown
	}
	if err != nil {
		delete(r.listeners, e.id)
		return ListenerView{}, err
	}
	e.l, e.created = l, time.Now()
	return e.view(), nil
}

// opened registers an inbound session (the listener's OnOpen hook).
func (r *Registry) opened(c *transport.Conn) {
	r.mu.Lock()
	r.conns[c.ID()] = &connection{id: c.ID(), session: c, listenerID: c.ListenerID()}
	r.mu.Unlock()
}

// closed handles a session that closed (the OnClose hook): an inbound one
// is forgotten, an outbound one keeps its final snapshot.
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
	e.final = &info
}

// StopListener stops and removes listener id, draining it until deadline,
// and returns its final view. Concurrent calls wait for the same stop.
func (r *Registry) StopListener(ctx context.Context, id string, deadline time.Time) (ListenerView, error) {
	r.mu.Lock()
	e, ok := r.listeners[id]
	if !ok || e.l == nil {
		r.mu.Unlock()
		return ListenerView{}, &ResourceError{TypeListener, id, ErrNotFound}
	}
	first := e.stopped == nil
	if first {
		e.stopped = make(chan struct{})
	}
	r.mu.Unlock()
	if first {
		e.l.Stop(deadline)
		r.mu.Lock()
		e.final = e.l.Info()
		if r.listeners[id] == e {
			delete(r.listeners, id)
		}
		close(e.stopped)
		r.mu.Unlock()
	}
	select {
	case <-e.stopped:
	case <-ctx.Done():
		return ListenerView{}, ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return e.view(), nil
}

// Listener returns a view of listener id.
func (r *Registry) Listener(id string) (ListenerView, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.listeners[id]
	if !ok || e.l == nil {
		return ListenerView{}, &ResourceError{TypeListener, id, ErrNotFound}
	}
	return e.view(), nil
}

// Listeners returns up to n listeners with ids greater than after, ordered
// by id, and whether more follow.
func (r *Registry) Listeners(after string, n int) ([]ListenerView, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := sortedAfter(r.listeners, after, func(e *listener) bool { return e.l != nil })
	more := len(ids) > n
	ids = ids[:min(n, len(ids))]
	out := make([]ListenerView, 0, len(ids))
	for _, id := range ids {
		out = append(out, r.listeners[id].view())
	}
	return out, more
}

// sortedAfter returns the keys of m greater than after whose entries pass
// keep, sorted.
func sortedAfter[E any](m map[string]E, after string, keep func(E) bool) []string {
	ids := make([]string, 0, len(m))
	for id, e := range m {
		if id > after && keep(e) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Connect creates outbound connection id with spec and opens a session with
// cfg (whose ID and OnClose it sets). An empty id gets a new one. When id
// exists with an equal spec it returns it, opening a new session first if
// the last one closed.
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
			cfg.ID, cfg.OnClose = id, r.closed
			e = &connection{id: id, spec: proto.CloneOf(spec), dial: cfg, dialing: make(chan struct{})}
			r.conns[id] = e
			r.mu.Unlock()
			return r.open(ctx, e, true)
		case e.spec == nil || !proto.Equal(e.spec, spec):
			r.mu.Unlock()
			return ConnectionView{}, &ResourceError{TypeConnection, id, ErrConflict}
		case e.dialing != nil:
			ch := e.dialing
			r.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return ConnectionView{}, ctx.Err()
			}
			continue
		case e.final != nil: // the last session closed: open a new one
			e.dialing = make(chan struct{})
			r.mu.Unlock()
			return r.open(ctx, e, false)
		}
		defer r.mu.Unlock()
		return e.view(), nil
	}
}

// open opens a session for e without the lock, then commits. A failed first
// dial removes the resource; a failed redial keeps the closed one.
func (r *Registry) open(ctx context.Context, e *connection, first bool) (ConnectionView, error) {
	c, err := r.dial(ctx, e.dial)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() { close(e.dialing); e.dialing = nil }()
	if err == nil && (r.closing || r.conns[e.id] != e) {
		// Shutdown or Disconnect ran during the dial and did not see it.
		r.mu.Unlock()
		c.Close()
		r.mu.Lock()
		err = ErrShuttingDown
		if !r.closing {
			err = &ResourceError{TypeConnection, e.id, ErrNotFound}
		}
	}
	if err != nil {
		if first && r.conns[e.id] == e {
			delete(r.conns, e.id)
		}
		return ConnectionView{}, err
	}
	e.session = c
	e.final = nil
	if c.State() == transport.StateClosed {
		// The peer hung up at once; the OnClose hook found no session to
		// record it on.
		info := c.Info()
		e.final = &info
	}
	return e.view(), nil
}

// Disconnect closes connection id and returns its final view. An outbound
// connection is removed; an inbound one is closed.
func (r *Registry) Disconnect(ctx context.Context, id string) (ConnectionView, error) {
	r.mu.Lock()
	e, ok := r.conns[id]
	if !ok || (e.session == nil && e.dialing != nil) {
		r.mu.Unlock()
		return ConnectionView{}, &ResourceError{TypeConnection, id, ErrNotFound}
	}
	if e.spec != nil {
		delete(r.conns, id)
	}
	c := e.session
	r.mu.Unlock()
	if c != nil {
		c.Close()
	}
	v := ConnectionView{ID: e.id, Spec: e.spec, State: ConnClosed}
	if c != nil {
		v.Info = c.Info()
	}
	return v, nil
}

// Conn returns the current session of connection id, for Send. It may be
// closed (an outbound connection whose peer went away).
func (r *Registry) Conn(id string) (*transport.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.conns[id]
	if !ok || e.session == nil {
		return nil, &ResourceError{TypeConnection, id, ErrNotFound}
	}
	return e.session, nil
}

// WaitOpen returns the open session of connection id, waiting (until ctx
// ends) while the connection is being opened or reconnected. It returns
// ErrNotFound for an unknown or removed connection.
//
// Until reconnection lands, a closed session is returned as it is.
func (r *Registry) WaitOpen(ctx context.Context, id string) (*transport.Conn, error) {
	for {
		r.mu.Lock()
		e, ok := r.conns[id]
		var ch chan struct{}
		var c *transport.Conn
		if ok {
			ch, c = e.dialing, e.session
		}
		r.mu.Unlock()
		switch {
		case !ok:
			return nil, &ResourceError{TypeConnection, id, ErrNotFound}
		case c != nil && ch == nil:
			return c, nil
		case ch == nil:
			return nil, &ResourceError{TypeConnection, id, ErrNotFound}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Connection returns a view of connection id.
func (r *Registry) Connection(id string) (ConnectionView, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.conns[id]
	if !ok || (e.session == nil && e.spec == nil) {
		return ConnectionView{}, &ResourceError{TypeConnection, id, ErrNotFound}
	}
	return e.view(), nil
}

// ConnFilter selects connections; zero fields match everything.
type ConnFilter struct {
	ListenerID string
	Direction  transport.Direction
}

func (f ConnFilter) match(e *connection) bool {
	if f.ListenerID != "" && e.listenerID != f.ListenerID {
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
		out = append(out, r.conns[id].view())
	}
	return out, more
}

// Shutdown refuses new resources, then stops every listener (in-flight
// frames are finished and acknowledged until deadline) and drains every
// connection (in-flight Sends finish), and waits. It is safe to call more
// than once.
func (r *Registry) Shutdown(deadline time.Time) {
	r.mu.Lock()
	r.closing = true
	var listeners []*transport.Listener
	for _, e := range r.listeners {
		if e.l != nil {
			listeners = append(listeners, e.l)
		}
	}
	var conns []*transport.Conn
	for _, e := range r.conns {
		if e.session != nil && e.spec != nil { // inbound ones drain with their listener
			conns = append(conns, e.session)
		}
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() { l.Stop(deadline) })
	}
	for _, c := range conns {
		wg.Go(func() { c.Drain(deadline) })
	}
	wg.Wait()
	r.log.Info("registry stopped", "listeners", len(listeners), "outbound_connections", len(conns))
}
