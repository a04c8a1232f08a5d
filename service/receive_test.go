package service_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// sendInbound has a raw peer send n messages to addr and waits for each ACK.
func sendInbound(t *testing.T, addr, prefix string, n int) {
	t.Helper()
	p := dialPeer(t, addr)
	for i := range n {
		m := hl7Message(fmt.Sprintf("%s-%d", prefix, i))
		p.write(mllp.AppendFrame(nil, m))
		checkAck(t, m, p.readFrame())
	}
	p.nc.Close()
}

// receive collects n messages from a Receive stream.
func receive(t *testing.T, stream switchboardv1.SwitchboardService_ReceiveClient, n int) []*switchboardv1.ReceivedMessage {
	t.Helper()
	var got []*switchboardv1.ReceivedMessage
	for len(got) < n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv after %d of %d: %v", len(got), n, err)
		}
		got = append(got, resp.GetMessages()...)
	}
	if len(got) != n {
		t.Fatalf("got %d messages, want %d", len(got), n)
	}
	return got
}

// TestRestartReplay: everything acknowledged before a restart is replayed
// from sequence 1 afterwards, and sequences continue.
func TestRestartReplay(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	s := startServer(t, dir)
	l := s.startListener(ctx, "adt", nil)
	sendInbound(t, addr(l), "BEFORE", 20)
	s.stop()

	s = startServer(t, dir)
	l = s.startListener(ctx, "adt", nil)
	sendInbound(t, addr(l), "AFTER", 5)
	stream, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	got := receive(t, stream, 25)
	for i, m := range got {
		want := fmt.Sprintf("BEFORE-%d", i)
		if i >= 20 {
			want = fmt.Sprintf("AFTER-%d", i-20)
		}
		if m.GetSequence() != uint64(i+1) || m.GetControlId() != want {
			t.Errorf("message %d = seq %d %s, want seq %d %s", i, m.GetSequence(), m.GetControlId(), i+1, want)
		}
	}
}

// TestReceiveResume: a client that drops its stream and resumes at its last
// sequence + 1 sees every message exactly once, including those that
// arrived while it was away; a stream started without start_sequence sees
// only new messages; filters select by listener and connection.
func TestReceiveResume(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	a := s.startListener(ctx, "a", nil)
	b := s.startListener(ctx, "b", nil)
	sendInbound(t, addr(a), "OLD", 3)

	newOnly, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	onlyB, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1), ListenerIds: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	first, err := s.client.Receive(sctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	got := receive(t, first, 3)
	cancel() // the client goes away
	sendInbound(t, addr(a), "AWAY", 4)
	sendInbound(t, addr(b), "B", 2)

	resumed, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(got[len(got)-1].GetSequence() + 1)})
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, receive(t, resumed, 6)...)
	for i, m := range got {
		if m.GetSequence() != uint64(i+1) {
			t.Errorf("position %d has sequence %d: a gap or a duplicate", i, m.GetSequence())
		}
	}
	if fresh := receive(t, newOnly, 6); fresh[0].GetControlId() != "AWAY-0" {
		t.Errorf("stream without start_sequence began at %s, want AWAY-0", fresh[0].GetControlId())
	}
	for _, m := range receive(t, onlyB, 2) {
		if m.GetListenerId() != "b" {
			t.Errorf("listener filter let %s from %q through", m.GetControlId(), m.GetListenerId())
		}
	}
	byConn, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1), ConnectionIds: []string{got[0].GetConnectionId()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range receive(t, byConn, 3) {
		if m.GetConnectionId() != got[0].GetConnectionId() {
			t.Errorf("connection filter let %s through", m.GetControlId())
		}
	}
}

// TestReceiveEndsOnShutdown: open streams end with UNAVAILABLE when the
// service shuts down, telling the client where to resume.
func TestReceiveEndsOnShutdown(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	stream, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Make sure the stream is being served before shutting down.
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	// A health Watch must end too, or a graceful stop would wait for it.
	watch, err := healthpb.NewHealthClient(s.cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch answer = %v, %v; want SERVING", resp, err)
	}
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.svc.Shutdown(sctx)
	}()
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Recv during shutdown = %v, want Unavailable", err)
	}
	for {
		_, err := watch.Recv()
		if err == nil {
			continue // NOT_SERVING may be streamed first
		}
		if status.Code(err) != codes.Unavailable {
			t.Errorf("health Watch at shutdown ended with %v, want Unavailable", err)
		}
		break
	}
	if _, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}}); status.Code(err) != codes.Unavailable {
		t.Errorf("StartListener after shutdown = %v, want Unavailable", err)
	}
}
