package registry

import (
	"fmt"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// EventListenerStarted: a listener bound its address (StartListener,
	// or a restored listener's bind, possibly after backing off).
	EventListenerStarted EventKind = iota + 1
	// EventListenerStopped: a listener stopped (StopListener, or Shutdown).
	EventListenerStopped
	// EventListenerBindFailed: a listener's address could not be bound.
	EventListenerBindFailed
	// EventConnectionReconnecting: an outbound connection lost its session
	// or failed to connect, and tries again at NextAttempt.
	EventConnectionReconnecting
)

var eventKindNames = [...]string{
	EventListenerStarted: "listener started", EventListenerStopped: "listener stopped",
	EventListenerBindFailed: "listener bind failed", EventConnectionReconnecting: "connection reconnecting",
}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventKindNames) {
		return eventKindNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// EventKinds lists every kind, for callers that map them.
func EventKinds() []EventKind {
	return []EventKind{EventListenerStarted, EventListenerStopped, EventListenerBindFailed, EventConnectionReconnecting}
}

// Event is something that happened to a resource, told to Config.Events.
// It carries ids, addresses and errors, never payloads.
type Event struct {
	Kind EventKind
	// ListenerID is set for listener events, ConnectionID for connection
	// events.
	ListenerID   string
	ConnectionID string
	// Address is the bound address (EventListenerStarted, and
	// EventListenerStopped once bound) or the configured one
	// (EventListenerBindFailed, EventConnectionReconnecting).
	Address string
	// Err says why: the bind error (EventListenerBindFailed); the last
	// error, a failed connect or the session lost
	// (EventConnectionReconnecting).
	Err error
	// NextAttempt is when the next bind or connect is tried; zero when
	// none is (a StartListener whose bind failed created nothing).
	NextAttempt time.Time
	// Failed counts the failed attempts in a row (a restored listener's
	// binds, a connection's connects); zero after a lost session.
	Failed int64
	// ShuttingDown: EventListenerStopped because the registry shut down.
	ShuttingDown bool
}

// event tells Config.Events of e. Called without r.mu.
func (r *Registry) event(e Event) {
	if f := r.cfg.Events; f != nil {
		f(e)
	}
}
