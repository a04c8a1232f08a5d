package service

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/transport"
)

// Spans of the handlers. They are children of the RPC's own span (the
// otelgrpc stats handler's, in the call's context) and made with its
// tracer provider, so the service needs no tracing setup of its own: with
// no stats handler, or an RPC span that is not sampled, nothing is made
// and nothing is spent. Names and keys are observe's (observe/trace.go,
// which the service does not import); payload bytes are never attributes.

const (
	tracerScope = "github.com/switchboard-dev/switchboard/service"

	spanSend    = "switchboard.send"
	spanDeliver = "switchboard.deliver"

	attrControlID    = attribute.Key("hl7.control_id")
	attrMessageType  = attribute.Key("hl7.message_type")
	attrListenerID   = attribute.Key("switchboard.listener_id")
	attrConnectionID = attribute.Key("switchboard.connection_id")
	attrSequence     = attribute.Key("switchboard.sequence")
	attrSequences    = attribute.Key("switchboard.sequences")
	attrFirstSeq     = attribute.Key("switchboard.sequence.first")
	attrLastSeq      = attribute.Key("switchboard.sequence.last")
	attrMessages     = attribute.Key("switchboard.messages")
	attrAckCode      = attribute.Key("switchboard.ack_code")
	attrOutcome      = attribute.Key("switchboard.outcome")
	attrWritten      = attribute.Key("switchboard.written")
	attrCause        = attribute.Key("switchboard.send_failure_cause")
	attrStartSeq     = attribute.Key("switchboard.start_sequence")

	eventWritten = "message.written"
)

// recordingParent returns the RPC span in ctx when it records.
func recordingParent(ctx context.Context) (trace.Span, bool) {
	p := trace.SpanFromContext(ctx)
	return p, p.IsRecording()
}

// startSendSpan starts the span of one Send on c (write, then the wait for
// the acknowledgement); nil when the RPC is not traced.
func startSendSpan(ctx context.Context, c *transport.Conn, payload []byte) trace.Span {
	parent, ok := recordingParent(ctx)
	if !ok {
		return nil
	}
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, attrConnectionID.String(c.ID()))
	if id := c.ListenerID(); id != "" {
		attrs = append(attrs, attrListenerID.String(id))
	}
	if h, err := hl7.ParseHeader(payload); err == nil {
		attrs = append(attrs, attrControlID.String(text(h.ControlID)), attrMessageType.String(text(h.MessageType)))
	}
	_, span := parent.TracerProvider().Tracer(tracerScope).Start(ctx, spanSend,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return span
}

// endSendSpan ends a Send's span with its result.
func endSendSpan(span trace.Span, res transport.SendResult, err error) {
	if span == nil {
		return
	}
	now := time.Now()
	var se *transport.SendError
	switch {
	case err == nil:
		span.SetAttributes(attrOutcome.String(res.Outcome.String()))
		if res.Ack.Code != 0 {
			span.SetAttributes(attrAckCode.String(res.Ack.Code.String()))
			// RoundTrip runs from the end of the write to the reply's
			// arrival, just before now.
			span.AddEvent(eventWritten, trace.WithTimestamp(now.Add(-res.RoundTrip)))
		}
		if res.Outcome == transport.OutcomeRejected {
			span.SetStatus(codes.Error, "rejected: "+res.Ack.Code.String())
		}
	case errors.As(err, &se):
		span.SetAttributes(attrWritten.Bool(se.Written), attrCause.String(se.Cause.String()))
		if se.Ack != nil && se.Ack.Code != 0 {
			span.SetAttributes(attrAckCode.String(se.Ack.Code.String()))
		}
		span.SetStatus(codes.Error, se.Error())
	default:
		span.SetStatus(codes.Error, err.Error())
	}
	span.End(trace.WithTimestamp(now))
}

// receiveSpanStart notes a Receive's start sequence on its RPC span.
func receiveSpanStart(ctx context.Context, next uint64) {
	if p, ok := recordingParent(ctx); ok {
		p.SetAttributes(attrStartSeq.Int64(int64(next)))
	}
}

// traceDelivery makes the span of one Receive response sent from start to
// now: a child of the Receive RPC's span, naming every sequence it carried
// and linked to the inbound span of each message that has one (inbound,
// when set, finds them).
func traceDelivery(ctx context.Context, start time.Time, msgs []*switchboardv1.ReceivedMessage, inbound func(uint64) trace.SpanContext) {
	parent, ok := recordingParent(ctx)
	if !ok || len(msgs) == 0 {
		return
	}
	seqs := make([]int64, len(msgs))
	var links []trace.Link
	for i, m := range msgs {
		seqs[i] = int64(m.GetSequence())
		if inbound == nil {
			continue
		}
		if sc := inbound(m.GetSequence()); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attrSequence.Int64(seqs[i])}})
		}
	}
	_, span := parent.TracerProvider().Tracer(tracerScope).Start(ctx, spanDeliver,
		trace.WithTimestamp(start), trace.WithLinks(links...), trace.WithAttributes(
			attrMessages.Int(len(msgs)), attrFirstSeq.Int64(seqs[0]), attrLastSeq.Int64(seqs[len(seqs)-1]),
			attrSequences.Int64Slice(seqs)))
	span.End()
}
