// Package registry holds Switchboard's resources: the listeners and outbound
// connections callers created, with their spec (what was asked for) and the
// transport objects that make them real (the bound listener, the current
// TCP session), plus the inbound sessions of every listener.
//
// It owns those objects' lifetimes: they outlive the calls that created
// them, and Shutdown drains and closes them. A resource is desired state:
// it is recorded in the StateStore before the call that created it returns,
// and Restore brings it back after a restart. An outbound connection keeps
// a session open by itself (reconnecting with backoff, connection.go), and
// a restored listener whose address cannot be bound keeps trying
// (listener.go); the goroutines that do it belong to the registry, and
// Disconnect, StopListener and Shutdown stop them and wait.
//
// Its lock is never held across I/O: a call reserves the id, binds or dials
// and records the resource without the lock, then commits, so a slow DNS
// lookup or state write in one call stalls nothing else (accepts, closes,
// Sends, lists).
//
// The registry is gRPC-free; it keeps specs as the API's messages because
// they are the one schema for resources (the API, the state store and
// later the config file).
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
	// ErrNotOpen: the connection has no open session and gets none by
	// itself (reconnection is disabled), or none opened before the caller
	// stopped waiting (WaitOpen).
	ErrNotOpen = errors.New("is not open")
	// ErrReconnecting: the outbound connection has no open session now but
	// is connecting or backing off; WaitOpen waits for it.
	ErrReconnecting = errors.New("is not open (reconnecting)")
)

// ResourceError says which resource an error is about.
type ResourceError struct {
	Type string // "listener" or "connection"
	ID   string
	Err  error
}

func (e *ResourceError) Error() string { return fmt.Sprintf("%s %q %v", e.Type, e.ID, e.Err) }

func (e *ResourceError) Unwrap() error { return e.Err }

// Resource types, as ResourceError.Type and in the StateStore.
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
	// rebind is the schedule of a restored listener's bind retries; tests
	// shorten it.
	rebind backoff
	// restoreWait bounds how long Restore waits for the first binds and
	// connects.
	restoreWait time.Duration

	mu        sync.Mutex
	listeners map[string]*listener
	conns     map[string]*connection
	closing   bool
	// loops counts the goroutines the registry owns (reconnect loops,
	// bind retries); Shutdown waits for them.
	loops sync.WaitGroup
}

// Config configures a Registry.
type Config struct {
	// Logger receives lifecycle logs; nil discards them.
	Logger *slog.Logger
	// State keeps desired state durably; nil keeps it in memory only (it
	// is lost with the process).
	State StateStore
	// ListenerConfig and DialConfig build the transport configuration of a
	// spec, for resources the registry recreates by itself (Restore).
	// Required with State.
	ListenerConfig func(*switchboardv1.ListenerConfig) transport.ListenerConfig
	DialConfig     func(*switchboardv1.ConnectionConfig) transport.DialConfig
	// OutboundChanged is called after an outbound connection resource is
	// created (by Connect or Restore) and after it is removed
	// (Disconnect), outside the registry's lock, so the outbox can start
	// and stop the connection's worker. For one connection the removal
	// always comes after the creation; Disconnect returns after both.
	OutboundChanged func(id string, spec *switchboardv1.ConnectionConfig, removed bool)
	// OutboundReleased is called instead of OutboundChanged's removal when
	// the connection is released (Release: it stops here, its desired
	// state and queued messages stay for the instance that takes it over),
	// so the outbox stops its worker without failing what is queued.
	OutboundReleased func(id string)
	// Events, when set, is told of listeners started, stopped and failing
	// to bind and of outbound connections reconnecting (events.go), for
	// event streams and consoles. It is called outside the registry's lock,
	// on the goroutine that did the work (a call's, a retry loop's), at
	// once after it; it must be quick, must not block and must not call the
	// Registry.
	Events func(Event)
}

// New returns an empty registry.
func New(cfg Config) *Registry {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		cfg:         cfg,
		log:         logger,
		listen:      transport.Listen,
		dial:        transport.Dial,
		rebind:      newBackoff(defaultRetryDelay, defaultMaxRetryDelay),
		restoreWait: restoreWait,
		listeners:   make(map[string]*listener),
		conns:       make(map[string]*connection),
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
	// Info is the bound listener's; only ID is set while it backs off.
	Info transport.ListenerInfo
	// LastError and NextAttempt: why the last bind failed and when the
	// next is due, while BackingOff.
	LastError   error
	NextAttempt time.Time
}

