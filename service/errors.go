package service

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/transport"
)

// errorDomain is the ErrorInfo domain of Switchboard's errors.
const errorDomain = "switchboard.v1"

// ErrorInfo reasons clients can branch on.
const (
	// ReasonAckTimeout: the message was written and no acknowledgement came
	// in time. Its outcome is unknown (in doubt); the connection was reset.
	ReasonAckTimeout = "ACK_TIMEOUT"
	// ReasonNotSent: the call ended before the message was written; it is
	// safe to retry.
	ReasonNotSent = "NOT_SENT"
	// ReasonInDoubt: the message was written, then the call was cancelled
	// or the connection closed before an acknowledgement came. Its outcome
	// is unknown.
	ReasonInDoubt = "IN_DOUBT"
)

// Service-level sentinels, mapped to codes in toStatus.
var (
	errInvalid      = errors.New("invalid argument")
	errNotFound     = errors.New("not found")
	errExists       = errors.New("already exists")
	errShuttingDown = errors.New("server is shutting down")
)

// toStatus maps a domain error to a gRPC status error. It is the only place
// that chooses codes; the message never carries payload bytes.
func toStatus(err error) error {
	var se *transport.SendError
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return sendStatus(se, nil)
	case errors.Is(err, errInvalid), errors.Is(err, transport.ErrInvalidPayload):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, transport.ErrAddrInUse), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EADDRNOTAVAIL):
		// The address is taken, privileged, or not on this host: a fact of
		// this machine, not a passing outage.
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, errShuttingDown), errors.Is(err, journal.ErrClosed), errors.Is(err, transport.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.As(err, &dnsErr), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ECONNRESET):
		return status.Error(codes.Unavailable, err.Error())
	case errors.As(err, &ne) && ne.Timeout():
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.As(err, new(*net.OpError)):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, "internal error")
}

// sendStatus reports a Send that got no acknowledgement, with an ErrorInfo
// saying whether the message was written (in doubt) or not (safe to retry).
// meta adds identifying metadata (connection and control ids).
func sendStatus(se *transport.SendError, meta map[string]string) error {
	code, reason := codes.Unavailable, ReasonInDoubt
	switch {
	case errors.Is(se.Err, transport.ErrAckTimeout), errors.Is(se.Err, context.DeadlineExceeded):
		code, reason = codes.DeadlineExceeded, ReasonAckTimeout
	case errors.Is(se.Err, context.Canceled):
		code = codes.Canceled
	}
	if !se.Written {
		reason = ReasonNotSent
	}
	md := map[string]string{
		"written":  strconv.FormatBool(se.Written),
		"in_doubt": strconv.FormatBool(se.Written),
	}
	if se.ControlID != "" {
		md["control_id"] = se.ControlID
	}
	for k, v := range meta {
		md[k] = v
	}
	st := status.New(code, se.Error())
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: errorDomain, Metadata: md})
	if err != nil {
		return st.Err()
	}
	return withInfo.Err()
}
