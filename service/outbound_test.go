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

// TestSendOutcomes connects to peers that answer AA, AE, AR, CA, with the
// wrong MSA-2, with garbage, or not at all, and checks what Send reports.
func TestSendOutcomes(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	for _, tc := range []struct {
		name    string
		answer  func([]byte) []byte
		want    switchboardv1.AckOutcome
		reset   bool
		wantErr codes.Code
	}{
		{"AA", ackWith(hl7.AA, ""), switchboardv1.AckOutcome_ACK_OUTCOME_ACCEPTED, false, codes.OK},
		{"AE", ackWith(hl7.AE, ""), switchboardv1.AckOutcome_ACK_OUTCOME_ERROR, false, codes.OK},
		{"AR", ackWith(hl7.AR, ""), switchboardv1.AckOutcome_ACK_OUTCOME_REJECTED, false, codes.OK},
		{"CA", ackWith(hl7.CA, ""), switchboardv1.AckOutcome_ACK_OUTCOME_COMMIT_ACCEPTED, false, codes.OK},
		{"CR", ackWith(hl7.CR, ""), switchboardv1.AckOutcome_ACK_OUTCOME_COMMIT_REJECTED, false, codes.OK},
		{"wrong MSA-2", ackWith(hl7.AA, "SOMETHING-ELSE"), switchboardv1.AckOutcome_ACK_OUTCOME_MISMATCH, true, codes.OK},
		{"unknown code", ackWith("ZZ", ""), switchboardv1.AckOutcome_ACK_OUTCOME_INVALID, true, codes.OK},
		{"silent", func([]byte) []byte { return nil }, 0, true, codes.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := startTestPeer(t, tc.answer)
			id := "out-" + strings.ReplaceAll(tc.name, " ", "-")
			s.connect(ctx, id, peer.addr())
			msg := hl7Message("MSG-" + strings.ReplaceAll(tc.name, " ", "-"))
			resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: id, Payload: msg, AckTimeout: durationpbNew(300 * time.Millisecond)})
			if status.Code(err) != tc.wantErr {
				t.Fatalf("Send = %v, %v; want code %v", resp, err, tc.wantErr)
			}
			if err != nil {
				ei := errorInfo(err)
				if ei == nil || ei.GetReason() != service.ReasonAckTimeout || ei.GetMetadata()["written"] != "true" || ei.GetMetadata()["control_id"] != "MSG-silent" {
					t.Errorf("error details = %v; want ACK_TIMEOUT, written, control id", ei)
				}
			} else {
				if resp.GetOutcome() != tc.want || resp.GetConnectionReset() != tc.reset {
					t.Errorf("outcome %v reset %v; want %v reset %v", resp.GetOutcome(), resp.GetConnectionReset(), tc.want, tc.reset)
				}
				if resp.GetSentControlId() != "MSG-"+strings.ReplaceAll(tc.name, " ", "-") || len(resp.GetAckPayload()) == 0 {
					t.Errorf("response = %v", resp)
				}
			}
			// The peer got the message byte for byte.
			if got := <-peer.received; string(got) != string(msg) {
				t.Errorf("peer received %q", got)
			}
			// After a reset the connection is gone, so a late ACK can never be
			// credited to another message.
			_, err = s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
			if tc.reset {
				waitFor(t, func() bool {
					_, err := s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
					return status.Code(err) == codes.NotFound
				})
			} else if err != nil {
				t.Errorf("GetConnection after a trusted ACK: %v", err)
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
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("first Send = %v, want DeadlineExceeded", err)
	}
	close(release)
	_, err = s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "late", Payload: hl7Message("SECOND")})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("second Send on the reset connection = %v, want NotFound", err)
	}
	// A fresh connection works and gets its own ACK.
	s.connect(ctx, "late", peer.addr())
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "late", Payload: hl7Message("SECOND")})
	if err != nil || resp.GetAckControlId() != "SECOND" || resp.GetOutcome() != switchboardv1.AckOutcome_ACK_OUTCOME_ACCEPTED {
		t.Fatalf("Send on a new connection = %v, %v", resp, err)
	}
}

// TestSendFIFO: concurrent Sends on one connection go out one at a time in
// the order they arrived, and a queued Send honours its own deadline.
func TestSendFIFO(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	var mu sync.Mutex
	inFlight, maxInFlight := 0, 0
	peer := startTestPeer(t, func(msg []byte) []byte {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return ackWith(hl7.AA, "")(msg)
	})
	s.connect(ctx, "fifo", peer.addr())

	const n = 8
	var wg sync.WaitGroup
	started := make(chan struct{})
	for i := range n {
		// Start them in a known order: each waits until the previous one
		// is queued (has been issued) before issuing its own call.
		prev := started
		next := make(chan struct{})
		started = next
		wg.Go(func() {
			if i > 0 {
				<-prev
			}
			go func() { time.Sleep(5 * time.Millisecond); close(next) }()
			resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "fifo", Payload: hl7Message(fmt.Sprintf("Q-%d", i))})
			if err != nil || resp.GetAckControlId() != fmt.Sprintf("Q-%d", i) {
				t.Errorf("Send %d = %v, %v", i, resp, err)
			}
		})
	}
	wg.Wait()
	for i := range n {
		h, _ := hl7.ParseHeader(<-peer.received)
		if h.ControlID != fmt.Sprintf("Q-%d", i) {
			t.Errorf("peer got %s in position %d", h.ControlID, i)
		}
	}
	if maxInFlight != 1 {
		t.Errorf("max in flight = %d, want 1", maxInFlight)
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
	if ei := errorInfo(err); status.Code(err) != codes.DeadlineExceeded || ei.GetReason() != service.ReasonNotSent {
		t.Errorf("queued Send = %v (%v), want DeadlineExceeded NOT_SENT", err, ei)
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
	p := dialPeer(t, l.GetBoundAddress())
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
	if r.err != nil || r.resp.GetOutcome() != switchboardv1.AckOutcome_ACK_OUTCOME_ACCEPTED || r.resp.GetAckControlId() != "TO-PEER" {
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
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "refused") {
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

	if _, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "missing", Payload: []byte("x")}); status.Code(err) != codes.NotFound {
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
