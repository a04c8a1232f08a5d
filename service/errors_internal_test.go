package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// captureHandler is a slog.Handler that keeps every record.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// take returns the records kept so far and forgets them.
func (h *captureHandler) take() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.records
	h.records = nil
	return r
}

// statusDetails splits a status's details by type; it fails the test on a
// detail of any other type, or a second one of a type.
func statusDetails(t *testing.T, st *status.Status) (ei *errdetails.ErrorInfo, ri *errdetails.ResourceInfo, br *errdetails.BadRequest, sf *switchboardv1.SendFailure) {
	t.Helper()
	for _, d := range st.Details() {
		var dup bool
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			dup, ei = ei != nil, d
		case *errdetails.ResourceInfo:
			dup, ri = ri != nil, d
		case *errdetails.BadRequest:
			dup, br = br != nil, d
		case *switchboardv1.SendFailure:
			dup, sf = sf != nil, d
		default:
			t.Errorf("unexpected detail %T: %v", d, d)
		}
		if dup {
			t.Errorf("detail %T given twice", d)
		}
	}
	return ei, ri, br, sf
}

// TestToStatus pins the mapping of every domain error to its status code,
// ErrorInfo reason and metadata, and further details, in the one place that
// chooses them. Only an error nobody mapped is INTERNAL, with a generic
// message and its cause in the log.
func TestToStatus(t *testing.T) {
	logs := &captureHandler{}
	s := &Service{log: slog.New(logs)}
	resource := func(typ, id string, err error) error { return &registry.ResourceError{Type: typ, ID: id, Err: err} }
	// Listen's errors: ErrAddrNotBindable, the classified cause, the OS error.
	bind := func(why, os error) error {
		return fmt.Errorf("%w: %w: %w", transport.ErrAddrNotBindable, why, &netOpError{os})
	}
	type bad struct{ field string }
	for _, tc := range []struct {
		name     string
		err      error
		code     codes.Code
		msg      string // the whole message; empty: the error's own text
		reason   string // empty: no ErrorInfo
		meta     map[string]string
		resource *errdetails.ResourceInfo
		bad      *bad // BadRequest field violation
	}{
		{name: "listener not found", err: resource(registry.TypeListener, "adt", registry.ErrNotFound),
			code: codes.NotFound, msg: `listener "adt" not found`, reason: "NOT_FOUND",
			resource: &errdetails.ResourceInfo{ResourceType: "listener", ResourceName: "adt"}},
		{name: "connection not found, wrapped", err: fmt.Errorf("send: %w", resource(registry.TypeConnection, "c-1", registry.ErrNotFound)),
			code: codes.NotFound, reason: "NOT_FOUND",
			resource: &errdetails.ResourceInfo{ResourceType: "connection", ResourceName: "c-1"}},
		{name: "config conflict", err: resource(registry.TypeListener, "adt", registry.ErrConflict),
			code: codes.AlreadyExists, msg: `listener "adt" exists with a different config; remove it first`, reason: "CONFIG_CONFLICT",
			resource: &errdetails.ResourceInfo{ResourceType: "listener", ResourceName: "adt"}},
		{name: "message not found", err: resource(outbox.TypeMessage, "out-lab-7", registry.ErrNotFound),
			code: codes.NotFound, msg: `message "out-lab-7" not found`, reason: "NOT_FOUND",
			resource: &errdetails.ResourceInfo{ResourceType: "message", ResourceName: "out-lab-7"}},
		{name: "not in doubt", err: resource(outbox.TypeMessage, "out-lab-7", fmt.Errorf("%w (it is ACCEPTED)", outbox.ErrNotInDoubt)),
			code: codes.FailedPrecondition, msg: `message "out-lab-7" is not held in doubt (it is ACCEPTED)`, reason: "NOT_IN_DOUBT",
			resource: &errdetails.ResourceInfo{ResourceType: "message", ResourceName: "out-lab-7"}},
		{name: "stopping", err: resource(registry.TypeListener, "adt", registry.ErrStopping),
			code: codes.FailedPrecondition, msg: `listener "adt" is stopping; retry once StopListener returns`, reason: "STOPPING",
			resource: &errdetails.ResourceInfo{ResourceType: "listener", ResourceName: "adt"}},
		{name: "shutting down", err: registry.ErrShuttingDown, code: codes.Unavailable, reason: "SHUTTING_DOWN"},
		{name: "shutting down, in a ResourceError", err: resource(registry.TypeConnection, "c-1", registry.ErrShuttingDown),
			code: codes.Unavailable, reason: "SHUTTING_DOWN"},
		{name: "invalid config", err: fmt.Errorf("%w: the idle timeout must not be negative", transport.ErrInvalidConfig),
			code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", bad: &bad{"config"}},
		{name: "invalid payload", err: fmt.Errorf("%w: MSH-10 (message control id) is empty", transport.ErrInvalidPayload),
			code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", bad: &bad{"payload"}},
		{name: "invalid page token", err: errInvalid{field: "page_token", msg: "not a page token this server issued"},
			code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", bad: &bad{"page_token"}},
		{name: "address in use", err: bind(transport.ErrAddrInUse, syscall.EADDRINUSE),
			code: codes.FailedPrecondition, reason: "ADDRESS_NOT_BINDABLE", meta: map[string]string{"cause": "in_use"}},
		{name: "address not local", err: bind(transport.ErrAddrNotLocal, syscall.EADDRNOTAVAIL),
			code: codes.FailedPrecondition, reason: "ADDRESS_NOT_BINDABLE", meta: map[string]string{"cause": "not_local"}},
		{name: "privileged port", err: bind(transport.ErrPermission, syscall.EACCES),
			code: codes.FailedPrecondition, reason: "ADDRESS_NOT_BINDABLE", meta: map[string]string{"cause": "permission"}},
		{name: "unresolvable host", err: bind(transport.ErrUnresolvable, errors.New("lookup no-such-host.invalid: no such host")),
			code: codes.FailedPrecondition, reason: "ADDRESS_NOT_BINDABLE", meta: map[string]string{"cause": "unresolvable"}},
		{name: "connect failed", err: fmt.Errorf("%w: dial tcp 127.0.0.1:9: %w", transport.ErrConnectFailed, syscall.ECONNREFUSED),
			code: codes.Unavailable, reason: "CONNECT_FAILED"},
		{name: "connect failed, cause not UTF-8", err: fmt.Errorf("%w: peer said \xff\xfe", transport.ErrConnectFailed),
			code: codes.Unavailable, msg: "could not connect: peer said \u00ff\u00fe", reason: "CONNECT_FAILED"},
		{name: "connect timeout", err: fmt.Errorf("%w: dial tcp 10.0.0.1:2575: %w", transport.ErrConnectTimeout, context.DeadlineExceeded),
			code: codes.DeadlineExceeded, reason: "CONNECT_FAILED"},
		{name: "journal closed", err: fmt.Errorf("read journal at 7: %w", journal.ErrClosed),
			code: codes.Unavailable, reason: "JOURNAL_UNAVAILABLE"},
		{name: "journal unavailable", err: fmt.Errorf("append: %w: %w", journal.ErrUnavailable, syscall.ENOSPC),
			code: codes.Unavailable, reason: "JOURNAL_UNAVAILABLE"},
		{name: "not retained", err: fmt.Errorf("read journal at 3: %w", &journal.NotRetainedError{From: 3, First: 90}),
			code: codes.OutOfRange, msg: "sequence 3 is no longer retained; the oldest retained is 90 (start_sequence 90)",
			reason: "NOT_RETAINED", meta: map[string]string{"first_sequence": "90"}},
		{name: "watcher too slow", err: &observe.TooSlowError{LastSequence: 41, Buffer: 16},
			code: codes.ResourceExhausted, msg: "watcher too slow: 16 events were waiting to be sent, so the stream was cut off after sequence 41; " +
				"watch again (replay_recent returns the recent events the server still holds)",
			reason: "WATCHER_TOO_SLOW", meta: map[string]string{"last_sequence": "41"}},
		{name: "watcher too slow, wrapped", err: fmt.Errorf("watch: %w", &observe.TooSlowError{LastSequence: 0, Buffer: 1024}),
			code: codes.ResourceExhausted, msg: "watcher too slow: 1024 events were waiting to be sent, so the stream was cut off after sequence 0; " +
				"watch again (replay_recent returns the recent events the server still holds)",
			reason: "WATCHER_TOO_SLOW", meta: map[string]string{"last_sequence": "0"}},
		{name: "cancelled", err: context.Canceled, code: codes.Canceled},
		{name: "cancelled, wrapped", err: fmt.Errorf("wait: %w", context.Canceled), code: codes.Canceled},
		{name: "deadline", err: context.DeadlineExceeded, code: codes.DeadlineExceeded},
		{name: "deadline, wrapped", err: fmt.Errorf("wait: %w", context.DeadlineExceeded), code: codes.DeadlineExceeded},
		{name: "unknown", err: errors.New("pebble: disk on fire under /var/lib/switchboard"),
			code: codes.Internal, msg: "internal error", reason: "INTERNAL"},
		{name: "unknown, wrapped", err: fmt.Errorf("append: %w", errors.New("pebble: disk on fire under /var/lib/switchboard")),
			code: codes.Internal, msg: "internal error", reason: "INTERNAL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(s.toStatus(t.Context(), tc.err))
			want := tc.msg
			if want == "" {
				want = tc.err.Error()
			}
			if st.Code() != tc.code || st.Message() != want {
				t.Errorf("status = %v %q, want %v %q", st.Code(), st.Message(), tc.code, want)
			}
			ei, ri, br, sf := statusDetails(t, st)
			switch {
			case tc.reason == "" && ei != nil:
				t.Errorf("ErrorInfo = %v, want none", ei)
			case tc.reason != "" && (ei.GetReason() != tc.reason || ei.GetDomain() != "github.com/switchboard-dev/switchboard" ||
				!equalMaps(ei.GetMetadata(), tc.meta)):
				t.Errorf("ErrorInfo = %v, want reason %s, metadata %v", ei, tc.reason, tc.meta)
			}
			if !proto.Equal(ri, tc.resource) {
				t.Errorf("ResourceInfo = %v, want %v", ri, tc.resource)
			}
			switch v := br.GetFieldViolations(); {
			case tc.bad == nil && br != nil:
				t.Errorf("BadRequest = %v, want none", br)
			case tc.bad != nil && (len(v) != 1 || v[0].GetField() != tc.bad.field || v[0].GetDescription() == ""):
				t.Errorf("BadRequest = %v, want one violation of %s", br, tc.bad.field)
			}
			if sf != nil {
				t.Errorf("SendFailure = %v, want none", sf)
			}
			checkUTF8(t, st)

			logged := logs.take()
			if tc.code != codes.Internal {
				if len(logged) != 0 {
					t.Errorf("logged %d records for a mapped error: %v", len(logged), logged[0].Message)
				}
				return
			}
			if len(logged) != 1 || logged[0].Level != slog.LevelError || loggedErr(logged[0]) == nil ||
				loggedErr(logged[0]).Error() != tc.err.Error() {
				t.Errorf("logged %v, want one ERROR record with err = the cause", logged)
			}
		})
	}
	if got := s.toStatus(t.Context(), nil); got != nil {
		t.Errorf("toStatus(nil) = %v, want nil", got)
	}
}

// netOpError stands in for the *net.OpError Listen wraps.
type netOpError struct{ err error }

func (e *netOpError) Error() string { return "listen tcp 127.0.0.1:80: bind: " + e.err.Error() }
func (e *netOpError) Unwrap() error { return e.err }

// loggedErr returns the "err" attribute of r as an error, or nil.
func loggedErr(r slog.Record) error {
	var err error
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			err, _ = a.Value.Any().(error)
			return false
		}
		return true
	})
	return err
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// checkUTF8 fails the test when the status message or a string in its
// details is not valid UTF-8 (the details would not even marshal).
func checkUTF8(t *testing.T, st *status.Status) {
	t.Helper()
	if !utf8.ValidString(st.Message()) {
		t.Errorf("message %q is not UTF-8", st.Message())
	}
	if _, err := proto.Marshal(st.Proto()); err != nil {
		t.Errorf("status does not marshal: %v", err)
	}
}

// TestSendStatus pins, for every SendCause, written or not, the status code,
// the ErrorInfo reason and metadata, and the SendFailure detail: IN_DOUBT
// whenever the message was written, NOT_SENT when not, so no client can
// take either for a delivery.
func TestSendStatus(t *testing.T) {
	want := map[transport.SendCause]struct {
		code  codes.Code
		cause switchboardv1.SendFailureCause
		name  string
	}{
		transport.CauseNotOpen:        {codes.Unavailable, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN, "CONNECTION_NOT_OPEN"},
		transport.CauseQueueTimeout:   {codes.DeadlineExceeded, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_QUEUE_TIMEOUT, "QUEUE_TIMEOUT"},
		transport.CauseCancelled:      {codes.Canceled, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CANCELLED, "CANCELLED"},
		transport.CauseAckTimeout:     {codes.DeadlineExceeded, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_TIMEOUT, "ACK_TIMEOUT"},
		transport.CauseWriteFailed:    {codes.Unavailable, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_WRITE_FAILED, "WRITE_FAILED"},
		transport.CauseConnectionLost: {codes.Unavailable, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_LOST, "CONNECTION_LOST"},
		transport.CauseAckMismatch:    {codes.Unknown, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_MISMATCH, "ACK_MISMATCH"},
		transport.CauseAckUnreadable:  {codes.Unknown, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_UNREADABLE, "ACK_UNREADABLE"},
	}
	for _, cause := range transport.SendCauses() {
		w, ok := want[cause]
		if !ok {
			t.Errorf("no expectation for cause %v: add it to this table", cause)
			continue
		}
		// The reply that could not be trusted travels only with the causes
		// that have one.
		var ack *transport.PeerAck
		if cause == transport.CauseAckMismatch || cause == transport.CauseAckUnreadable {
			ack = &transport.PeerAck{Code: transport.AckAA, Payload: []byte("MSH|...\rMSA|AA|OTHER|\xe9\r"), ControlID: "OTHER", Text: "\xe9"}
		}
		for _, written := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/written=%v", w.name, written), func(t *testing.T) {
				se := &transport.SendError{Written: written, Cause: cause, ControlID: "M\xfcLLER-1", Ack: ack, Err: errors.New("the cause")}
				st := status.Convert(sendStatus(se, "c-1"))
				if st.Code() != w.code || st.Message() != text(se.Error()) {
					t.Errorf("status = %v %q, want %v %q", st.Code(), st.Message(), w.code, text(se.Error()))
				}
				reason := "NOT_SENT"
				if written {
					reason = "IN_DOUBT"
				}
				meta := map[string]string{"written": fmt.Sprint(written), "cause": w.name, "connection_id": "c-1", "control_id": "M\u00fcLLER-1"}
				ei, ri, br, sf := statusDetails(t, st)
				if ei.GetReason() != reason || ei.GetDomain() != ErrorDomain || !equalMaps(ei.GetMetadata(), meta) {
					t.Errorf("ErrorInfo = %v, want reason %s, metadata %v", ei, reason, meta)
				}
				wantSF := &switchboardv1.SendFailure{Written: written, Cause: w.cause, ConnectionId: "c-1", SentControlId: "M\u00fcLLER-1"}
				if ack != nil {
					wantSF.Ack = &switchboardv1.PeerAck{Code: switchboardv1.AckCode_ACK_CODE_AA, Payload: ack.Payload, ControlId: "OTHER", Text: "\u00e9"}
				}
				if !proto.Equal(sf, wantSF) {
					t.Errorf("SendFailure = %v, want %v", sf, wantSF)
				}
				if ri != nil || br != nil {
					t.Errorf("unexpected details %v %v", ri, br)
				}
				checkUTF8(t, st)
			})
		}
	}
	// A message without a control id (not HL7) has none in the metadata.
	st := status.Convert(sendStatus(&transport.SendError{Cause: transport.CauseNotOpen, Err: transport.ErrClosed}, "c-1"))
	ei, _, _, sf := statusDetails(t, st)
	if _, has := ei.GetMetadata()["control_id"]; ei == nil || has || sf.GetSentControlId() != "" {
		t.Errorf("details %v, %v; want no control id for a message without one", ei, sf)
	}
}

// TestNotOpenStatus: a Send that finds no open session, or stops waiting
// for one, is NOT_SENT (nothing was written), UNAVAILABLE with cause
// CONNECTION_NOT_OPEN, or CANCELLED when the caller cancelled; never
// NOT_FOUND or INTERNAL.
func TestNotOpenStatus(t *testing.T) {
	s := &Service{log: slog.New(slog.DiscardHandler)}
	conn := func(err error) error {
		return &registry.ResourceError{Type: registry.TypeConnection, ID: "c-1", Err: err}
	}
	for _, tc := range []struct {
		name  string
		err   error
		code  codes.Code
		cause switchboardv1.SendFailureCause
	}{
		{"reconnecting, fail fast", conn(registry.ErrReconnecting), codes.Unavailable, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN},
		{"closed, not reconnecting", conn(registry.ErrNotOpen), codes.Unavailable, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN},
		{"deadline while waiting", conn(fmt.Errorf("%w: %w", registry.ErrNotOpen, context.DeadlineExceeded)),
			codes.Unavailable, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN},
		{"cancelled while waiting", conn(fmt.Errorf("%w: %w", registry.ErrNotOpen, context.Canceled)),
			codes.Canceled, switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CANCELLED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(s.toStatus(t.Context(), tc.err))
			ei, _, _, sf := statusDetails(t, st)
			want := &switchboardv1.SendFailure{Cause: tc.cause, ConnectionId: "c-1"}
			if st.Code() != tc.code || ei.GetReason() != "NOT_SENT" || !proto.Equal(sf, want) {
				t.Errorf("status = %v %v %v, want %v NOT_SENT %v", st.Code(), ei, sf, tc.code, want)
			}
		})
	}
	// A removal or shutdown that ends the wait is NOT_SENT too, not
	// NOT_FOUND or SHUTTING_DOWN: the Send found the connection.
	for _, err := range []error{conn(registry.ErrNotFound), registry.ErrShuttingDown} {
		if ei := errorInfoOf(t, notSentStatus(err, "c-1")); ei.GetReason() != "NOT_SENT" {
			t.Errorf("notSentStatus(%v) reason %v, want NOT_SENT", err, ei.GetReason())
		}
	}
}

func errorInfoOf(t *testing.T, err error) *errdetails.ErrorInfo {
	ei, _, _, _ := statusDetails(t, status.Convert(err))
	return ei
}

// TestErrorReasonsUsed: every ErrorReason the API defines is what some error
// maps to, so none is documented but never sent.
func TestErrorReasonsUsed(t *testing.T) {
	s := &Service{log: slog.New(slog.DiscardHandler)}
	errs := []error{
		resourceErr(registry.ErrNotFound), resourceErr(registry.ErrConflict), resourceErr(registry.ErrStopping),
		registry.ErrShuttingDown, transport.ErrInvalidConfig, transport.ErrAddrNotBindable, transport.ErrConnectFailed,
		journal.ErrClosed, errors.New("unknown"),
		&transport.SendError{Written: true, Cause: transport.CauseAckTimeout},
		&transport.SendError{Cause: transport.CauseNotOpen},
		&registry.ResourceError{Type: outbox.TypeMessage, ID: "out-x-1", Err: outbox.ErrNotInDoubt},
		&journal.NotRetainedError{From: 1, First: 2},
		&observe.TooSlowError{LastSequence: 7, Buffer: 16},
		delivery.ErrNotDelivered, &beyondHeadError{start: 9, last: 3}, &notAwaitingError{seq: 1, consumer: "c", why: "test"},
		fmt.Errorf("listen on 10.0.0.1:25: %w: no listen rule", ErrAddressForbidden),
		&profileError{name: "mllp", err: errors.New("unknown TLS profile")},
		fmt.Errorf("outbox: connection \"lab\": %w", journal.ErrFenced),
	}
	// The authentication and authorization reasons come from service/auth's
	// interceptors, before a handler runs; its tests check each one.
	used := map[string]bool{"UNAUTHENTICATED": true, "ROLE_REQUIRED": true, "OUT_OF_SCOPE": true, "RATE_LIMITED": true, "TOO_MANY_STREAMS": true}
	for _, err := range errs {
		ei, _, _, _ := statusDetails(t, status.Convert(s.toStatus(t.Context(), err)))
		used[ei.GetReason()] = true
	}
	values := switchboardv1.ErrorReason(0).Descriptor().Values()
	for i := range values.Len() {
		r := switchboardv1.ErrorReason(values.Get(i).Number())
		if r != switchboardv1.ErrorReason_ERROR_REASON_UNSPECIFIED && !used[reasonName(r)] {
			t.Errorf("no error maps to reason %s", reasonName(r))
		}
	}
}

func resourceErr(err error) error {
	return &registry.ResourceError{Type: registry.TypeListener, ID: "x", Err: err}
}

// TestEnumMappings ranges over every value of transport's enums (and the
// journal's record kinds) and checks that each maps to an API value that is
// not UNSPECIFIED, that no two share one, and that every API value (but
// UNSPECIFIED) is reached, so a value added on either side cannot fall
// through to UNSPECIFIED unnoticed.
func TestEnumMappings(t *testing.T) {
	checkEnum(t, transport.CloseReasons(), closeReason)
	checkEnum(t, transport.AckCodes(), ackCode)
	checkEnum(t, transport.Outcomes(), sendOutcome, switchboardv1.SendOutcome_SEND_OUTCOME_QUEUED /* sendQueued's */)
	checkEnum(t, transport.SendCauses(), func(c transport.SendCause) switchboardv1.SendFailureCause { return sendCauses[c] })
	// A resource's state is the registry's (transport's session states
	// and the registry's own for retries; registry's tests check that
	// every transport state has its registry state).
	checkEnum(t, registry.ListenerStates(), listenerState)
	checkEnum(t, registry.ConnStates(), connState)
	// transport has no list of these; they are written out here.
	checkEnum(t, []transport.Direction{transport.Inbound, transport.Outbound}, direction)
	checkEnum(t, []journal.Kind{journal.KindMessage, journal.KindAck}, recordKind)

	// The zero values mean "none": open, unreadable.
	if closeReason(0) != switchboardv1.CloseReason_CLOSE_REASON_UNSPECIFIED || ackCode(0) != switchboardv1.AckCode_ACK_CODE_UNSPECIFIED {
		t.Errorf("zero close reason or ack code maps to %v, %v; want UNSPECIFIED", closeReason(0), ackCode(0))
	}
	// Filters map back.
	for _, d := range []transport.Direction{transport.Inbound, transport.Outbound} {
		if got := directionFromProto(direction(d)); got != d {
			t.Errorf("direction %v round-trips to %v", d, got)
		}
	}
	if got := directionFromProto(switchboardv1.Direction_DIRECTION_UNSPECIFIED); got != 0 {
		t.Errorf("DIRECTION_UNSPECIFIED filters on %v, want any (0)", got)
	}
}

// checkEnum checks m over values; elsewhere are API values the code
// produces without a transport value (each names where).
func checkEnum[T fmt.Stringer, E protoreflect.Enum](t *testing.T, values []T, m func(T) E, elsewhere ...E) {
	t.Helper()
	var zero E
	desc := zero.Descriptor()
	seen := map[protoreflect.EnumNumber]T{}
	for _, e := range elsewhere {
		var none T
		seen[e.Number()] = none
	}
	for _, v := range values {
		n := m(v).Number()
		if n == 0 {
			t.Errorf("%s: %v maps to %s", desc.Name(), v, desc.Values().ByNumber(0).Name())
			continue
		}
		if prev, ok := seen[n]; ok {
			t.Errorf("%s: %v and %v both map to %s", desc.Name(), prev, v, desc.Values().ByNumber(n).Name())
		}
		seen[n] = v
	}
	for i := range desc.Values().Len() {
		if ev := desc.Values().Get(i); ev.Number() != 0 {
			if _, ok := seen[ev.Number()]; !ok {
				t.Errorf("%s: no transport value maps to %s", desc.Name(), ev.Name())
			}
		}
	}
}
