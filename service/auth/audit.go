package auth

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-dev/switchboard/internal/syslog"
)

// AuditConfig configures NewAuditor.
type AuditConfig struct {
	// Logger receives one structured line per record (message "audit");
	// nil discards them (a syslog writer may still get them).
	Logger *slog.Logger
	// Syslog, when set, also gets every record as RFC 5424 structured
	// data.
	Syslog *syslog.Writer
	// DataCalls also records the data path: Send, Ack and AnswerMessage
	// (tens of thousands a second; off by default). Their denials are
	// always recorded.
	DataCalls bool
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Auditor writes audit records: every state-changing call, every payload
// read (GetMessage, ListMessages with payloads, the opening and end of
// Receive streams), the data path when configured, and every
// authentication, authorization, rate-limit and stream-cap denial.
// Records never hold payloads, only who, what, target and outcome.
type Auditor struct {
	cfg AuditConfig
	log *slog.Logger
}

// NewAuditor returns an Auditor.
func NewAuditor(cfg AuditConfig) *Auditor {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Auditor{cfg: cfg, log: log}
}

// Record is one audit record.
type Record struct {
	Time time.Time
	// Event is "call" (a unary call ended), "stream_open", "stream_end"
	// or "denied".
	Event string
	// Who is the identity's name ("token:ops", "cert:spiffe://...",
	// "anonymous"), empty when authentication failed.
	Who   string
	Role  string
	Scope string
	Peer  string // the caller's address
	// Method is the full gRPC method.
	Method string
	// Target names the resource: "listener:<id>", "connection:<id>",
	// "consumer:<name>", "message:<id>", the filters of a stream.
	Target string
	// Outcome is the gRPC code ("OK", "PERMISSION_DENIED", ...), Reason
	// the ErrorInfo reason of an error, Detail a denial's message (written
	// by this package, never request data beyond ids).
	Outcome, Reason, Detail string
	Duration                time.Duration
}

func (a *Auditor) write(ctx context.Context, r Record) {
	attrs := []slog.Attr{
		slog.String("event", r.Event),
		slog.String("who", r.Who),
		slog.String("role", r.Role),
		slog.String("peer", r.Peer),
		slog.String("method", r.Method),
		slog.String("target", r.Target),
		slog.String("outcome", r.Outcome),
	}
	if r.Scope != "" {
		attrs = append(attrs, slog.String("scope", r.Scope))
	}
	if r.Reason != "" {
		attrs = append(attrs, slog.String("reason", r.Reason))
	}
	if r.Detail != "" {
		attrs = append(attrs, slog.String("detail", r.Detail))
	}
	if r.Duration > 0 {
		attrs = append(attrs, slog.Duration("duration", r.Duration))
	}
	level := slog.LevelInfo
	if r.Event == "denied" {
		level = slog.LevelWarn
	}
	// The record's own time is the log line's "time".
	if h := a.log.Handler(); h.Enabled(ctx, level) {
		rec := slog.NewRecord(r.Time, level, "audit", 0)
		rec.AddAttrs(attrs...)
		_ = h.Handle(ctx, rec)
	}
	if a.cfg.Syslog != nil {
		sev := syslog.SeverityInfo
		if r.Event == "denied" {
			sev = syslog.SeverityWarning
		}
		params := []syslog.Param{
			{Name: "event", Value: r.Event}, {Name: "who", Value: r.Who}, {Name: "role", Value: r.Role},
			{Name: "peer", Value: r.Peer}, {Name: "method", Value: r.Method}, {Name: "target", Value: r.Target},
			{Name: "outcome", Value: r.Outcome},
		}
		for _, p := range []syslog.Param{{Name: "scope", Value: r.Scope}, {Name: "reason", Value: r.Reason}, {Name: "detail", Value: r.Detail}} {
			if p.Value != "" {
				params = append(params, p)
			}
		}
		// 32473 is the enterprise number RFC 5612 reserves for examples
		// and documentation; Switchboard has none of its own.
		a.cfg.Syslog.Write(syslog.Message{Time: r.Time, Severity: sev, MsgID: "audit", SDID: "audit@32473", Params: params, Msg: r.Event + " " + r.Method})
	}
}

// call is what the interceptors learn of one call, for its record.
type call struct {
	method string
	peer   string
	start  time.Time
	target string
	id     Identity
	cred   credential
	authed bool
	opened bool // an audited stream was opened (stream_open recorded)
	// denied is the status an interceptor of this package refused the call
	// with (in full: the rate-limit middleware flattens it).
	denied error
}

type callKey struct{}

// callFrom returns the call the audit interceptor put in ctx, or a
// throwaway one when auditing is not in the chain.
func callFrom(ctx context.Context) *call {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		return c
	}
	return &call{}
}

func (c *call) deny(err error) {
	if c.denied == nil {
		c.denied = err
	}
}

// result restores a denial's full status when a middleware in between
// replaced it by one with the same code.
func (c *call) result(err error) error {
	if c.denied != nil && err != nil && status.Code(err) == status.Code(c.denied) {
		return c.denied
	}
	return err
}

func (a *Auditor) record(ctx context.Context, event string, c *call, err error) {
	r := Record{
		Time: a.cfg.Now(), Event: event, Peer: c.peer, Method: c.method, Target: c.target,
		Outcome: codeName(status.Code(err)),
	}
	if c.authed {
		r.Who, r.Role, r.Scope = c.id.Name, c.id.Role.String(), c.id.Scope.String()
	}
	if err != nil {
		st := status.Convert(err)
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				r.Reason = info.GetReason()
			}
		}
		if c.denied != nil {
			r.Detail = st.Message()
		}
	}
	if event == "stream_end" {
		r.Duration = a.cfg.Now().Sub(c.start)
	}
	a.write(ctx, r)
}

func (a *Auditor) streamOpened(ctx context.Context, c *call) {
	c.opened = true
	if a != nil {
		a.record(ctx, "stream_open", c, nil)
	}
}

// wants reports whether a finished call is recorded.
func (a *Auditor) wants(r rule, req any, c *call) bool {
	if c.denied != nil {
		return true
	}
	if r.audit == nil || req == nil || !r.audit(req) {
		return false
	}
	return !r.data || a.cfg.DataCalls
}

func (a *Authorizer) newCall(ctx context.Context, method string) (context.Context, *call) {
	c := &call{method: method, peer: peerAddr(ctx), start: time.Now()}
	return context.WithValue(ctx, callKey{}, c), c
}

func (a *Authorizer) auditUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, c := a.newCall(ctx, info.FullMethod)
	r := ruleFor(info.FullMethod)
	if r.target != nil {
		c.target = r.target(req)
	}
	resp, err := h(ctx, req)
	err = c.result(err)
	if au := a.cfg.Audit; au != nil && au.wants(r, req, c) {
		event := "call"
		if c.denied != nil {
			event = "denied"
		}
		au.record(ctx, event, c, err)
	}
	return resp, err
}

func (a *Authorizer) auditStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, c := a.newCall(ss.Context(), info.FullMethod)
	err := h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	err = c.result(err)
	if au := a.cfg.Audit; au != nil {
		switch {
		case c.denied != nil:
			au.record(ctx, "denied", c, err)
		case c.opened:
			au.record(ctx, "stream_end", c, err)
		}
	}
	return err
}

func codeName(c codes.Code) string {
	// codes.Code.String is "OK", "PermissionDenied"... the canonical
	// upper-case names are what gRPC documents and grpcurl shows.
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return c.String()
}

var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
	"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}
