package service

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// This file is the one place that chooses status codes and error details.
// Messages never carry payload bytes; the cause of an INTERNAL error is
// logged here, before the generic answer goes out.

// ErrorDomain is the google.rpc.ErrorInfo domain of Switchboard's errors.
const ErrorDomain = "github.com/switchboard-dev/switchboard"

// errInvalid marks request values the handlers reject themselves (a page
// token they did not issue); field names the field.
type errInvalid struct {
	field, msg string
}

func (e errInvalid) Error() string { return e.field + ": " + e.msg }

// reasonName is the ErrorInfo reason for r: its enum value name without the
// prefix.
func reasonName(r switchboardv1.ErrorReason) string {
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}

// statusOf builds a status with an ErrorInfo and any further details.
func statusOf(code codes.Code, msg string, reason switchboardv1.ErrorReason, meta map[string]string, details ...protoadapt.MessageV1) error {
	st := status.New(code, text(msg))
	all := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reasonName(reason), Domain: ErrorDomain, Metadata: meta}}, details...)
	withDetails, err := st.WithDetails(all...)
	if err != nil {
		// Only details that cannot be marshalled fail here, and every
		// string in them went through text; keep the code and message.
		return st.Err()
	}
	return withDetails.Err()
}

// toStatus maps a domain error to a gRPC status error.
func (s *Service) toStatus(ctx context.Context, err error) error {
	var (
		se   *transport.SendError
		re   *registry.ResourceError
		nr   *journal.NotRetainedError
		inv  errInvalid
		slow *observe.TooSlowError
		bh   *beyondHeadError
		na   *notAwaitingError
		pe   *profileError
	)
	resource := func() protoadapt.MessageV1 {
		return &errdetails.ResourceInfo{ResourceType: re.Type, ResourceName: re.ID}
	}
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return sendStatus(se, "")
	case errors.As(err, &inv):
		return statusOf(codes.InvalidArgument, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, nil,
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: inv.field, Description: inv.msg}}})
	case errors.Is(err, transport.ErrInvalidConfig), errors.Is(err, transport.ErrInvalidPayload):
		field := "config"
		if errors.Is(err, transport.ErrInvalidPayload) {
			field = "payload"
		}
		return statusOf(codes.InvalidArgument, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, nil,
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: text(err.Error())}}})
	case errors.As(err, &re) && errors.Is(err, registry.ErrNotFound):
		return statusOf(codes.NotFound, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_NOT_FOUND, nil, resource())
	case errors.As(err, &re) && errors.Is(err, registry.ErrConflict):
		return statusOf(codes.AlreadyExists, err.Error()+"; remove it first", switchboardv1.ErrorReason_ERROR_REASON_CONFIG_CONFLICT, nil, resource())
	case errors.As(err, &re) && re.Type == registry.TypeConnection &&
		(errors.Is(err, registry.ErrNotOpen) || errors.Is(err, registry.ErrReconnecting)):
		return notSentStatus(err, re.ID)
	case errors.As(err, &re) && errors.Is(err, registry.ErrStopping):
		return statusOf(codes.FailedPrecondition, err.Error()+"; retry once StopListener returns", switchboardv1.ErrorReason_ERROR_REASON_STOPPING, nil, resource())
	case errors.As(err, &re) && errors.Is(err, outbox.ErrNotInDoubt):
		return statusOf(codes.FailedPrecondition, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_NOT_IN_DOUBT, nil, resource())
	case errors.Is(err, ErrAddressForbidden):
		// Before the bind and connect cases: a refusal by policy is not an
		// outage, and retrying will not help.
		return statusOf(codes.PermissionDenied, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_ADDRESS_FORBIDDEN, nil)
	case errors.As(err, &pe):
		return statusOf(codes.FailedPrecondition, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_TLS_PROFILE_UNAVAILABLE,
			map[string]string{"profile": text(pe.name)})
	case errors.Is(err, transport.ErrAddrNotBindable):
		// In use, not on this host, privileged, or a name that does not
		// resolve: a fact of this machine, one rule for all of them.
		return statusOf(codes.FailedPrecondition, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_ADDRESS_NOT_BINDABLE,
			map[string]string{"cause": bindCause(err)})
	case errors.Is(err, transport.ErrConnectTimeout):
		return statusOf(codes.DeadlineExceeded, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_CONNECT_FAILED, nil)
	case errors.Is(err, transport.ErrConnectFailed):
		return statusOf(codes.Unavailable, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_CONNECT_FAILED, nil)
	case errors.Is(err, registry.ErrShuttingDown):
		return statusOf(codes.Unavailable, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN, nil)
	case errors.Is(err, journal.ErrFenced):
		return statusOf(codes.Unavailable, err.Error()+"; retry: another instance has taken it over", switchboardv1.ErrorReason_ERROR_REASON_OWNER_MOVING, nil)
	case errors.Is(err, journal.ErrClosed), errors.Is(err, journal.ErrUnavailable):
		return statusOf(codes.Unavailable, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_JOURNAL_UNAVAILABLE, nil)
	case errors.As(err, &nr):
		first := strconv.FormatUint(nr.First, 10)
		return statusOf(codes.OutOfRange, fmt.Sprintf("sequence %d is no longer retained; the oldest retained is %s (start_sequence %s)", nr.From, first, first),
			switchboardv1.ErrorReason_ERROR_REASON_NOT_RETAINED, map[string]string{"first_sequence": first})
	case errors.As(err, &slow):
		last := strconv.FormatUint(slow.LastSequence, 10)
		return statusOf(codes.ResourceExhausted, fmt.Sprintf("watcher too slow: %d events were waiting to be sent, so the stream was cut off after sequence %s; "+
			"watch again (replay_recent returns the recent events the server still holds)", slow.Buffer, last),
			switchboardv1.ErrorReason_ERROR_REASON_WATCHER_TOO_SLOW, map[string]string{"last_sequence": last})
	case errors.As(err, &bh):
		last := strconv.FormatUint(bh.last, 10)
		return statusOf(codes.OutOfRange, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_BEYOND_HEAD,
			map[string]string{"last_sequence": last})
	case errors.As(err, &na):
		return statusOf(codes.FailedPrecondition, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_NOT_AWAITING_ANSWER, nil)
	case errors.Is(err, delivery.ErrNotFound), errors.Is(err, delivery.ErrDeleted):
		return statusOf(codes.NotFound, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_NOT_FOUND, nil,
			&errdetails.ResourceInfo{ResourceType: "consumer", ResourceName: consumerName(err)})
	case errors.Is(err, delivery.ErrConflict):
		return statusOf(codes.AlreadyExists, err.Error()+"; repeat its filters and consumer_config, leave them unset, or delete it first",
			switchboardv1.ErrorReason_ERROR_REASON_CONFIG_CONFLICT, nil,
			&errdetails.ResourceInfo{ResourceType: "consumer", ResourceName: consumerName(err)})
	case errors.Is(err, delivery.ErrNotDelivered):
		return statusOf(codes.FailedPrecondition, err.Error()+"; nothing of this call was applied",
			switchboardv1.ErrorReason_ERROR_REASON_NOT_DELIVERED, nil)
	case errors.Is(err, delivery.ErrClosed):
		return shuttingDownStatus()
	case errors.Is(err, delivery.ErrInvalid):
		return statusOf(codes.InvalidArgument, err.Error(), switchboardv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, nil)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	s.log.ErrorContext(ctx, "internal error", "err", err)
	return statusOf(codes.Internal, "internal error", switchboardv1.ErrorReason_ERROR_REASON_INTERNAL, nil)
}

func bindCause(err error) string {
	switch {
	case errors.Is(err, transport.ErrAddrInUse):
		return "in_use"
	case errors.Is(err, transport.ErrAddrNotLocal):
		return "not_local"
	case errors.Is(err, transport.ErrPermission):
		return "permission"
	case errors.Is(err, transport.ErrUnresolvable):
		return "unresolvable"
	}
	return "other"
}

// sendStatus reports a Send that ended without a trustworthy answer: reason
// IN_DOUBT when its message was written, NOT_SENT when not, with the code
// the cause calls for and a SendFailure detail.
func sendStatus(se *transport.SendError, connID string) error {
	reason := switchboardv1.ErrorReason_ERROR_REASON_NOT_SENT
	if se.Written {
		reason = switchboardv1.ErrorReason_ERROR_REASON_IN_DOUBT
	}
	var code codes.Code
	switch se.Cause {
	case transport.CauseQueueTimeout, transport.CauseAckTimeout:
		code = codes.DeadlineExceeded
	case transport.CauseCancelled:
		code = codes.Canceled
	case transport.CauseAckMismatch, transport.CauseAckUnreadable:
		code = codes.Unknown // the outcome is what is unknown
	default: // not open, write failed, connection lost
		code = codes.Unavailable
	}
	meta := map[string]string{
		"written":       strconv.FormatBool(se.Written),
		"cause":         strings.TrimPrefix(sendCauses[se.Cause].String(), "SEND_FAILURE_CAUSE_"),
		"connection_id": connID,
	}
	if se.ControlID != "" {
		meta["control_id"] = text(se.ControlID)
	}
	failure := &switchboardv1.SendFailure{
		Written:       se.Written,
		Cause:         sendCauses[se.Cause],
		ConnectionId:  connID,
		SentControlId: text(se.ControlID),
	}
	if se.Ack != nil {
		failure.Ack = peerAckToProto(se.Ack)
	}
	return statusOf(code, se.Error(), reason, meta, failure)
}

