package transport

import (
	"errors"
	"fmt"
)

// Errors callers branch on. Operating-system errors are classified here, so
// callers never look at syscall errors themselves.
var (
	// ErrClosed: the connection or listener is closed (or closing).
	ErrClosed = errors.New("connection closed")
	// ErrAckTimeout: a Send's acknowledgement did not arrive in time.
	ErrAckTimeout = errors.New("no acknowledgement within the timeout")
	// ErrAckMismatch: a Send's reply acknowledges another message.
	ErrAckMismatch = errors.New("the reply acknowledges another message")
	// ErrAckUnreadable: a Send's reply is not an acknowledgement the policy
	// can read.
	ErrAckUnreadable = errors.New("the reply is not a readable acknowledgement")
	// ErrInvalidPayload: a Send payload cannot be sent as is under the
	// connection's framing or acknowledgement policy. Nothing was written.
	ErrInvalidPayload = errors.New("invalid payload")

	// ErrAddrNotBindable is wrapped by every Listen error that says the
	// address cannot be bound on this host; one of the four below says why.
	ErrAddrNotBindable = errors.New("address cannot be bound here")
	// ErrAddrInUse: the listen address is already bound.
	ErrAddrInUse = errors.New("address already in use")
	// ErrAddrNotLocal: the listen address is not an address of this host.
	ErrAddrNotLocal = errors.New("not an address of this host")
	// ErrPermission: binding the address is not permitted (a privileged
	// port, say).
	ErrPermission = errors.New("permission denied")
	// ErrUnresolvable: the host name does not resolve.
	ErrUnresolvable = errors.New("host name does not resolve")

	// ErrConnectFailed: Dial could not reach the peer (refused, unreachable,
	// unknown host, reset); the cause is wrapped too.
	ErrConnectFailed = errors.New("could not connect")
	// ErrConnectTimeout: Dial did not connect within its timeout.
	ErrConnectTimeout = errors.New("connect timed out")

	// ErrAddressForbidden is what a Control hook (an address policy) wraps
	// when it refuses an address to bind or dial; Listen and Dial errors
	// wrap it then, so callers can tell a policy refusal from an outage.
	ErrAddressForbidden = errors.New("address forbidden by policy")
)

// SendCause says why a Send ended with a *SendError.
type SendCause int

// Send failure causes.
const (
	// CauseNotOpen: the connection is not open (closed or draining).
	CauseNotOpen SendCause = iota + 1
	// CauseQueueTimeout: the call's context ended while the Send waited
	// behind others (nothing written).
	CauseQueueTimeout
	// CauseCancelled: the call was cancelled.
	CauseCancelled
	// CauseAckTimeout: no acknowledgement within the timeout or the call's
	// deadline.
	CauseAckTimeout
	// CauseWriteFailed: the write failed or did not finish in time.
	CauseWriteFailed
	// CauseConnectionLost: the connection closed while the Send waited.
	CauseConnectionLost
	// CauseAckMismatch: the reply acknowledges another message.
	CauseAckMismatch
	// CauseAckUnreadable: the reply could not be read as an acknowledgement.
	CauseAckUnreadable
)

var sendCauseNames = [...]string{
	CauseNotOpen: "connection not open", CauseQueueTimeout: "queue timeout", CauseCancelled: "cancelled",
	CauseAckTimeout: "ack timeout", CauseWriteFailed: "write failed", CauseConnectionLost: "connection lost",
	CauseAckMismatch: "ack mismatch", CauseAckUnreadable: "ack unreadable",
}

func (c SendCause) String() string {
	if c > 0 && int(c) < len(sendCauseNames) {
		return sendCauseNames[c]
	}
	return fmt.Sprintf("SendCause(%d)", int(c))
}

// SendCauses lists every cause, for callers that map them.
func SendCauses() []SendCause {
	out := make([]SendCause, 0, len(sendCauseNames)-1)
	for c := CauseNotOpen; int(c) < len(sendCauseNames); c++ {
		out = append(out, c)
	}
	return out
}

// SendError reports a Send that ended without a trustworthy
// acknowledgement.
type SendError struct {
	// Written is true when the message may have reached the peer: its outcome
	// is unknown (in doubt) and the connection was reset. When false nothing
	// was written and the Send can safely be retried.
	Written bool
	// Cause says why.
	Cause SendCause
	// ControlID is the sent message's HL7 MSH-10, when it has one.
	ControlID string
	// Ack is the reply that could not be trusted (CauseAckMismatch,
	// CauseAckUnreadable).
	Ack *PeerAck
	// Err is the underlying error: ErrAckTimeout, ErrClosed, a context
	// error, an I/O error, ErrAckMismatch, ErrAckUnreadable.
	Err error
}

func (e *SendError) Error() string {
	if e.Written {
		return fmt.Sprintf("message written, outcome unknown (in doubt): %s: %v", e.Cause, e.Err)
	}
	return fmt.Sprintf("message not sent: %s: %v", e.Cause, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }
