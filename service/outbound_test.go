package service_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/service"
)

func (s *server) connect(ctx context.Context, id, addr string) *switchboardv1.Connection {
	s.t.Helper()
	resp, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: id, Config: &switchboardv1.ConnectionConfig{Address: addr}})
	if err != nil {
		s.t.Fatalf("Connect(%s): %v", addr, err)
	}
	return resp.GetConnection()
}

// errorInfo returns the ErrorInfo detail of err, or nil.
func errorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	return nil
}

// sendFailure returns the SendFailure detail of err, or nil.
func sendFailure(err error) *switchboardv1.SendFailure {
	for _, d := range status.Convert(err).Details() {
		if sf, ok := d.(*switchboardv1.SendFailure); ok {
			return sf
		}
	}
	return nil
}

// connState returns the state and close reason of connection id.
func (s *server) connState(ctx context.Context, id string) (switchboardv1.ConnectionState, switchboardv1.CloseReason) {
	s.t.Helper()
	resp, err := s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
	if err != nil {
		s.t.Fatalf("GetConnection(%s): %v", id, err)
	}
	st := resp.GetConnection().GetStatus()
	return st.GetState(), st.GetCloseReason()
}

// TestSendOutcomes connects to peers that answer AA, AE, AR, CA, CR, with
// the wrong MSA-2, with an unknown code, or not at all, and checks what
// Send reports: what the peer said and what Switchboard concluded, or, when
// the reply cannot be trusted, an IN_DOUBT error that no client can mistake
// for a delivery, with the connection reset.
func TestSendOutcomes(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	for _, tc := range []struct {
		name    string
		answer  func([]byte) []byte
		outcome switchboardv1.SendOutcome
		code    switchboardv1.AckCode
		// For in-doubt answers: the status code, the cause, and the close
		// reason of the reset connection.
		wantErr codes.Code
		cause   switchboardv1.SendFailureCause
		closed  switchboardv1.CloseReason
	}{
		{name: "AA", answer: ackWith(hl7.AA, ""), outcome: switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED, code: switchboardv1.AckCode_ACK_CODE_AA},
		{name: "AE", answer: ackWith(hl7.AE, ""), outcome: switchboardv1.SendOutcome_SEND_OUTCOME_REJECTED, code: switchboardv1.AckCode_ACK_CODE_AE},
		{name: "AR", answer: ackWith(hl7.AR, ""), outcome: switchboardv1.SendOutcome_SEND_OUTCOME_REJECTED, code: switchboardv1.AckCode_ACK_CODE_AR},
		{name: "CA", answer: ackWith(hl7.CA, ""), outcome: switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED, code: switchboardv1.AckCode_ACK_CODE_CA},
		{name: "CR", answer: ackWith(hl7.CR, ""), outcome: switchboardv1.SendOutcome_SEND_OUTCOME_REJECTED, code: switchboardv1.AckCode_ACK_CODE_CR},
		{name: "wrong MSA-2", answer: ackWith(hl7.AA, "SOMETHING-ELSE"), wantErr: codes.Unknown,
			cause: switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_MISMATCH, closed: switchboardv1.CloseReason_CLOSE_REASON_ACK_MISMATCH},
		{name: "unknown code", answer: ackWith("ZZ", ""), wantErr: codes.Unknown,
			cause: switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_UNREADABLE, closed: switchboardv1.CloseReason_CLOSE_REASON_ACK_MISMATCH},
		{name: "silent", answer: func([]byte) []byte { return nil }, wantErr: codes.DeadlineExceeded,
			cause: switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_TIMEOUT, closed: switchboardv1.CloseReason_CLOSE_REASON_ACK_TIMEOUT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := startTestPeer(t, tc.answer)
			id := "out-" + strings.ReplaceAll(tc.name, " ", "-")
			s.connect(ctx, id, peer.addr())
			controlID := "MSG-" + strings.ReplaceAll(tc.name, " ", "-")
			msg := hl7Message(controlID)
			resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: id, Payload: msg, AckTimeout: durationpbNew(300 * time.Millisecond)})
			if status.Code(err) != tc.wantErr {
				t.Fatalf("Send = %v, %v; want code %v", resp, err, tc.wantErr)
			}
			if err != nil {
				ei, sf := errorInfo(err), sendFailure(err)
				if ei.GetReason() != "IN_DOUBT" || ei.GetDomain() != service.ErrorDomain || ei.GetMetadata()["written"] != "true" || ei.GetMetadata()["control_id"] != controlID {
					t.Errorf("ErrorInfo = %v; want IN_DOUBT, written, control id", ei)
				}
				if !sf.GetWritten() || sf.GetCause() != tc.cause || sf.GetSentControlId() != controlID || sf.GetConnectionId() != id {
					t.Errorf("SendFailure = %v; want written, cause %v", sf, tc.cause)
				}
				if tc.cause == switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_MISMATCH && sf.GetAck().GetControlId() != "SOMETHING-ELSE" {
					t.Errorf("SendFailure ack = %v; want the untrusted reply", sf.GetAck())
				}
			} else {
				if resp.GetOutcome() != tc.outcome || resp.GetAck().GetCode() != tc.code {
					t.Errorf("outcome %v code %v; want %v %v", resp.GetOutcome(), resp.GetAck().GetCode(), tc.outcome, tc.code)
				}
				if resp.GetSentControlId() != controlID || resp.GetAck().GetControlId() != controlID || len(resp.GetAck().GetPayload()) == 0 ||
					resp.GetAck().GetText() != "peer says "+tc.name {
					t.Errorf("response = %v", resp)
				}
			}
			// The peer got the message byte for byte.
			if got := <-peer.received; string(got) != string(msg) {
				t.Errorf("peer received %q", got)
			}
			// After a reset the session is closed, so a late ACK can never
			// be credited to another message; the connection backs off
			// before it reconnects, showing why the last session closed.
			state, reason := s.connState(ctx, id)
			if tc.wantErr != codes.OK {
				if state != switchboardv1.ConnectionState_CONNECTION_STATE_BACKING_OFF || reason != tc.closed {
					t.Errorf("connection after an untrusted reply: %v %v; want backing off, closed %v", state, reason, tc.closed)
				}
			} else if state != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN {
				t.Errorf("connection after a trusted ACK: %v %v", state, reason)
			}
		})
	}
}

