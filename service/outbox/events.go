package outbox

import (
	"fmt"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// EventInDoubt: a message was written, got no trustworthy
	// acknowledgement and is held IN_DOUBT for an operator (in-doubt policy
	// HOLD); it blocks its connection's queue until ResolveMessage.
	EventInDoubt EventKind = iota + 1
	// EventFailed: a message failed for good (rejected, out of attempts,
	// failed in doubt, its connection removed, failed by an operator).
	EventFailed
)

func (k EventKind) String() string {
	switch k {
	case EventInDoubt:
		return "message in doubt"
	case EventFailed:
		return "message failed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// EventKinds lists every kind, for callers that map them.
func EventKinds() []EventKind { return []EventKind{EventInDoubt, EventFailed} }

// Event is a queued message that needs an operator's eye, told to
// Config.Events once its new state is stored. It names the message; it
// never carries its payload.
type Event struct {
	Kind         EventKind
	ConnectionID string
	MessageID    string
	// ControlID is the message's HL7 MSH-10, as stored.
	ControlID string
	// Reason says why, as the message's failure field does.
	Reason string
}

// event tells Config.Events of m's new state.
func (o *Outbox) event(kind EventKind, m *switchboardv1.Message) {
	if o.events != nil {
		o.events(Event{Kind: kind, ConnectionID: m.GetConnectionId(), MessageID: m.GetMessageId(),
			ControlID: m.GetControlId(), Reason: m.GetFailure()})
	}
}
