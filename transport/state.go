package transport

import "fmt"

// Direction says who opened a connection.
type Direction int

// Directions.
const (
	Inbound Direction = iota + 1
	Outbound
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "inbound"
	case Outbound:
		return "outbound"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// ConnState is a connection's lifecycle state.
type ConnState int

// Connection states.
const (
	StateOpen ConnState = iota + 1
	StateDraining
	StateClosed
)

func (s ConnState) String() string {
	switch s {
	case StateOpen:
		return "open"
	case StateDraining:
		return "draining"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("ConnState(%d)", int(s))
}

// ListenerState is a listener's lifecycle state.
type ListenerState int

// Listener states.
const (
	ListenerListening ListenerState = iota + 1
	ListenerDraining
	ListenerStopped
)

func (s ListenerState) String() string {
	switch s {
	case ListenerListening:
		return "listening"
	case ListenerDraining:
		return "draining"
	case ListenerStopped:
		return "stopped"
	}
	return fmt.Sprintf("ListenerState(%d)", int(s))
}

// CloseReason says why a connection closed.
type CloseReason int

// Close reasons.
const (
	// CloseLocal: Close was called (Disconnect, a stop without drain).
	CloseLocal CloseReason = iota + 1
	// ClosePeerClosed: the peer closed between frames.
	ClosePeerClosed
	// ClosePeerClosedMidFrame: the peer closed inside a frame; the partial
	// frame was dropped.
	ClosePeerClosedMidFrame
	// ClosePeerReset: the peer reset the connection.
	ClosePeerReset
	// CloseIdleTimeout: no frame completed within IdleTimeout.
	CloseIdleTimeout
	// CloseFrameTimeout: a started frame did not complete within
	// FrameTimeout.
	CloseFrameTimeout
	// CloseFramingError: a strict-framing violation.
	CloseFramingError
	// CloseFrameTooLarge: a frame exceeded MaxFrameBytes.
	CloseFrameTooLarge
	// CloseJunkLimit: more than MaxJunkBytes bytes outside frames in a row.
	CloseJunkLimit
	// CloseMemoryLimit: the MemoryBudget could not hold the frame.
	CloseMemoryLimit
	// CloseDrained: drained after a stop or shutdown.
	CloseDrained
	// CloseDrainTimeout: in-flight frames did not finish by the drain
	// deadline.
	CloseDrainTimeout
	// CloseAckTimeout: reset because a Send got no acknowledgement in time.
	CloseAckTimeout
	// CloseAckMismatch: reset because a Send's reply could not be trusted.
	CloseAckMismatch
	// CloseSendCancelled: reset because a Send was cancelled after writing.
	CloseSendCancelled
	// CloseSendWriteFailed: writing a Send's message failed or timed out.
	CloseSendWriteFailed
	// CloseAckWriteFailed: writing an acknowledgement failed.
	CloseAckWriteFailed
	// CloseNotStored: a frame could not be stored and the policy has no
	// negative acknowledgement.
	CloseNotStored
	// CloseReadError: another read error.
	CloseReadError
	numCloseReasons = iota
)

var closeReasonNames = [...]string{
	CloseLocal: "closed locally", ClosePeerClosed: "peer closed", ClosePeerClosedMidFrame: "peer closed mid-frame",
	ClosePeerReset: "peer reset", CloseIdleTimeout: "idle timeout", CloseFrameTimeout: "frame timeout",
	CloseFramingError: "framing error", CloseFrameTooLarge: "frame too large", CloseJunkLimit: "junk limit",
	CloseMemoryLimit: "memory limit", CloseDrained: "drained", CloseDrainTimeout: "drain timeout",
	CloseAckTimeout: "ack timeout", CloseAckMismatch: "ack mismatch", CloseSendCancelled: "send cancelled",
	CloseSendWriteFailed: "send write failed", CloseAckWriteFailed: "ack write failed",
	CloseNotStored: "not stored", CloseReadError: "read error",
}

func (r CloseReason) String() string {
	if r > 0 && int(r) < len(closeReasonNames) {
		return closeReasonNames[r]
	}
	return fmt.Sprintf("CloseReason(%d)", int(r))
}

// CloseReasons lists every reason, for callers that map them.
func CloseReasons() []CloseReason {
	out := make([]CloseReason, 0, numCloseReasons)
	for r := CloseLocal; r <= CloseReadError; r++ {
		out = append(out, r)
	}
	return out
}

// normal reports whether a close is routine (not worth an operator's
// attention in the log).
func (r CloseReason) normal() bool {
	switch r {
	case CloseLocal, ClosePeerClosed, CloseDrained, CloseIdleTimeout:
		return true
	}
	return false
}
