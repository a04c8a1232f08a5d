package registry

import (
	"fmt"

	"github.com/switchboard-dev/switchboard/transport"
)

// ListenerState is a listener resource's state. A resource outlives its
// sockets, so it has states transport's listener has not: BackingOff, for a
// restored listener whose address could not be bound yet.
type ListenerState int

// Listener states.
const (
	// ListenerListening: bound and accepting.
	ListenerListening ListenerState = iota + 1
	// ListenerDraining: stopped accepting, finishing in-flight frames.
	ListenerDraining
	// ListenerStopped: stopped; its connections are closed.
	ListenerStopped
	// ListenerBackingOff: its address could not be bound (after a restart);
	// the bind is retried at NextAttempt.
	ListenerBackingOff
)

var listenerStateNames = [...]string{
	ListenerListening: "listening", ListenerDraining: "draining", ListenerStopped: "stopped", ListenerBackingOff: "backing off",
}

func (s ListenerState) String() string {
	if s > 0 && int(s) < len(listenerStateNames) {
		return listenerStateNames[s]
	}
	return fmt.Sprintf("ListenerState(%d)", int(s))
}

// ListenerStates lists every listener state, for callers that map them.
func ListenerStates() []ListenerState {
	return []ListenerState{ListenerListening, ListenerDraining, ListenerStopped, ListenerBackingOff}
}

// ConnState is a connection's state: an inbound connection's is its
// session's; an outbound connection resource also has the states of
// reconnection, when it has no open session.
type ConnState int

// Connection states.
const (
	// ConnOpen: open and usable.
	ConnOpen ConnState = iota + 1
	// ConnDraining: finishing an in-flight frame, then closing.
	ConnDraining
	// ConnClosed: closed. An outbound connection stays closed only when
	// its reconnection is disabled (until Connect is called again) or the
	// registry shut down.
	ConnClosed
	// ConnConnecting: outbound, opening a TCP connection.
	ConnConnecting
	// ConnBackingOff: outbound, the last connect failed or the session was
	// lost; the next connect is at NextAttempt.
	ConnBackingOff
)

var connStateNames = [...]string{
	ConnOpen: "open", ConnDraining: "draining", ConnClosed: "closed", ConnConnecting: "connecting", ConnBackingOff: "backing off",
}

func (s ConnState) String() string {
	if s > 0 && int(s) < len(connStateNames) {
		return connStateNames[s]
	}
	return fmt.Sprintf("ConnState(%d)", int(s))
}

// ConnStates lists every connection state, for callers that map them.
func ConnStates() []ConnState {
	return []ConnState{ConnOpen, ConnDraining, ConnClosed, ConnConnecting, ConnBackingOff}
}

// sessionState is the state of a resource whose session (or transport
// listener) is up: transport's own.
func sessionState(s transport.ConnState) ConnState {
	switch s {
	case transport.StateOpen:
		return ConnOpen
	case transport.StateDraining:
		return ConnDraining
	}
	return ConnClosed
}

func boundState(s transport.ListenerState) ListenerState {
	switch s {
	case transport.ListenerListening:
		return ListenerListening
	case transport.ListenerDraining:
		return ListenerDraining
	}
	return ListenerStopped
}
