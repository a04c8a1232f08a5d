package service_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
)

// decidingListener starts a listener whose ACKs consumer "decider" decides.
func (s *server) decidingListener(ctx context.Context, id string, ca *switchboardv1.ConsumerAck) *switchboardv1.Listener {
	if ca.Consumer == "" {
		ca.Consumer = "decider"
	}
	return s.startListener(ctx, id, &switchboardv1.ListenerConfig{ConsumerAck: ca})
}

// decidingSetup starts a server with a listener whose ACKs consumer
// "decider" decides (defaults), attaches decider, and connects a peer.
func decidingSetup(t *testing.T, ctx context.Context, id string) (*server, switchboardv1.SwitchboardService_ReceiveClient, *peer) {
	t.Helper()
	s := startServer(t, t.TempDir())
	l := s.decidingListener(ctx, id, &switchboardv1.ConsumerAck{})
	stream := s.consume(ctx, &switchboardv1.ReceiveRequest{Consumer: "decider"})
	return s, stream, dialPeer(t, addr(l))
}

// parseAck reads an ACK, failing the test when it is not one.
func parseAck(t *testing.T, b []byte) hl7.Ack {
	t.Helper()
	a, err := hl7.ParseAck(b)
	if err != nil {
		t.Fatalf("ParseAck(%q): %v", b, err)
	}
	return a
}

// TestAnswerDecides: the deciding consumer's answer is the peer's ACK, and
// it is recorded with the message.
func TestAnswerDecides(t *testing.T) {
	ctx := testCtx(t)
	s, stream, p := decidingSetup(t, ctx, "adt")
	msg := hl7Message("DECIDE-1")
	p.write(mllp.AppendFrame(nil, msg))
	m := receive(t, stream, 1)[0]
	if m.GetAnswerDeadline() == nil || !bytes.Equal(m.GetPayload(), msg) {
		t.Fatalf("delivered %v; want the message with an answer_deadline", m)
	}
	resp, err := s.client.AnswerMessage(ctx, &switchboardv1.AnswerMessageRequest{Consumer: "decider", Sequence: m.GetSequence(),
		Answer: &switchboardv1.AnswerMessageRequest_Ack{Ack: &switchboardv1.AckAnswer{
			Code: switchboardv1.AckCode_ACK_CODE_AE, Text: "PID-3 unknown", ErrorCode: "204", ErrorLocation: "PID^1^3"}}})
	if err != nil {
		t.Fatalf("AnswerMessage: %v", err)
	}
	raw := p.readFrame()
	a := parseAck(t, raw)
	if a.Code != hl7.AE || a.Text != "PID-3 unknown" || a.ControlID != "DECIDE-1" {
		t.Fatalf("peer got %q; want AE 'PID-3 unknown' for DECIDE-1", raw)
	}
	if !bytes.Contains(raw, []byte("\rERR|")) || !bytes.Contains(raw, []byte("204")) {
		t.Errorf("ACK %q has no ERR segment with code 204", raw)
	}
	if !resp.GetWritten() || !bytes.Equal(resp.GetAnswer().GetSent(), raw) || resp.GetAnswer().GetConsumer() != "decider" {
		t.Errorf("AnswerMessage = %v; want written, sent = what the peer got", resp)
	}
	got := s.waitAnswer(ctx, m.GetSequence())
	if got.GetCode() != switchboardv1.AckCode_ACK_CODE_AE || got.GetFallback() || !got.GetWritten() || !bytes.Equal(got.GetSent(), raw) {
		t.Errorf("GetMessage answer = %v; want the AE, written", got)
	}
	// ListMessages shows it too; the bytes sent only with include_payloads.
	for _, payloads := range []bool{false, true} {
		list, err := s.client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{ListenerId: "adt", IncludePayloads: payloads})
		if err != nil || len(list.GetMessages()) != 1 {
			t.Fatalf("ListMessages = %v, %v", list, err)
		}
		a := list.GetMessages()[0].GetAnswer()
		if a.GetCode() != switchboardv1.AckCode_ACK_CODE_AE || bytes.Equal(a.GetSent(), raw) != payloads {
			t.Errorf("ListMessages (include_payloads %v) answer = %v; want the AE, sent bytes only with payloads", payloads, a)
		}
	}
	// Answering acked it for the consumer.
	if n := s.consumer(ctx, "decider").GetStatus().GetPendingCount(); n != 0 {
		t.Errorf("pending_count %d after the answer; want 0", n)
	}
}

// TestAnswerFallback: with no stream attached the fallback goes at once;
// with one that does not answer in time, after the timeout, and its late
// answer is recorded, never written.
func TestAnswerFallback(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.decidingListener(ctx, "adt", &switchboardv1.ConsumerAck{
		Timeout: durationpb.New(200 * time.Millisecond), FallbackCode: switchboardv1.AckCode_ACK_CODE_AR, FallbackText: "try later"})
	p := dialPeer(t, addr(l))
	p.write(mllp.AppendFrame(nil, hl7Message("ALONE-1")))
	if a := parseAck(t, p.readFrame()); a.Code != hl7.AR || a.Text != "try later" || a.ControlID != "ALONE-1" {
		t.Fatalf("with no consumer: %+v; want the AR fallback", a)
	}
	if got := s.waitAnswer(ctx, s.lastSeq()); !got.GetFallback() || got.GetCode() != switchboardv1.AckCode_ACK_CODE_AR {
		t.Errorf("GetMessage answer = %v; want the fallback", got)
	}

	stream := s.consume(ctx, &switchboardv1.ReceiveRequest{Consumer: "decider"})
	p.write(mllp.AppendFrame(nil, hl7Message("SLOW-1")))
	// Delivered twice: the message the fallback answered, then this one.
	ms := receive(t, stream, 2)
	m := ms[1]
	if a := parseAck(t, p.readFrame()); a.Code != hl7.AR || a.ControlID != "SLOW-1" {
		t.Fatalf("with a silent consumer: %+v; want the AR fallback", a)
	}
	resp, err := s.client.AnswerMessage(ctx, &switchboardv1.AnswerMessageRequest{Consumer: "decider", Sequence: m.GetSequence(),
		Answer: &switchboardv1.AnswerMessageRequest_Ack{Ack: &switchboardv1.AckAnswer{Code: switchboardv1.AckCode_ACK_CODE_AA}}})
	if err != nil {
		t.Fatalf("late AnswerMessage: %v", err)
	}
	if resp.GetWritten() || len(resp.GetAnswer().GetLateCodes()) != 1 || resp.GetAnswer().GetLateCodes()[0] != switchboardv1.AckCode_ACK_CODE_AA {
		t.Errorf("late AnswerMessage = %v; want not written, AA recorded as late", resp)
	}
	if got := s.waitAnswer(ctx, m.GetSequence()); !got.GetFallback() || len(got.GetLateCodes()) != 1 {
		t.Errorf("GetMessage answer = %v; want the fallback and the late AA", got)
	}
}

// TestAnswerPayload: a complete response reaches the peer byte for byte.
func TestAnswerPayload(t *testing.T) {
	ctx := testCtx(t)
	s, stream, p := decidingSetup(t, ctx, "qry")
	p.write(mllp.AppendFrame(nil, hl7Message("Q-1")))
	m := receive(t, stream, 1)[0]
	rsp := []byte("MSH|^~\\&|LAB|GOOD HEALTH HOSPITAL|ADT1|GOOD HEALTH HOSPITAL|20261125101501||RSP^K22^RSP_K21|R-1|P|2.5\r" +
		"MSA|AA|Q-1\rQAK|Q-1|OK\rPID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR||EVERYMAN^ADAM\r")
	if _, err := s.client.AnswerMessage(ctx, &switchboardv1.AnswerMessageRequest{Consumer: "decider", Sequence: m.GetSequence(),
		Answer: &switchboardv1.AnswerMessageRequest_Payload{Payload: rsp}}); err != nil {
		t.Fatalf("AnswerMessage: %v", err)
	}
	if got := p.readFrame(); !bytes.Equal(got, rsp) {
		t.Fatalf("peer got %q; want %q byte for byte", got, rsp)
	}
}

// TestAnswerEnhanced: in enhanced mode the commit ACK goes at once and the
// answer follows as an application ACK of its own.
func TestAnswerEnhanced(t *testing.T) {
	ctx := testCtx(t)
	s, stream, p := decidingSetup(t, ctx, "adt")
	msg := bytes.Replace(hl7Message("ENH-1"), []byte("|P|2.5\r"), []byte("|P|2.5|||AL|AL\r"), 1)
	p.write(mllp.AppendFrame(nil, msg))
	if a := parseAck(t, p.readFrame()); a.Code != hl7.CA || a.ControlID != "ENH-1" {
		t.Fatalf("first frame %+v; want the commit ACK CA at once", a)
	}
	m := receive(t, stream, 1)[0]
	if _, err := s.client.AnswerMessage(ctx, &switchboardv1.AnswerMessageRequest{Consumer: "decider", Sequence: m.GetSequence(),
		Answer: &switchboardv1.AnswerMessageRequest_Ack{Ack: &switchboardv1.AckAnswer{Code: switchboardv1.AckCode_ACK_CODE_AA}}}); err != nil {
		t.Fatalf("AnswerMessage: %v", err)
	}
	if a := parseAck(t, p.readFrame()); a.Code != hl7.AA || a.ControlID != "ENH-1" {
		t.Fatalf("second frame %+v; want the application ACK AA", a)
	}
	if got := s.waitAnswer(ctx, m.GetSequence()); got.GetCode() != switchboardv1.AckCode_ACK_CODE_AA || !got.GetWritten() {
		t.Errorf("GetMessage answer = %v; want the AA, written", got)
	}
}