// ConnectionView is a snapshot of a connection.
type ConnectionView struct {
	ID    string
	Spec  *switchboardv1.ConnectionConfig // outbound only; as given; never modify
	State ConnState
	// Info is the current session's, or the last one's once it closed;
	// only ID, Direction and State are set before the first one opened.
	Info transport.ConnInfo
	// Outbound only. LastError: why the last connect failed or the last
	// session ended, until a session opens. NextAttempt: when the next
	// connect is due, while BackingOff. FailedConnects: failed connects
	// since a session was last open. Reconnects: sessions opened again
	// after one was lost.
	LastError      error
	NextAttempt    time.Time
	FailedConnects int64
	Reconnects     int64
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
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

// Shutdown refuses new resources, stops every reconnect loop and bind
// retry, then stops every listener (in-flight frames are finished and
// acknowledged until deadline) and drains every connection (in-flight
// Sends finish), and waits. It is safe to call more than once.
func (r *Registry) Shutdown(deadline time.Time) {
	r.mu.Lock()
	r.closing = true
	var listeners []*transport.Listener
	var listenerIDs []string
	var retries []*retry
	for _, e := range r.listeners {
		if e.l != nil {
			listeners = append(listeners, e.l)
			if e.stop == nil { // StopListener tells of its own
				listenerIDs = append(listenerIDs, e.id)
			} else {
				listenerIDs = append(listenerIDs, "")
			}
		}
		if e.retry != nil {
			retries = append(retries, e.retry)
		}
	}
	var conns []*transport.Conn
	for _, e := range r.conns {
		if e.spec == nil { // inbound ones drain with their listener
			continue
		}
		if e.retry != nil {
			retries = append(retries, e.retry)
		}
		if e.session != nil {
			conns = append(conns, e.session)
		}
	}
	r.mu.Unlock()
	for _, t := range retries {
		t.cancel()
	}
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() { l.Stop(deadline) })
	}
	for _, c := range conns {
		wg.Go(func() { c.Drain(deadline) })
	}
	wg.Wait()
	for i, l := range listeners {
		if listenerIDs[i] != "" {
			r.event(Event{Kind: EventListenerStopped, ListenerID: listenerIDs[i], Address: l.Addr().String(), ShuttingDown: true})
		}
	}
	r.loops.Wait()
	r.mu.Lock()
	for _, e := range r.conns {
		if e.spec != nil && e.listed && e.state != ConnClosed {
			e.setState(ConnClosed) // no loop brings it back any more
		}
	}
	r.mu.Unlock()
	r.log.Info("registry stopped", "listeners", len(listeners), "outbound_connections", len(conns))
}

// retry is what a resource that keeps trying to come up by itself shows
// and uses (a restored listener rebinding, an outbound connection
// reconnecting). Its fields are guarded by Registry.mu; the goroutine that
// makes the attempts belongs to the registry.
type retry struct {
	sched    backoff
	lastErr  error     // why the last attempt failed (or the session ended)
	next     time.Time // when the next attempt is due, while backing off
	failed   int64     // failed attempts since the resource was last up
	attempts uint64    // attempts finished
	changed  chan struct{}
	kick     chan struct{} // one buffered: attempt now
	cancel   context.CancelFunc
	done     chan struct{} // closed once the goroutine returned
}

func newRetry(sched backoff) *retry {
	return &retry{sched: sched, changed: make(chan struct{}), kick: make(chan struct{}, 1), cancel: func() {}}
}

// notify wakes everyone waiting for a change (WaitOpen, tryNow).
func (t *retry) notify() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// failedAt records a failed attempt and schedules the next one.
func (t *retry) failedAt(now time.Time, err error) {
	t.failed++
	t.lastErr = err
	t.next = now.Add(t.sched.next())
}

// start runs fn in a goroutine the registry owns, until t.cancel. Called
// with r.mu held, so Shutdown (which sets closing under it) waits for it.
func (r *Registry) start(t *retry, fn func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel, t.done = cancel, make(chan struct{})
	r.loops.Add(1)
	go func() {
		defer r.loops.Done()
		defer close(t.done)
		defer cancel()
		fn(ctx)
	}()
}

// stop ends t's goroutine and waits for it. Called without r.mu.
func (t *retry) stop() {
	t.cancel()
	if t.done != nil {
		<-t.done
	}
}

// wait sleeps until the next attempt is due (when due; otherwise only an
// asked-for attempt ends it), an attempt is asked for, or ctx ends; it
// reports whether to go on.
func (t *retry) wait(ctx context.Context, next time.Time, due bool) bool {
	var timeout <-chan time.Time
	if due {
		timer := time.NewTimer(time.Until(next))
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case <-timeout:
	case <-t.kick:
	case <-ctx.Done():
		return false
	}
	return ctx.Err() == nil
}

// tryNow asks t's goroutine for an attempt at once and waits until one has
// ended, the goroutine ended, or ctx ends. Called and returns with r.mu
// held. When an attempt is already running it waits for that one.
func (r *Registry) tryNow(ctx context.Context, t *retry, running bool) error {
	n := t.attempts
	if !running {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
	for t.attempts == n {
		changed, done := t.changed, t.done
		r.mu.Unlock()
		select {
		case <-changed:
		case <-done:
		case <-ctx.Done():
		}
		r.mu.Lock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if done != nil && isClosed(done) {
			return nil
		}
	}
	return nil
}

// NewID returns a random resource id with the given prefix ("l-", "c-"),
// as the registry makes for a resource created without one; in a cluster
// the id is chosen before the lease is taken.
func NewID(prefix string) string { return newID(prefix) }