// TestSendLateAckNotCredited: a peer that answers the first message too late
// must never have that answer credited to the second message.
func TestSendLateAckNotCredited(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	release := make(chan struct{})
	peer := startTestPeer(t, func(msg []byte) []byte {
		h, _ := hl7.ParseHeader(msg)
		if h.ControlID == "FIRST" {
			<-release
		}
		return ackWith(hl7.AA, "")(msg)
	})
	s.connect(ctx, "late", peer.addr())
	_, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "late", Payload: hl7Message("FIRST"), AckTimeout: durationpbNew(200 * time.Millisecond)})
	if status.Code(err) != codes.DeadlineExceeded || errorInfo(err).GetReason() != "IN_DOUBT" {
		t.Fatalf("first Send = %v, want DeadlineExceeded IN_DOUBT", err)
	}
	close(release)
	_, err = s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "late", Payload: hl7Message("SECOND"), FailFast: true})
	if status.Code(err) != codes.Unavailable || errorInfo(err).GetReason() != "NOT_SENT" ||
		sendFailure(err).GetCause() != switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN {
		t.Fatalf("fail-fast Send on the reset connection = %v, want Unavailable NOT_SENT (not open)", err)
	}
	// Without fail_fast the Send waits for the new session, which gets its
	// own ACK.
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "late", Payload: hl7Message("SECOND")})
	if err != nil || resp.GetAck().GetControlId() != "SECOND" || resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED {
		t.Fatalf("Send on the reconnecting connection = %v, %v", resp, err)
	}
}

// TestSendOneInFlight: concurrent Sends on one connection are written one at
// a time, each waiting for its own acknowledgement, and each call gets the
// acknowledgement of its own message. Sequential Sends reach the peer in
// order. A Send queued behind a slow one honours its own deadline and is
// reported NOT_SENT. (The server cannot see the order of calls that are
// concurrent on the client, so none is asserted for them.)
func TestSendOneInFlight(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	var mu sync.Mutex
	inFlight, maxInFlight := 0, 0
	peer := startTestPeer(t, func(msg []byte) []byte {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return ackWith(hl7.AA, "")(msg)
	})
	s.connect(ctx, "one", peer.addr())

	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("C-%d", i)
			resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "one", Payload: hl7Message(id)})
			if err != nil || resp.GetAck().GetControlId() != id {
				t.Errorf("Send %s = %v, %v; want its own ACK", id, resp, err)
			}
		})
	}
	wg.Wait()
	for range n {
		<-peer.received
	}
	if maxInFlight != 1 {
		t.Errorf("max in flight = %d, want 1", maxInFlight)
	}
	for i := range n {
		if _, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "one", Payload: hl7Message(fmt.Sprintf("S-%d", i))}); err != nil {
			t.Fatalf("sequential Send %d: %v", i, err)
		}
	}
	for i := range n {
		if h, _ := hl7.ParseHeader(<-peer.received); h.ControlID != fmt.Sprintf("S-%d", i) {
			t.Errorf("peer got %s in position %d", h.ControlID, i)
		}
	}

	// A Send queued behind a slow one times out unsent.
	block := make(chan struct{})
	slow := startTestPeer(t, func(msg []byte) []byte { <-block; return ackWith(hl7.AA, "")(msg) })
	s.connect(ctx, "slow", slow.addr())
	first := make(chan error, 1)
	go func() {
		_, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "slow", Payload: hl7Message("SLOW")})
		first <- err
	}()
	<-slow.received
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := s.client.Send(qctx, &switchboardv1.SendRequest{ConnectionId: "slow", Payload: hl7Message("QUEUED")})
	if sf := sendFailure(err); status.Code(err) != codes.DeadlineExceeded || errorInfo(err).GetReason() != "NOT_SENT" ||
		sf.GetWritten() || sf.GetCause() != switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_QUEUE_TIMEOUT {
		t.Errorf("queued Send = %v (%v), want DeadlineExceeded NOT_SENT queue timeout", err, sf)
	}
	close(block)
	if err := <-first; err != nil {
		t.Errorf("slow Send = %v", err)
	}
}

// TestSendOnInboundConnection: we can send to a peer that connected to us,
// and its ACK comes back while it can still send us messages.
func TestSendOnInboundConnection(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "in", nil)
	p := dialPeer(t, addr(l))
	p.write(mllp.AppendFrame(nil, hl7Message("HELLO")))
	checkAck(t, hl7Message("HELLO"), p.readFrame())
	conns, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{Direction: switchboardv1.Direction_DIRECTION_INBOUND})
	if err != nil || len(conns.GetConnections()) != 1 {
		t.Fatalf("ListConnections = %v, %v", conns, err)
	}
	id := conns.GetConnections()[0].GetConnectionId()

	type result struct {
		resp *switchboardv1.SendResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: id, Payload: hl7Message("TO-PEER")})
		done <- result{resp, err}
	}()
	got := p.readFrame()
	// Before answering, the peer sends a message of its own: it is still
	// journaled and acknowledged, not mistaken for the reply.
	p.write(mllp.AppendFrame(nil, hl7Message("MEANWHILE")))
	checkAck(t, hl7Message("MEANWHILE"), p.readFrame())
	h, _ := hl7.ParseHeader(got)
	p.write(mllp.AppendFrame(nil, hl7.AppendAck(nil, h, hl7.AckRequest{Code: hl7.AA, ControlID: "P-1", Time: time.Now()})))
	r := <-done
	if r.err != nil || r.resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED || r.resp.GetAck().GetControlId() != "TO-PEER" {
		t.Fatalf("Send on inbound = %v, %v", r.resp, r.err)
	}
	if s.lastSeq() != 2 {
		t.Errorf("journal LastSeq = %d, want 2", s.lastSeq())
	}
}

func TestConnectErrors(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())

	// Refused: a port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, err = s.client.Connect(ctx, &switchboardv1.ConnectRequest{Config: &switchboardv1.ConnectionConfig{Address: closed}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "refused") || errorInfo(err).GetReason() != "CONNECT_FAILED" {
		t.Errorf("Connect to a closed port = %v, want Unavailable (refused)", err)
	}

	// Unknown host.
	_, err = s.client.Connect(ctx, &switchboardv1.ConnectRequest{Config: &switchboardv1.ConnectionConfig{
		Address: "no-such-host.invalid:2575", ConnectTimeout: durationpbNew(2 * time.Second)}})
	if c := status.Code(err); (c != codes.Unavailable && c != codes.DeadlineExceeded) || !strings.Contains(err.Error(), "no-such-host.invalid") {
		t.Errorf("Connect to an unknown host = %v, want Unavailable or DeadlineExceeded naming it", err)
	}

	// Timeout: a listener whose accept queue is full drops further SYNs.
	full := fullListener(t)
	_, err = s.client.Connect(ctx, &switchboardv1.ConnectRequest{Config: &switchboardv1.ConnectionConfig{
		Address: full, ConnectTimeout: durationpbNew(200 * time.Millisecond)}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Connect to a full listener = %v, want DeadlineExceeded", err)
	}

	for _, bad := range []string{"127.0.0.1", "127.0.0.1:0", "127.0.0.1:http-alt", "127.0.0.1:70000"} {
		_, err = s.client.Connect(ctx, &switchboardv1.ConnectRequest{Config: &switchboardv1.ConnectionConfig{Address: bad}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), bad) {
			t.Errorf("Connect to %q = %v, want InvalidArgument naming it", bad, err)
		}
	}

	if _, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "missing", Payload: []byte("x")}); status.Code(err) != codes.NotFound || errorInfo(err).GetReason() != "NOT_FOUND" {
		t.Errorf("Send on a missing connection = %v, want NotFound", err)
	}
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	s.connect(ctx, "x", peer.addr())
	if _, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "x", Payload: []byte("not hl7")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Send of non-HL7 under the HL7 policy = %v, want InvalidArgument", err)
	}
	if _, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "x", Payload: append(hl7Message("FS"), 0x1c)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Send with 0x1C in the payload = %v, want InvalidArgument", err)
	}
	if _, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "x", Config: &switchboardv1.ConnectionConfig{Address: closed}}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("Connect with a used id and another config = %v, want AlreadyExists", err)
	}
	if got := s.connect(ctx, "x", peer.addr()); got.GetConnectionId() != "x" {
		t.Errorf("repeated Connect = %v", got)
	}
	if _, err := s.client.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: "x"}); err != nil {
		t.Errorf("Disconnect = %v", err)
	}
	if _, err := s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: "x"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetConnection after Disconnect = %v, want NotFound", err)
	}
}
