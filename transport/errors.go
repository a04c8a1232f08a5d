package transport

import (
	"errors"
	"fmt"
)

// Errors callers branch on.
var (
	// ErrClosed: the connection or listener is closed (or closing).
	ErrClosed = errors.New("connection closed")
	// ErrAckTimeout: a Send's acknowledgement did not arrive in time.
	ErrAckTimeout = errors.New("no acknowledgement within the timeout")
	// ErrInvalidPayload: a Send payload cannot be sent as is under the
	// connection's framing or acknowledgement policy. Nothing was written.
	ErrInvalidPayload = errors.New("invalid payload")
	// ErrAddrInUse: the listen address is already bound.
	ErrAddrInUse = errors.New("address already in use")
)

// SendError reports a Send that ended without an acknowledgement.
type SendError struct {
	// Written is true when the message may have reached the peer: its outcome
	// is unknown (in doubt). When false nothing was written and the Send can
	// safely be retried.
	Written bool
	// ControlID is the sent message's HL7 MSH-10, when it has one.
	ControlID string
	// Err is the cause: ErrAckTimeout, ErrClosed, a context error or an I/O
	// error.
	Err error
}

func (e *SendError) Error() string {
	if e.Written {
		return fmt.Sprintf("message written, outcome unknown (in doubt): %v", e.Err)
	}
	return fmt.Sprintf("message not sent: %v", e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }
