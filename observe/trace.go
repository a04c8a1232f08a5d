package observe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/switchboard-dev/switchboard/transport"
)

// Span names and attribute keys. Attributes never carry payload bytes: the
// HL7 control id (MSH-10) and message type (MSH-9) are the only values
// taken from a message, made valid UTF-8 and cut to maxAttrText bytes.
const (
	// SpanInbound covers one received message: frame read, journal append,
	// acknowledgement written. A root span (SpanKindServer): the TCP peer
	// carries no trace context.
	SpanInbound = "switchboard.inbound"
	// SpanSend covers one direct Send on a connection: write, wait, the
	// peer's acknowledgement (SpanKindClient), as a child of the Send RPC's
	// span (service package).
	SpanSend = "switchboard.send"
	// SpanDeliver covers one Receive response (a batch of journal records
	// sent to the consumer), as a child of the Receive RPC's span, linked to
	// the inbound spans of the messages it carries (service package).
	SpanDeliver = "switchboard.deliver"

	AttrControlID    = attribute.Key("hl7.control_id")
	AttrMessageType  = attribute.Key("hl7.message_type")
	AttrListenerID   = attribute.Key("switchboard.listener_id")
	AttrConnectionID = attribute.Key("switchboard.connection_id")
	AttrSequence     = attribute.Key("switchboard.sequence")
	AttrAckCode      = attribute.Key("switchboard.ack_code")
	// AttrFrameClass is "ack" on the span of an acknowledgement that no
	// Send waited for (stored, never answered); messages have none.
	AttrFrameClass = attribute.Key("switchboard.frame_class")

	// AttrAppendMicros is, on an inbound span, the time from the frame's
	// receipt until the journal append returned, in microseconds (the rest
	// of the span is building and writing the acknowledgement).
	AttrAppendMicros = attribute.Key("switchboard.append_us")
)

// maxAttrText bounds a string attribute taken from message bytes.
const maxAttrText = 256

var serverKind = trace.WithSpanKind(trace.SpanKindServer)

// scope is the instrumentation scope of the spans made here.
const scope = "github.com/switchboard-dev/switchboard/observe"

// EnvTraceExporter is the variable that, set to "memory", traces to an
// in-memory exporter that keeps the last MemorySpans spans (behind the usual
// batch span processor) and sends nothing anywhere: for measuring what
// tracing costs (`switchboard bench suite --only tracing`), never for
// production. It wins over OTEL_TRACES_EXPORTER.
const EnvTraceExporter = "SWITCHBOARD_TRACE_EXPORTER"

// MemorySpans is how many spans the "memory" exporter keeps.
const MemorySpans = 1024

// inboundRing is how many recent inbound span contexts are remembered by
// journal sequence, for the links of Receive's delivery spans.
const inboundRing = 1 << 16

// Tracing is Switchboard's OpenTelemetry tracing: the otelgrpc stats handler
// for every RPC (ServerOption), spans for inbound messages (Observer), and
// the lookup by journal sequence that lets Receive's delivery spans link to
// them (InboundSpan). Its zero value and a nil *Tracing are off: every
// method is then a no-op that costs nothing.
type Tracing struct {
	tp    trace.TracerProvider
	owned *sdktrace.TracerProvider // shut down by Shutdown; nil if not ours
	prop  propagation.TextMapPropagator
	tr    trace.Tracer
	mem   *memoryExporter // the "memory" exporter, when in use

	conns sync.Map // *transport.Conn -> *connTrace
	ring  [inboundRing]ringSlot
}

