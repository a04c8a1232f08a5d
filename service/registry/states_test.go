package registry

import (
	"testing"

	"github.com/switchboard-dev/switchboard/transport"
)

// TestSessionStates: every state of a transport session or listener is a
// distinct resource state, so the API (which maps resource states) shows
// each of them.
func TestSessionStates(t *testing.T) {
	conns := map[ConnState]transport.ConnState{}
	for _, s := range []transport.ConnState{transport.StateOpen, transport.StateDraining, transport.StateClosed} {
		if prev, ok := conns[sessionState(s)]; ok {
			t.Errorf("transport states %v and %v are both %v", prev, s, sessionState(s))
		}
		conns[sessionState(s)] = s
	}
	listeners := map[ListenerState]transport.ListenerState{}
	for _, s := range []transport.ListenerState{transport.ListenerListening, transport.ListenerDraining, transport.ListenerStopped} {
		if prev, ok := listeners[boundState(s)]; ok {
			t.Errorf("transport states %v and %v are both %v", prev, s, boundState(s))
		}
		listeners[boundState(s)] = s
	}
	for _, s := range ConnStates() {
		if s.String() == "" || s.String()[0] == 'C' {
			t.Errorf("ConnState %d has no name", int(s))
		}
	}
	for _, s := range ListenerStates() {
		if s.String() == "" || s.String()[0] == 'L' {
			t.Errorf("ListenerState %d has no name", int(s))
		}
	}
}
