package observe_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"

	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/transport"
)

// clearTraceEnv unsets every variable NewTracing reads, for the test.
func clearTraceEnv(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", observe.EnvTraceExporter,
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_PROPAGATORS"} {
		t.Setenv(k, "")
	}
}

// TestNewTracingOff: with no exporter configured, or "none", or the SDK
// disabled, tracing is off and costs nothing: no provider, an option that
// does nothing, no Observer.
func TestNewTracingOff(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"unset":    {},
		"none":     {"OTEL_TRACES_EXPORTER": "none"},
		"disabled": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
	} {
		t.Run(name, func(t *testing.T) {
			clearTraceEnv(t)
			for k, v := range env {
				t.Setenv(k, v)
			}
			tr, err := observe.NewTracing(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if tr.Enabled() || tr.Observer() != nil || tr.Exporter() != "off" || tr.InboundSpan(1).IsValid() {
				t.Error("tracing is on")
			}
			if _, ok := tr.ServerOption().(grpc.EmptyServerOption); !ok {
				t.Errorf("ServerOption is %T; want grpc.EmptyServerOption", tr.ServerOption())
			}
			if err := tr.Shutdown(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	var nilTracing *observe.Tracing
	if nilTracing.Enabled() || nilTracing.Observer() != nil || nilTracing.Shutdown(context.Background()) != nil {
		t.Error("a nil Tracing is not off")
	}
}

// TestNewTracingOn: OTLP over gRPC and over HTTP, the console and the
// benchmark's memory exporter turn tracing on (the OTLP exporters connect
// lazily: nothing is dialled here); unknown values are errors.
func TestNewTracingOn(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"otlp-grpc": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
		"otlp-http": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
		"memory":    {observe.EnvTraceExporter: "memory", "OTEL_TRACES_EXPORTER": "none"},
	} {
		t.Run(name, func(t *testing.T) {
			clearTraceEnv(t)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1") // never reached: no span is made
			for k, v := range env {
				t.Setenv(k, v)
			}
			tr, err := observe.NewTracing(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !tr.Enabled() || tr.Observer() == nil {
				t.Error("tracing is off")
			}
			if _, ok := tr.ServerOption().(grpc.EmptyServerOption); ok {
				t.Error("no stats handler")
			}
			want := env["OTEL_TRACES_EXPORTER"]
			if name == "memory" {
				want = "memory"
			}
			if got := tr.Exporter(); got != want {
				t.Errorf("Exporter %q; want %q", got, want)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	for name, env := range map[string]map[string]string{
		"exporter":  {"OTEL_TRACES_EXPORTER": "carrier-pigeon"},
		"protocol":  {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "smoke"},
		"benchmark": {observe.EnvTraceExporter: "disk"},
	} {
		t.Run("bad-"+name, func(t *testing.T) {
			clearTraceEnv(t)
			for k, v := range env {
				t.Setenv(k, v)
			}
			if _, err := observe.NewTracing(t.Context()); err == nil {
				t.Error("no error")
			}
		})
	}
}

// flakySink stores nothing when told to fail.
type flakySink struct {
	fail atomic.Bool
	seq  atomic.Uint64
}

func (s *flakySink) Append(context.Context, *transport.Message) (uint64, error) {
	if s.fail.Load() {
		return 0, errors.New("disk full")
	}
	return s.seq.Add(1), nil
}

func listen(t *testing.T, tr *observe.Tracing, sink transport.Sink, ack transport.AckPolicy) *transport.Listener {
	t.Helper()
	l, err := transport.Listen(t.Context(), transport.ListenerConfig{ID: "in", Address: "127.0.0.1:0", Sink: sink,
		Conn: transport.ConnConfig{Ack: ack, Observer: tr.Observer()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// waitSpans waits until exp has n spans.
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, n int) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		spans := exp.GetSpans()
		if len(spans) >= n {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spans after 10s; want %d", len(spans), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInboundSpanOutcomes: a frame the journal could not store is an error
// span with the negative code; under a policy that writes no answer the
// span ends after the append; strings from the message are valid UTF-8
// and bounded; a span is never left open by a closed connection.
func TestInboundSpanOutcomes(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	tr := observe.NewTracingFrom(tp, nil)

	sink := &flakySink{}
	sink.fail.Store(true)
	p := traceDialPeer(t, listen(t, tr, sink, transport.HL7Ack()).Addr().String())
	if ack := p.roundTrip(hl7TypedMessage("ADT^A01^ADT_A01", "FAIL1")); !strings.Contains(ack, "MSA|AR|FAIL1") {
		t.Fatalf("ACK %q", ack)
	}
	s := waitSpans(t, exp, 1)[0]
	a := attrs(s)
	if a[observe.AttrAckCode].AsString() != "AR" || s.Status.Code != codes.Error || !strings.Contains(s.Status.Description, "disk full") {
		t.Errorf("unstored frame: ack %q, status %v", a[observe.AttrAckCode].Emit(), s.Status)
	}
	if _, ok := a[observe.AttrSequence]; ok {
		t.Error("an unstored frame has a sequence")
	}
	exp.Reset()

	// No answer at all: the span ends once appended.
	p = traceDialPeer(t, listen(t, tr, &flakySink{}, transport.NoAck()).Addr().String())
	long := strings.Repeat("\xe9", 1000) // ISO-8859-1 é, not UTF-8
	if _, err := p.nc.Write(p.f.AppendFrame(nil, hl7TypedMessage("ADT^A01^ADT_A01", long))); err != nil {
		t.Fatal(err)
	}
	s = waitSpans(t, exp, 1)[0]
	a = attrs(s)
	id := a[observe.AttrControlID].AsString()
	if _, ok := a[observe.AttrAckCode]; ok || s.Status.Code == codes.Error || a[observe.AttrSequence].AsInt64() != 1 {
		t.Errorf("unanswered frame: attributes %v, status %v", s.Attributes, s.Status)
	}
	if !utf8.ValidString(id) || len(id) > 256 || !strings.HasPrefix(id, "éé") {
		t.Errorf("control id attribute %q (%d bytes)", id, len(id))
	}
	if !tr.InboundSpan(1).Equal(s.SpanContext) || tr.InboundSpan(2).IsValid() {
		t.Error("InboundSpan(1) is not the span of sequence 1, or sequence 2 has one")
	}
}