// NewTracing sets tracing up from the standard OpenTelemetry environment
// only. Tracing is off (Enabled false, no provider, no stats handler, a nil
// Observer: nothing is done per message or per call) when
// OTEL_TRACES_EXPORTER is unset, empty or "none", or OTEL_SDK_DISABLED is
// "true". Otherwise the exporter comes from
// go.opentelemetry.io/contrib/exporters/autoexport: "otlp" with
// OTEL_EXPORTER_OTLP_PROTOCOL (or OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) "grpc"
// or "http/protobuf" (the default), OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS,
// ... as the exporters document, or "console" (stdout). The sampler is the
// SDK's from OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default
// parentbased_always_on), the batch span processor's settings OTEL_BSP_*,
// the propagators OTEL_PROPAGATORS (default tracecontext,baggage), the
// resource OTEL_SERVICE_NAME (default "switchboard") and
// OTEL_RESOURCE_ATTRIBUTES. SWITCHBOARD_TRACE_EXPORTER=memory is the
// benchmark exporter (EnvTraceExporter). An unknown exporter or protocol is
// an error.
//
// What `switchboard serve` does with it (the only wiring needed):
//
//	tr, err := observe.NewTracing(ctx)          // before the service
//	if err != nil { return err }
//	defer tr.Shutdown(shutdownCtx)              // after gRPC has stopped: flushes spans, bounded by the ctx
//	svc, err := service.New(service.Config{..., Observer: observe.Join(..., tr.Observer()),
//		InboundSpan: tr.InboundSpan})
//	gs, hs, err := service.NewGRPCServer(svc, service.ServerOptions{...,
//		GRPCOptions: []grpc.ServerOption{tr.ServerOption()}})
//
// and log tr.Enabled() at start. Shutdown must run after the gRPC server and
// the service have stopped (so the last spans are ended) and be given a
// deadline: an unreachable collector must not hold the exit.
func NewTracing(ctx context.Context) (*Tracing, error) {
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return &Tracing{}, nil
	}
	var exp sdktrace.SpanExporter
	var mem *memoryExporter
	switch v := strings.TrimSpace(os.Getenv(EnvTraceExporter)); v {
	case "":
		switch name := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); name {
		case "", "none":
			return &Tracing{}, nil
		}
		var err error
		if exp, err = autoexport.NewSpanExporter(ctx); err != nil {
			return nil, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%s: %w", os.Getenv("OTEL_TRACES_EXPORTER"), err)
		}
		if autoexport.IsNoneSpanExporter(exp) {
			return &Tracing{}, nil
		}
	case "memory":
		mem = newMemoryExporter(MemorySpans)
		exp = mem
	default:
		return nil, fmt.Errorf("tracing: %s=%q: only \"memory\" is known", EnvTraceExporter, v)
	}
	prop, err := autoprop.TextMapPropagator()
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: OTEL_PROPAGATORS: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("switchboard"), semconv.ServiceVersion(version())),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	)
	if err != nil && res == nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	t := NewTracingFrom(tp, prop)
	t.owned, t.mem = tp, mem
	return t, nil
}

// NewTracingFrom traces to tp (an *sdktrace.TracerProvider, say one with
// tracetest's in-memory exporter in a test) with propagator prop (nil: W3C
// trace context and baggage). Shutdown does not shut tp down: its owner
// does. A nil tp is tracing off.
func NewTracingFrom(tp trace.TracerProvider, prop propagation.TextMapPropagator) *Tracing {
	if tp == nil {
		return &Tracing{}
	}
	if prop == nil {
		prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return &Tracing{tp: tp, prop: prop, tr: tp.Tracer(scope, trace.WithInstrumentationVersion(version()))}
}

// Enabled reports whether spans are made.
func (t *Tracing) Enabled() bool { return t != nil && t.tp != nil }

// Exporter names what the spans go to, for the start-up log line: "off",
// "memory" or the value of OTEL_TRACES_EXPORTER.
func (t *Tracing) Exporter() string {
	switch {
	case !t.Enabled():
		return "off"
	case t.mem != nil:
		return "memory"
	case t.owned == nil:
		return "provided"
	}
	return os.Getenv("OTEL_TRACES_EXPORTER")
}

// Shutdown flushes the spans still buffered and stops the exporter of a
// provider NewTracing made, within ctx. Call it once, after the gRPC server
// and the service have stopped.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.owned == nil {
		return nil
	}
	return t.owned.Shutdown(ctx)
}

