package service_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/transport"
)

// hl7Message returns a small ADT^A01 with the given control id.
func hl7Message(controlID string) []byte {
	return []byte("MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB|GOOD HEALTH HOSPITAL|20261125101500||ADT^A01^ADT_A01|" +
		controlID + "|P|2.5\rEVN|A01|20261125101500\rPID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR||EVERYMAN^ADAM\r")
}

// checkAck asserts that ack is a positive HL7 acknowledgement of msg.
func checkAck(t *testing.T, msg, ack []byte) {
	t.Helper()
	in, err := hl7.ParseHeader(msg)
	if err != nil {
		t.Fatalf("ParseHeader(sent): %v", err)
	}
	a, err := hl7.ParseAck(ack)
	if err != nil {
		t.Fatalf("ParseAck(%q): %v", ack, err)
	}
	if a.Code != hl7.AA || a.ControlID != in.ControlID {
		t.Errorf("ACK MSA = %s|%s, want AA|%s", a.Code, a.ControlID, in.ControlID)
	}
	if a.Header.SendingApplication != in.ReceivingApplication || a.Header.ReceivingApplication != in.SendingApplication {
		t.Errorf("ACK sender/receiver = %q/%q, want swapped %q/%q", a.Header.SendingApplication,
			a.Header.ReceivingApplication, in.ReceivingApplication, in.SendingApplication)
	}
	if a.Header.ControlID == "" || a.Header.ControlID == in.ControlID {
		t.Errorf("ACK MSH-10 = %q, want a new id", a.Header.ControlID)
	}
}

// TestInboundMLLP is the core promise end to end: a raw TCP peer sends
// messages over MLLP, coalesced, split byte by byte and one of 270 KiB;
// every one gets the right ACK, and Receive yields all of them in order
// with their metadata.
func TestInboundMLLP(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", nil)
	p := dialPeer(t, addr(l))
	big := readFile(t, "oru_r01_embedded_pdf_270k.hl7")

	var sent [][]byte
	// Three coalesced in one write (the peer pipelines; we answer in order).
	var burst []byte
	for i := range 3 {
		m := hl7Message(fmt.Sprintf("BURST-%d", i))
		sent = append(sent, m)
		burst = mllp.AppendFrame(burst, m)
	}
	p.write(burst)
	for _, m := range sent[:3] {
		checkAck(t, m, p.readFrame())
	}
	// Two split byte by byte.
	for i := range 2 {
		m := hl7Message(fmt.Sprintf("SPLIT-%d", i))
		sent = append(sent, m)
		for _, b := range mllp.AppendFrame(nil, m) {
			p.write([]byte{b})
		}
		checkAck(t, m, p.readFrame())
	}
	// A large message in one write, and every sample file.
	sent = append(sent, big)
	p.write(mllp.AppendFrame(nil, big))
	checkAck(t, big, p.readFrame())
	for _, name := range []string{"adt_a01_v25.hl7", "adt_a08_latin1.hl7", "adt_a08_utf8.hl7", "custom_separators.hl7"} {
		m := readFile(t, name)
		sent = append(sent, m)
		p.write(mllp.AppendFrame(nil, m))
		checkAck(t, m, p.readFrame())
	}

	stream, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	var got []*switchboardv1.ReceivedMessage
	for len(got) < len(sent) {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Receive after %d messages: %v", len(got), err)
		}
		got = append(got, resp.GetMessages()...)
	}
	if len(got) != len(sent) {
		t.Fatalf("Receive returned %d messages, want %d", len(got), len(sent))
	}
	for i, m := range got {
		h, _ := hl7.ParseHeader(sent[i])
		if m.GetSequence() != uint64(i+1) || !bytes.Equal(m.GetPayload(), sent[i]) {
			t.Errorf("message %d: seq %d, payload %d bytes; want seq %d, the %d bytes sent", i, m.GetSequence(), len(m.GetPayload()), i+1, len(sent[i]))
		}
		if m.GetListenerId() != "adt" || m.GetConnectionId() == "" || m.GetRemoteAddress() != p.nc.LocalAddr().String() {
			t.Errorf("message %d: listener %q connection %q remote %q", i, m.GetListenerId(), m.GetConnectionId(), m.GetRemoteAddress())
		}
		if m.GetControlId() != h.ControlID || m.GetMessageType() != h.MessageType {
			t.Errorf("message %d: control id %q type %q, want %q %q", i, m.GetControlId(), m.GetMessageType(), h.ControlID, h.MessageType)
		}
		if m.GetReceiveTime().AsTime().IsZero() {
			t.Errorf("message %d: no receive time", i)
		}
	}

	conns, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{ListenerId: "adt"})
	if err != nil || len(conns.GetConnections()) != 1 {
		t.Fatalf("ListConnections = %v, %v; want one", conns, err)
	}
	c := conns.GetConnections()[0]
	if k := c.GetStatus().GetCounters(); k.GetReceivedFrameCount() != int64(len(sent)) || ackCount(k.GetSentAcks(), switchboardv1.AckCode_ACK_CODE_AA) != int64(len(sent)) {
		t.Errorf("counters = %v, want %d frames in and AAs", k, len(sent))
	}
	if c.GetListenerId() != "adt" {
		t.Errorf("origin listener = %q, want adt", c.GetListenerId())
	}
	if c.GetDirection() != switchboardv1.Direction_DIRECTION_INBOUND {
		t.Errorf("direction = %v", c.GetDirection())
	}
}

// TestInboundNegativeAcks: unparsable input still gets an answer (AR built
// from what could be read), is journaled, and the connection stays usable.
func TestInboundNegativeAcks(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "", nil)
	p := dialPeer(t, addr(l))

	for _, tc := range []struct {
		file string
		want hl7.AckCode
	}{
		{"not_hl7.txt", hl7.AR},
		{"missing_control_id.hl7", hl7.AR},
		{"oru_r01_enhanced_mode.hl7", hl7.CA},
		{"adt_a04_v23_no_trigger_version.hl7", hl7.AA},
	} {
		p.write(mllp.AppendFrame(nil, readFile(t, tc.file)))
		a, err := hl7.ParseAck(p.readFrame())
		if err != nil {
			t.Fatalf("%s: ParseAck: %v", tc.file, err)
		}
		if a.Code != tc.want {
			t.Errorf("%s: ACK code %s, want %s (text %q)", tc.file, a.Code, tc.want, a.Text)
		}
	}
	// Junk before the start byte (lenient default) is skipped and counted.
	p.write(append([]byte("garbage\r\n"), mllp.AppendFrame(nil, hl7Message("AFTER-JUNK"))...))
	checkAck(t, hl7Message("AFTER-JUNK"), p.readFrame())
	if got := s.lastSeq(); got != 5 {
		t.Errorf("journal LastSeq = %d, want 5 (negative answers are journaled too)", got)
	}
	conns, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	k := conns.GetConnections()[0].GetStatus().GetCounters()
	if k.GetJunkBytes() != 9 || k.GetInvalidMessageCount() != 2 || ackCount(k.GetSentAcks(), switchboardv1.AckCode_ACK_CODE_AR) != 2 {
		t.Errorf("counters = %v; want 9 junk bytes, 2 invalid messages, 2 AR", k)
	}
}

// TestInboundOversize: a frame over max_frame_bytes is refused with AR and
// the connection closed; nothing is journaled.
func TestInboundOversize(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "", &switchboardv1.ListenerConfig{MaxFrameBytes: 1024})
	p := dialPeer(t, addr(l))
	big := append(hl7Message("TOO-BIG"), bytes.Repeat([]byte("OBX|1|TX|||x\r"), 200)...)
	go p.nc.Write(mllp.AppendFrame(nil, big)) // the server may close before reading it all
	a, err := hl7.ParseAck(p.readFrame())
	if err != nil || a.Code != hl7.AR || a.ControlID != "TOO-BIG" || !strings.Contains(a.Text, "1024-byte frame limit") {
		t.Errorf("answer = %+v, %v; want AR for TOO-BIG naming the 1024-byte limit", a, err)
	}
	p.expectClosed()
	if s.lastSeq() != 0 {
		t.Errorf("journal has %d records, want 0", s.lastSeq())
	}
}

func TestStartListenerRules(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	cfg := &switchboardv1.ListenerConfig{Address: "127.0.0.1:0", MaxConnections: 3}
	first := s.startListener(ctx, "same", cfg)
	again, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "same", Config: cfg})
	if err != nil || addr(again.GetListener()) != addr(first) {
		t.Errorf("repeated StartListener = %v, %v; want the existing listener", again, err)
	}
	other := proto.CloneOf(cfg)
	other.MaxConnections = 4
	_, err = s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "same", Config: other})
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("StartListener with another config: %v, want AlreadyExists", err)
	}
	// One rule for "this address cannot be bound here".
	for name, a := range map[string]string{
		"in use":       addr(first),
		"not local":    "192.0.2.1:2575", // TEST-NET-1, never an address of this host
		"unresolvable": "no-such-host.invalid:2575",
	} {
		_, err = s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{Config: &switchboardv1.ListenerConfig{Address: a}})
		if status.Code(err) != codes.FailedPrecondition || errorInfo(err).GetReason() != "ADDRESS_NOT_BINDABLE" {
			t.Errorf("StartListener on an address %s: %v, want FailedPrecondition ADDRESS_NOT_BINDABLE", name, err)
		}
	}
	for name, c := range map[string]*switchboardv1.ListenerConfig{
		"no address":       {},
		"too many conns":   {Address: "127.0.0.1:0", MaxConnections: 2_000_000},
		"frame too large":  {Address: "127.0.0.1:0", MaxFrameBytes: 65 << 20},
		"commit over LP":   {Address: "127.0.0.1:0", Framing: &switchboardv1.Framing{Kind: &switchboardv1.Framing_LengthPrefix{}}, AckPolicy: &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_MllpCommit{}}},
		"empty delimiter":  {Address: "127.0.0.1:0", Framing: &switchboardv1.Framing{Kind: &switchboardv1.Framing_Delimiter{Delimiter: &switchboardv1.DelimiterFraming{}}}},
		"bad port":         {Address: "127.0.0.1:99999"},
		"no port":          {Address: "localhost"},
		"negative timeout": {Address: "127.0.0.1:0", IdleTimeout: durationpbNew(-time.Second)},
	} {
		_, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{Config: c})
		if code := status.Code(err); code != codes.InvalidArgument || errorInfo(err).GetReason() != "INVALID_ARGUMENT" || badRequestFields(err) == "" {
			t.Errorf("%s: StartListener = %v, want InvalidArgument with ErrorInfo and BadRequest", name, err)
		}
	}
	got, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "same"})
	if err != nil || got.GetListener().GetStatus().GetState() != switchboardv1.ListenerState_LISTENER_STATE_LISTENING {
		t.Errorf("GetListener = %v, %v", got, err)
	}
	list, err := s.client.ListListeners(ctx, &switchboardv1.ListListenersRequest{})
	if err != nil || len(list.GetListeners()) != 1 {
		t.Errorf("ListListeners = %v, %v; want 1", list, err)
	}
	if _, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetListener(nope) = %v, want NotFound", err)
	}
}

// TestMaxConnections: connections over the limit are closed at once and
// counted; the ones inside it keep working.
func TestMaxConnections(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "small", &switchboardv1.ListenerConfig{MaxConnections: 2})
	a, b := dialPeer(t, addr(l)), dialPeer(t, addr(l))
	for _, p := range []*peer{a, b} { // both admitted and working
		p.write(mllp.AppendFrame(nil, hl7Message("IN")))
		checkAck(t, hl7Message("IN"), p.readFrame())
	}
	// The third is reset at once: either the dial itself sees the reset or
	// the first read does.
	if nc, err := net.Dial("tcp", addr(l)); err == nil {
		(&peer{t: t, nc: nc, dec: transport.NewDecoder(nc, mllp)}).expectClosed()
		nc.Close()
	}
	waitFor(t, func() bool {
		got, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "small"})
		return err == nil && got.GetListener().GetStatus().GetRejectedConnectionCount() == 1
	})
	got, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if li := got.GetListener().GetStatus(); li.GetRejectedConnectionCount() != 1 || li.GetOpenConnectionCount() != 2 || li.GetAcceptedConnectionCount() != 2 {
		t.Errorf("listener counters: open %d accepted %d rejected %d; want 2 2 1", li.GetOpenConnectionCount(), li.GetAcceptedConnectionCount(), li.GetRejectedConnectionCount())
	}
}

// TestStopListenerDrains: a frame in progress when StopListener is called is
// completed, journaled and acknowledged; then the connection is closed.
func TestStopListenerDrains(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "drain", nil)
	p := dialPeer(t, addr(l))
	idle := dialPeer(t, addr(l))
	p.write(mllp.AppendFrame(nil, hl7Message("BEFORE")))
	checkAck(t, hl7Message("BEFORE"), p.readFrame())
	frame := mllp.AppendFrame(nil, hl7Message("IN-FLIGHT"))
	before := time.Now()
	p.write(frame[:20])
	waitFor(t, func() bool { return s.lastActivity(ctx, p).After(before) })

	stopped := make(chan *switchboardv1.StopListenerResponse, 1)
	go func() {
		resp, err := s.client.StopListener(ctx, &switchboardv1.StopListenerRequest{ListenerId: "drain", DrainTimeout: durationpbNew(5 * time.Second)})
		if err != nil {
			t.Errorf("StopListener: %v", err)
		}
		stopped <- resp
	}()
	idle.expectClosed() // an idle connection closes at once
	p.write(frame[20:])
	checkAck(t, hl7Message("IN-FLIGHT"), p.readFrame())
	p.expectClosed()
	resp := <-stopped
	if st := resp.GetListener().GetStatus(); st.GetState() != switchboardv1.ListenerState_LISTENER_STATE_STOPPED {
		t.Errorf("state after stop = %v", st.GetState())
	} else if k := st.GetConnectionTotals(); k.GetReceivedFrameCount() != 2 || ackCount(k.GetSentAcks(), switchboardv1.AckCode_ACK_CODE_AA) != 2 {
		t.Errorf("connection totals after stop = %v; want the 2 frames and 2 AAs of its closed connections", k)
	}
	if _, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "drain"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetListener after stop = %v, want NotFound", err)
	}
	if s.lastSeq() != 2 {
		t.Errorf("journal LastSeq = %d, want 2", s.lastSeq())
	}
}

// lastActivity returns when the server last read from or wrote to p's
// connection (any read moves it, even of part of a frame).
func (s *server) lastActivity(ctx context.Context, p *peer) time.Time {
	s.t.Helper()
	conns, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, c := range conns.GetConnections() {
		if c.GetStatus().GetRemoteAddress() == p.nc.LocalAddr().String() {
			return c.GetStatus().GetLastActivityTime().AsTime()
		}
	}
	return time.Time{}
}

// badRequestFields returns the fields a BadRequest detail of err names,
// comma-separated.
func badRequestFields(err error) string {
	var fields []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return strings.Join(fields, ",")
}

func durationpbNew(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