// notSentStatus reports a Send that found no open session, or gave up
// waiting for one (the connection removed, the server shutting down, the
// deadline): NOT_SENT, since nothing was written, with cause
// CONNECTION_NOT_OPEN (CANCELLED when the caller cancelled).
func notSentStatus(err error, connID string) error {
	cause := transport.CauseNotOpen
	if errors.Is(err, context.Canceled) {
		cause = transport.CauseCancelled
	}
	return sendStatus(&transport.SendError{Cause: cause, Err: err}, connID)
}

// streamEnded is the status a Receive stream ends with: UNAVAILABLE with
// the sequence to resume from when the server stops or the journal is
// unavailable, the context's status when the client went away.
func (s *Service) streamEnded(ctx context.Context, err error, next uint64) error {
	resume := map[string]string{"resume_sequence": strconv.FormatUint(next, 10)}
	switch {
	case s.ctx.Err() != nil:
		return statusOf(codes.Unavailable, "server shutting down; resume with start_sequence "+strconv.FormatUint(next, 10),
			switchboardv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN, resume)
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, journal.ErrClosed):
		return statusOf(codes.Unavailable, "journal closed; resume with start_sequence "+strconv.FormatUint(next, 10),
			switchboardv1.ErrorReason_ERROR_REASON_JOURNAL_UNAVAILABLE, resume)
	case journalFailed(s.journal):
		s.log.ErrorContext(ctx, "receive stream ended: journal failed", "err", err)
		return statusOf(codes.Unavailable, "journal failed; resume with start_sequence "+strconv.FormatUint(next, 10)+" once it is back",
			switchboardv1.ErrorReason_ERROR_REASON_JOURNAL_UNAVAILABLE, resume)
	}
	return s.toStatus(ctx, err)
}

func journalFailed(j journal.Journal) bool {
	err, _ := j.Health()
	return err != nil
}

// withValidationDetails gives the protovalidate interceptor's errors the
// details every Switchboard error carries: ErrorInfo (INVALID_ARGUMENT) and
// a google.rpc.BadRequest naming each field, keeping protovalidate's own
// Violations for clients that read them.
func withValidationDetails(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return err
	}
	var violations *validate.Violations
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			return err // ours already
		case *validate.Violations:
			violations = d
		}
	}
	if violations == nil {
		return err
	}
	br := &errdetails.BadRequest{}
	for _, v := range violations.GetViolations() {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field: protovalidate.FieldPathString(v.GetField()), Description: v.GetMessage(),
		})
	}
	return statusOf(codes.InvalidArgument, st.Message(), switchboardv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, nil, br, violations)
}

func validationDetailsUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, withValidationDetails(err)
}

func validationDetailsStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return withValidationDetails(h(srv, ss))
}

// shuttingDownStatus ends streams that outlive the service.
func shuttingDownStatus() error {
	return statusOf(codes.Unavailable, "server shutting down", switchboardv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN, nil)
}

// panicStatus is the answer to a handler that panicked; the recovery
// interceptor has logged the panic and its stack.
func panicStatus() error {
	return statusOf(codes.Internal, "internal error", switchboardv1.ErrorReason_ERROR_REASON_INTERNAL, nil)
}

// consumerError is an error of the durable consumer name, so its status
// can name it (ResourceInfo).
type consumerError struct {
	name string
	err  error
}

func (e *consumerError) Error() string { return e.err.Error() }
func (e *consumerError) Unwrap() error { return e.err }

// ofConsumer wraps err, when there is one, as an error of consumer name.
func ofConsumer(name string, err error) error {
	if err == nil {
		return nil
	}
	return &consumerError{name, err}
}

// consumerName is the consumer an error names, for ResourceInfo.
func consumerName(err error) string {
	var ce *consumerError
	if errors.As(err, &ce) {
		return ce.name
	}
	return ""
}
