package service_test

import (
	"bytes"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/service"
)

// latin1 reads b as ISO-8859-1: every byte is the code point of the same
// value. It is what the API promises for string fields whose bytes are not
// UTF-8.
func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// apiText is what the API makes of header bytes: themselves when they are
// UTF-8, their ISO-8859-1 reading otherwise, cut to service.MaxTextBytes at
// a character boundary.
func apiText(b []byte) string {
	s := string(b)
	if !utf8.Valid(b) {
		s = latin1(b)
	}
	for len(s) > service.MaxTextBytes {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// hl7MessageWith returns a small ADT whose MSH-9 and MSH-10 are the given
// bytes, verbatim.
func hl7MessageWith(messageType, controlID []byte) []byte {
	var b []byte
	b = append(b, "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB|GOOD HEALTH HOSPITAL|20261125101500||"...)
	b = append(b, messageType...)
	b = append(b, '|')
	b = append(b, controlID...)
	b = append(b, "|P|2.5\rEVN|A01|20261125101500\rPID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR||EVERYMAN^ADAM\r"...)
	return b
}

// checkValidUTF8 fails the test for every string field of m, at any depth,
// that is not valid UTF-8, naming it. (A gRPC client refuses such a message
// as a whole; this says which field it was.)
func checkValidUTF8(t *testing.T, what string, m proto.Message) {
	t.Helper()
	var walk func(path string, m protoreflect.Message)
	walk = func(path string, m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			name := path + "." + string(fd.Name())
			switch {
			case fd.IsList() && fd.Kind() == protoreflect.StringKind:
				for i := range v.List().Len() {
					if s := v.List().Get(i).String(); !utf8.ValidString(s) {
						t.Errorf("%s: %s[%d] = %q is not UTF-8", what, name, i, s)
					}
				}
			case fd.IsList() && fd.Message() != nil:
				for i := range v.List().Len() {
					walk(name+"["+strconv.Itoa(i)+"]", v.List().Get(i).Message())
				}
			case fd.IsMap():
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					if !utf8.ValidString(k.String()) || (fd.MapValue().Kind() == protoreflect.StringKind && !utf8.ValidString(mv.String())) {
						t.Errorf("%s: %s[%q] = %q is not UTF-8", what, name, k.String(), mv.String())
					}
					return true
				})
			case fd.Kind() == protoreflect.StringKind:
				if !utf8.ValidString(v.String()) {
					t.Errorf("%s: %s = %q is not UTF-8", what, name, v.String())
				}
			case fd.Message() != nil:
				walk(name, v.Message())
			}
			return true
		})
	}
	walk("", m.ProtoReflect())
}

// TestInboundPoisonHeaders is issue F1 end to end: messages whose MSH-9 and
// MSH-10 hold bytes that are not UTF-8 are acknowledged AA, stored, and
// then delivered by Receive in the same batch as the valid messages before
// and after them, with every string field valid UTF-8 (the ISO-8859-1
// reading of the bytes) and the payload byte for byte. Before the fix, the
// whole batch failed with INTERNAL on every retry.
func TestInboundPoisonHeaders(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", nil)
	p := dialPeer(t, addr(l))

	headers := []struct {
		name                   string
		messageType, controlID []byte
	}{
		{"valid before", []byte("ADT^A01^ADT_A01"), []byte("BEFORE")},
		{"Latin-1", []byte("ADT^A08^M\xdcLLER"), []byte("M\xfcller-\xe9\xe8")},
		{"lone continuation bytes", []byte("ADT^\x80\xbf"), []byte("\x80\x81\xbf")},
		{"0xFF", []byte("\xff\xfe"), []byte("ID-\xff")},
		{"truncated sequence", []byte("ADT^A01\xc3"), []byte("\xe2\x82")},
		{"overlong and surrogate", []byte("\xc0\xaf"), []byte("\xed\xa0\x80")},
		{"valid UTF-8", []byte("ADT^A08"), []byte("M\u00fcller-\u20ac")},
		{"valid after", []byte("ADT^A01^ADT_A01"), []byte("AFTER")},
	}
	sent := make([][]byte, len(headers))
	for i, h := range headers {
		sent[i] = hl7MessageWith(h.messageType, h.controlID)
		p.write(mllp.AppendFrame(nil, sent[i]))
		checkAck(t, sent[i], p.readFrame())
	}

	// Everything is stored before Receive starts, so the first response is
	// one batch holding all of them: the batch a poison record used to sink.
	stream, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	got := resp.GetMessages()
	if len(got) != len(sent) {
		t.Fatalf("first Receive batch holds %d messages, want all %d", len(got), len(sent))
	}
	for i, m := range got {
		h := headers[i]
		checkValidUTF8(t, h.name, m)
		if m.GetSequence() != uint64(i+1) || !bytes.Equal(m.GetPayload(), sent[i]) {
			t.Errorf("%s: seq %d, payload %q; want seq %d, the bytes sent", h.name, m.GetSequence(), m.GetPayload(), i+1)
		}
		if m.GetMessageType() != apiText(h.messageType) || m.GetControlId() != apiText(h.controlID) {
			t.Errorf("%s: message_type %q control_id %q; want %q %q", h.name, m.GetMessageType(), m.GetControlId(),
				apiText(h.messageType), apiText(h.controlID))
		}
	}
	if got[1].GetControlId() != "M\u00fcller-\u00e9\u00e8" {
		t.Errorf("Latin-1 control id reads %q, want M\u00fcller-\u00e9\u00e8", got[1].GetControlId())
	}
}

// TestSendPoisonControlID: a Send whose message has a Latin-1 MSH-10, to a
// peer whose acknowledgement carries Latin-1 in MSA-2 and MSA-3, gets a
// valid response (the ISO-8859-1 reading in every string, the reply byte for
// byte); when the outcome is in doubt, the error still carries its
// ErrorInfo and SendFailure details, valid UTF-8 throughout.
func TestSendPoisonControlID(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	controlID := []byte("M\xfcLLER-\xff")
	ackText := []byte("Empf\xe4nger gel\xf6scht")
	wrongID := []byte("WR\xd6NG")
	msg := hl7MessageWith([]byte("ADT^A08"), controlID)
	answer := func(code hl7.AckCode, msa2 []byte) func([]byte) []byte {
		return func(m []byte) []byte {
			h, _ := hl7.ParseHeader(m)
			if msa2 != nil {
				h.ControlID = string(msa2)
			}
			return hl7.AppendAck(nil, h, hl7.AckRequest{Code: code, ControlID: "PEER-\xe9", Time: time.Now(), Text: string(ackText)})
		}
	}
	for i, tc := range []struct {
		name    string
		answer  func([]byte) []byte
		outcome switchboardv1.SendOutcome
		wantErr codes.Code
		ackID   []byte // MSA-2 of the reply the response or error carries
	}{
		{name: "AA", answer: answer(hl7.AA, nil), outcome: switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED, ackID: controlID},
		{name: "AE", answer: answer(hl7.AE, nil), outcome: switchboardv1.SendOutcome_SEND_OUTCOME_REJECTED, ackID: controlID},
		{name: "wrong MSA-2", answer: answer(hl7.AA, wrongID), wantErr: codes.Unknown, ackID: wrongID},
		{name: "silent", answer: func([]byte) []byte { return nil }, wantErr: codes.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			replies := make(chan []byte, 1)
			peer := startTestPeer(t, func(m []byte) []byte {
				r := tc.answer(m)
				replies <- r
				return r
			})
			id := "latin1-" + strconv.Itoa(i)
			s.connect(ctx, id, peer.addr())
			resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: id, Payload: msg, AckTimeout: durationpbNew(300 * time.Millisecond)})
			if got := <-peer.received; !bytes.Equal(got, msg) {
				t.Errorf("peer received %q, want the message byte for byte", got)
			}
			if status.Code(err) != tc.wantErr {
				t.Fatalf("Send = %v, %v; want code %v", resp, err, tc.wantErr)
			}
			var ack *switchboardv1.PeerAck
			if err == nil {
				checkValidUTF8(t, "SendResponse", resp)
				if resp.GetOutcome() != tc.outcome || resp.GetSentControlId() != latin1(controlID) {
					t.Errorf("response = %v; want %v for %q", resp, tc.outcome, latin1(controlID))
				}
				ack = resp.GetAck()
			} else {
				if msg := status.Convert(err).Message(); !utf8.ValidString(msg) {
					t.Errorf("status message %q is not UTF-8", msg)
				}
				ei, sf := errorInfo(err), sendFailure(err)
				checkValidUTF8(t, "ErrorInfo", ei)
				checkValidUTF8(t, "SendFailure", sf)
				if ei.GetReason() != "IN_DOUBT" || ei.GetMetadata()["control_id"] != latin1(controlID) {
					t.Errorf("ErrorInfo = %v; want IN_DOUBT with control_id %q", ei, latin1(controlID))
				}
				if !sf.GetWritten() || sf.GetSentControlId() != latin1(controlID) || sf.GetConnectionId() != id {
					t.Errorf("SendFailure = %v; want written, sent control id %q", sf, latin1(controlID))
				}
				ack = sf.GetAck()
			}
			if tc.ackID == nil {
				return
			}
			if ack.GetControlId() != latin1(tc.ackID) || ack.GetText() != latin1(ackText) {
				t.Errorf("ack control id %q text %q; want %q %q", ack.GetControlId(), ack.GetText(), latin1(tc.ackID), latin1(ackText))
			}
			if want := <-replies; !bytes.Equal(ack.GetPayload(), want) {
				t.Errorf("ack payload %q, want the reply byte for byte: %q", ack.GetPayload(), want)
			}
		})
	}
}