// ServerOption is the gRPC server option that traces every RPC with
// otelgrpc's stats handler (a server span per call, its parent taken from
// the caller's trace context through the propagators; no per-message
// events, no otelgrpc metrics). Off, it is an option that does nothing.
// Pass it in service.ServerOptions.GRPCOptions.
func (t *Tracing) ServerOption() grpc.ServerOption {
	if !t.Enabled() {
		return grpc.EmptyServerOption{}
	}
	return grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()),
	))
}

// Observer returns the transport Observer that makes an inbound span
// (SpanInbound) per received message: it starts at the frame's receive
// time (Frame.Time), notes when the journal append returned
// (AttrAppendMicros), and ends when the acknowledgement was written
// (FrameAnswered), or at once for an acknowledgement frame that is stored
// but never answered. Replies to a Send are part of the Send's span, not an
// inbound one. Attributes: hl7.control_id, hl7.message_type,
// switchboard.listener_id, switchboard.connection_id,
// switchboard.sequence, switchboard.ack_code, switchboard.append_us and
// network.peer.address. The status is an error when the frame was not
// stored, its answer was negative or could not be written. Off, it is nil
// (Join skips it).
func (t *Tracing) Observer() *transport.Observer {
	if !t.Enabled() {
		return nil
	}
	return &transport.Observer{
		FrameReceived: t.frameReceived,
		FrameAnswered: t.frameAnswered,
		ConnClosed:    t.connClosed,
	}
}

// InboundSpan returns the span context of the inbound span that traced the
// frame stored at journal sequence seq, when this process made it, it was
// sampled, and it is among the last 65,536 stored; otherwise an invalid
// one. Receive's delivery spans link to it (service.Config.InboundSpan).
func (t *Tracing) InboundSpan(seq uint64) trace.SpanContext {
	if !t.Enabled() || seq == 0 {
		return trace.SpanContext{}
	}
	s := &t.ring[seq%inboundRing]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq != seq {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: s.trace, SpanID: s.span, TraceFlags: trace.FlagsSampled})
}

type ringSlot struct {
	mu    sync.Mutex
	seq   uint64
	trace trace.TraceID
	span  trace.SpanID
}

func (t *Tracing) remember(seq uint64, sc trace.SpanContext) {
	s := &t.ring[seq%inboundRing]
	s.mu.Lock()
	s.seq, s.trace, s.span = seq, sc.TraceID(), sc.SpanID()
	s.mu.Unlock()
}

// connTrace is what the Observer keeps per connection; only the
// connection's read loop touches it.
type connTrace struct {
	base    []attribute.KeyValue // the connection's attributes
	buf     []attribute.KeyValue // a span's start attributes (the SDK copies them)
	pending trace.Span           // the inbound span waiting for its answer
}

func (t *Tracing) conn(c *transport.Conn) *connTrace {
	if v, ok := t.conns.Load(c); ok {
		return v.(*connTrace)
	}
	ct := &connTrace{base: connAttrs(c)}
	t.conns.Store(c, ct)
	return ct
}

func connAttrs(c *transport.Conn) []attribute.KeyValue {
	attrs := []attribute.KeyValue{AttrConnectionID.String(c.ID())}
	if id := c.ListenerID(); id != "" {
		attrs = append(attrs, AttrListenerID.String(id))
	}
	if host, _, err := net.SplitHostPort(c.Info().RemoteAddr); err == nil {
		attrs = append(attrs, semconv.NetworkPeerAddress(host))
	}
	return attrs
}

func (t *Tracing) frameReceived(c *transport.Conn, in *transport.Frame, class transport.FrameClass) {
	if class != transport.FrameMessage && class != transport.FrameAck {
		return // a reply belongs to its Send; an ignored frame is nothing
	}
	appended := time.Now()
	ct := t.conn(c)
	if ct.pending != nil { // not answered: cannot happen, but never leak a span
		ct.end()
	}
	// The attributes are set once, when the span ends: the SDK then copies
	// them once, into a slice of the right size.
	attrs := append(ct.buf[:0], ct.base...)
	if class != transport.FrameMessage {
		attrs = append(attrs, AttrFrameClass.String(class.String()))
	}
	if in.Seq > 0 {
		attrs = append(attrs, AttrSequence.Int64(int64(in.Seq)))
	}
	if in.HeaderErr == nil {
		attrs = append(attrs, AttrControlID.String(attrText(in.Header.ControlID)),
			AttrMessageType.String(attrText(in.Header.MessageType)))
	}
	// When the append returned, as an attribute rather than an event: an
	// event costs a tenth of the span again, and a number can be searched
	// (slow appends).
	attrs = append(attrs, AttrAppendMicros.Int64(appended.Sub(in.Time).Microseconds()))
	ct.buf = attrs
	_, span := t.tr.Start(context.Background(), SpanInbound, serverKind, trace.WithTimestamp(in.Time))
	ct.pending = span
	if sc := span.SpanContext(); in.Seq > 0 && sc.IsSampled() {
		t.remember(in.Seq, sc)
	}
	if in.StoreErr != nil {
		span.SetStatus(codes.Error, "not stored: "+in.StoreErr.Error())
	}
	if class == transport.FrameAck {
		ct.end() // stored, never answered
	}
}

func (t *Tracing) frameAnswered(c *transport.Conn, in *transport.Frame, code transport.AckCode, err error) {
	ct := t.conn(c)
	if ct.pending == nil {
		return
	}
	if code != 0 {
		ct.buf = append(ct.buf, AttrAckCode.String(code.String()))
	}
	switch {
	case err != nil:
		ct.pending.SetStatus(codes.Error, "acknowledgement not written: "+err.Error())
	case in.StoreErr != nil: // status already set
	case code != 0 && !code.Positive():
		ct.pending.SetStatus(codes.Error, "answered "+code.String())
	}
	ct.end()
}

// end ends the pending span with its attributes.
func (ct *connTrace) end() {
	ct.pending.SetAttributes(ct.buf...)
	ct.pending.End()
	ct.pending, ct.buf = nil, ct.buf[:0]
}

func (t *Tracing) connClosed(c *transport.Conn, _ transport.ConnInfo) {
	v, ok := t.conns.LoadAndDelete(c)
	if !ok {
		return
	}
	if ct := v.(*connTrace); ct.pending != nil {
		ct.pending.SetStatus(codes.Error, "connection closed before the answer")
		ct.end()
	}
}

// attrText makes a string taken from message bytes fit for an attribute:
// valid UTF-8 (bytes that are not are read as ISO-8859-1, as the API does)
// and at most maxAttrText bytes.
func attrText(s string) string {
	if len(s) <= maxAttrText && utf8.ValidString(s) {
		return s
	}
	if !utf8.ValidString(s) {
		b := make([]byte, 0, maxAttrText+utf8.UTFMax)
		for i := 0; i < len(s) && len(b) < maxAttrText; i++ {
			b = utf8.AppendRune(b, rune(s[i]))
		}
		s = string(b)
	}
	if len(s) > maxAttrText {
		n := maxAttrText
		for !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}

// version is the module's version, for the resource and the scope.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// memoryExporter keeps the last spans it is given and sends nothing
// anywhere: the benchmark exporter.
type memoryExporter struct {
	mu    sync.Mutex
	spans []sdktrace.ReadOnlySpan
	next  int
	total int64
	done  bool
}

func newMemoryExporter(n int) *memoryExporter {
	return &memoryExporter{spans: make([]sdktrace.ReadOnlySpan, n)}
}

func (m *memoryExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return errors.New("exporter shut down")
	}
	for _, s := range spans {
		m.spans[m.next] = s
		m.next = (m.next + 1) % len(m.spans)
	}
	m.total += int64(len(spans))
	return nil
}

func (m *memoryExporter) Shutdown(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = true
	return nil
}

// exported returns how many spans the exporter was given.
func (m *memoryExporter) exported() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
}
