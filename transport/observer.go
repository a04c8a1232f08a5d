package transport

// Observer holds optional callbacks on connection events, so metrics,
// event streams and traces can watch transport without transport importing
// them. Nil fields are skipped; a new event is a new field, so observers
// never break when one is added.
//
// Callbacks run synchronously on the connection's own goroutines (its read
// loop, the goroutine calling Send or Dispatch, or the timer that ends a
// dispatched message whose acknowledgement is late), never with a lock
// held. They must be quick and must not block: a slow observer would slow a
// TCP peer.
type Observer struct {
	// ConnOpened: a connection was accepted or dialed.
	ConnOpened func(c *Conn)
	// FrameReceived: a frame arrived and, when it is stored, was appended
	// (seq is 0 when it was not stored).
	FrameReceived func(c *Conn, in *Frame, class FrameClass)
	// AckSent: an acknowledgement was written to the peer.
	AckSent func(c *Conn, code AckCode)
	// FrameAnswered: the read loop is done with a received message (class
	// FrameMessage, after its FrameReceived): the answer its policy decided
	// was written (code; AckSent came just before), or the policy writes
	// none (code 0), or writing it failed (err; the connection is closing).
	// Frames of the other classes are never answered: FrameReceived is
	// their last event.
	FrameAnswered func(c *Conn, in *Frame, code AckCode, err error)
	// Duplicate: the Sink already held a received message
	// (DuplicateError); in.Seq is not set yet. FrameReceived and
	// FrameAnswered follow as for a stored message.
	Duplicate func(c *Conn, in *Frame)
	// SendDone: a Send ended, or a dispatched message's outcome became
	// known, with a result or an error (*SendError or wrapping
	// ErrInvalidPayload).
	SendDone func(c *Conn, res SendResult, err error)
	// FramingError: a framing violation or a refused frame is about to
	// close the connection.
	FramingError func(c *Conn, err error)
	// ConnClosed: the connection closed; info is its final snapshot.
	ConnClosed func(c *Conn, info ConnInfo)
	// ConnRejected: a listener closed a new connection at once because a
	// limit was reached or its address is not allowed.
	ConnRejected func(listenerID, remoteAddr string, reason RejectReason)
}

// RejectReason says why a listener turned a connection away.
type RejectReason int

// Rejection reasons.
const (
	// RejectMaxConnections: the listener's connection limit was reached.
	RejectMaxConnections RejectReason = iota + 1
	// RejectPerSource: the limit for the peer's address was reached.
	RejectPerSource
	// RejectTotalConnections: the ConnSlots shared by the listeners were
	// all taken.
	RejectTotalConnections
	// RejectSourceDenied: the peer's address is not in AllowedSources.
	RejectSourceDenied
)

func (r RejectReason) String() string {
	switch r {
	case RejectMaxConnections:
		return "max connections"
	case RejectPerSource:
		return "max connections per source"
	case RejectTotalConnections:
		return "max connections in total"
	case RejectSourceDenied:
		return "source address not allowed"
	}
	return "RejectReason(?)"
}
