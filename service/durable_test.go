package service_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
)

// startDurable starts a server on data directory dir, with the journal's
// own state store, and restores what it holds, as `switchboard serve` does
// before it reports SERVING.
func startDurable(t *testing.T, dir string) *server {
	t.Helper()
	j, err := pebblejournal.Open(dir, pebblejournal.Options{})
	if err != nil {
		t.Fatalf("journal.Open: %v", err)
	}
	s := startServerWith(t, j, func(c *service.Config) { c.State = j.StateStore() })
	if err := s.svc.Restore(testCtx(t)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return s
}

// fastReconnect reconnects within a fraction of a second.
var fastReconnect = &switchboardv1.ReconnectPolicy{InitialDelay: durationpbNew(50 * time.Millisecond), MaxDelay: durationpbNew(200 * time.Millisecond)}

func (s *server) connectWith(ctx context.Context, id string, cfg *switchboardv1.ConnectionConfig) *switchboardv1.Connection {
	s.t.Helper()
	resp, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: id, Config: cfg})
	if err != nil {
		s.t.Fatalf("Connect(%s): %v", id, err)
	}
	return resp.GetConnection()
}

func (s *server) connStatus(ctx context.Context, id string) *switchboardv1.ConnectionStatus {
	s.t.Helper()
	resp, err := s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
	if err != nil {
		s.t.Fatalf("GetConnection(%s): %v", id, err)
	}
	return resp.GetConnection().GetStatus()
}

// waitConn polls connection id through the API until cond holds (10 s at
// most) and returns the status that met it.
func (s *server) waitConn(ctx context.Context, id string, cond func(*switchboardv1.ConnectionStatus) bool) *switchboardv1.ConnectionStatus {
	s.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := s.connStatus(ctx, id)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("connection %s never met the condition; last status %v", id, st)
		}
	}
}

func stateIs(want switchboardv1.ConnectionState) func(*switchboardv1.ConnectionStatus) bool {
	return func(st *switchboardv1.ConnectionStatus) bool { return st.GetState() == want }
}

// TestRestartRestoresResources: a server restarted on the same data comes
// back with its listeners (same id, the same address when it was fixed, the
// same creation time) and its outbound connections (open, the peer being
// up), with no StartListener or Connect repeated; both work.
func TestRestartRestoresResources(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	fixed := freeAddr(t)

	s := startDurable(t, dir)
	before := s.startListener(ctx, "adt", &switchboardv1.ListenerConfig{Address: fixed})
	s.startListener(ctx, "anyport", nil)
	s.connectWith(ctx, "lab", &switchboardv1.ConnectionConfig{Address: peer.addr(), Reconnect: fastReconnect})
	s.stop()

	s = startDurable(t, dir)
	ls, err := s.client.ListListeners(ctx, &switchboardv1.ListListenersRequest{})
	if err != nil || len(ls.GetListeners()) != 2 {
		t.Fatalf("ListListeners after the restart = %v, %v; want both", ls, err)
	}
	got, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "adt"})
	if err != nil {
		t.Fatal(err)
	}
	l := got.GetListener()
	if l.GetStatus().GetState() != switchboardv1.ListenerState_LISTENER_STATE_LISTENING || addr(l) != fixed ||
		!l.GetStatus().GetCreateTime().AsTime().Equal(before.GetStatus().GetCreateTime().AsTime()) ||
		l.GetConfig().GetAddress() != fixed {
		t.Errorf("restored listener = %v; want it listening on %s, created as before", l, fixed)
	}
	p := dialPeer(t, fixed)
	p.write(mllp.AppendFrame(nil, hl7Message("AFTER-RESTART")))
	checkAck(t, hl7Message("AFTER-RESTART"), p.readFrame())

	if cs := s.connStatus(ctx, "lab"); cs.GetState() != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN || cs.GetReconnectCount() != 0 {
		t.Errorf("restored connection = %v; want open", cs)
	}
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("OUT-1")})
	if err != nil || resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED {
		t.Errorf("Send on the restored connection = %v, %v", resp, err)
	}

	// Removed resources stay removed after the next restart.
	if _, err := s.client.StopListener(ctx, &switchboardv1.StopListenerRequest{ListenerId: "anyport"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: "lab"}); err != nil {
		t.Fatal(err)
	}
	s.stop()
	s = startDurable(t, dir)
	ls, _ = s.client.ListListeners(ctx, &switchboardv1.ListListenersRequest{})
	cs, _ := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{})
	if len(ls.GetListeners()) != 1 || len(cs.GetConnections()) != 0 {
		t.Errorf("after removing and restarting: %d listeners, %d connections; want 1 and 0", len(ls.GetListeners()), len(cs.GetConnections()))
	}
}

// TestRestartWithPortTaken: a listener whose port is taken when the server
// restarts is listed BACKING_OFF with the error and the next attempt's
// time, does not keep the other from starting, and binds by itself once
// the port is free.
func TestRestartWithPortTaken(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	taken, other := freeAddr(t), freeAddr(t)
	s := startDurable(t, dir)
	s.startListener(ctx, "taken", &switchboardv1.ListenerConfig{Address: taken})
	s.startListener(ctx, "other", &switchboardv1.ListenerConfig{Address: other})
	s.stop()
	squatter, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()

	s = startDurable(t, dir)
	get := func(id string) *switchboardv1.ListenerStatus {
		resp, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: id})
		if err != nil {
			t.Fatalf("GetListener(%s): %v", id, err)
		}
		return resp.GetListener().GetStatus()
	}
	ls := get("taken")
	if ls.GetState() != switchboardv1.ListenerState_LISTENER_STATE_BACKING_OFF || ls.GetLastError() == "" ||
		ls.GetNextAttemptTime() == nil || ls.GetBoundAddress() != "" {
		t.Errorf("listener on a taken port = %v; want BACKING_OFF with the error and the next attempt", ls)
	}
	if get("other").GetState() != switchboardv1.ListenerState_LISTENER_STATE_LISTENING {
		t.Errorf("the other listener = %v; want it listening", get("other"))
	}
	squatter.Close()
	for deadline := time.Now().Add(10 * time.Second); get("taken").GetState() != switchboardv1.ListenerState_LISTENER_STATE_LISTENING; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("listener never bound once its port was free: %v", get("taken"))
		}
	}
	if ls := get("taken"); ls.GetBoundAddress() != taken || ls.GetLastError() != "" || ls.GetNextAttemptTime() != nil {
		t.Errorf("rebound listener = %v", ls)
	}
	p := dialPeer(t, taken)
	p.write(mllp.AppendFrame(nil, hl7Message("REBOUND")))
	checkAck(t, hl7Message("REBOUND"), p.readFrame())
}

// TestReconnectThroughAPI: a peer that goes away and comes back on the same
// address gets the connection back by itself; GetConnection shows OPEN,
// then BACKING_OFF with the last error, the next attempt's time and the
// failed connects, then OPEN again with a reconnect counted.
func TestReconnectThroughAPI(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	at := peer.addr()
	s.connectWith(ctx, "lab", &switchboardv1.ConnectionConfig{Address: at, Reconnect: fastReconnect})
	if st := s.connStatus(ctx, "lab"); st.GetState() != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN {
		t.Fatalf("after Connect: %v", st)
	}
	peer.stop()
	st := s.waitConn(ctx, "lab", func(st *switchboardv1.ConnectionStatus) bool {
		return st.GetState() == switchboardv1.ConnectionState_CONNECTION_STATE_BACKING_OFF && st.GetFailedConnectCount() >= 2
	})
	if st.GetLastError() == "" || st.GetNextAttemptTime() == nil || st.GetCloseReason() == switchboardv1.CloseReason_CLOSE_REASON_UNSPECIFIED {
		t.Errorf("while the peer is away: %v; want the last error, the next attempt, why the session closed", st)
	}
	startTestPeerOn(t, at, ackWith(hl7.AA, ""))
	st = s.waitConn(ctx, "lab", stateIs(switchboardv1.ConnectionState_CONNECTION_STATE_OPEN))
	if st.GetReconnectCount() != 1 || st.GetFailedConnectCount() != 0 || st.GetLastError() != "" || st.GetNextAttemptTime() != nil {
		t.Errorf("once the peer is back: %v", st)
	}
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("BACK")})
	if err != nil || resp.GetAck().GetControlId() != "BACK" {
		t.Errorf("Send after the reconnect = %v, %v", resp, err)
	}
}

// TestSendWhileReconnecting: a direct Send on a connection that is
// reconnecting waits within its deadline and succeeds once the peer is
// back; with fail_fast it fails NOT_SENT at once; one whose deadline ends
// first, or whose connection is removed while it waits, fails NOT_SENT
// before the deadline.
func TestSendWhileReconnecting(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	at := peer.addr()
	s.connectWith(ctx, "lab", &switchboardv1.ConnectionConfig{Address: at, Reconnect: fastReconnect})
	peer.stop()
	s.waitConn(ctx, "lab", stateIs(switchboardv1.ConnectionState_CONNECTION_STATE_BACKING_OFF))

	notSent := func(err error, code codes.Code) bool {
		sf := sendFailure(err)
		return status.Code(err) == code && errorInfo(err).GetReason() == "NOT_SENT" && !sf.GetWritten() &&
			sf.GetConnectionId() == "lab"
	}
	began := time.Now()
	_, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("FAST"), FailFast: true})
	if !notSent(err, codes.Unavailable) || sendFailure(err).GetCause() != switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN ||
		time.Since(began) > time.Second {
		t.Errorf("fail-fast Send while reconnecting = %v after %v; want NOT_SENT, not open, at once", err, time.Since(began))
	}

	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = s.client.Send(short, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("SHORT")})
	cancel()
	if !notSent(err, codes.Unavailable) || sendFailure(err).GetCause() != switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN {
		t.Errorf("Send whose deadline ends while reconnecting = %v; want NOT_SENT, not open, with its details", err)
	}

	type result struct {
		resp *switchboardv1.SendResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("WAITED")})
		done <- result{resp, err}
	}()
	time.Sleep(100 * time.Millisecond) // the Send is waiting
	back := startTestPeerOn(t, at, ackWith(hl7.AA, ""))
	r := <-done
	if r.err != nil || r.resp.GetAck().GetControlId() != "WAITED" {
		t.Errorf("Send that waited for the reconnect = %v, %v; want its ACK", r.resp, r.err)
	}

	back.stop()
	s.waitConn(ctx, "lab", stateIs(switchboardv1.ConnectionState_CONNECTION_STATE_BACKING_OFF))
	go func() {
		resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("REMOVED")})
		done <- result{resp, err}
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := s.client.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: "lab"}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; !notSent(r.err, codes.Unavailable) {
		t.Errorf("Send waiting when its connection was removed = %v; want NOT_SENT", r.err)
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// BenchmarkRestart measures a restart to SERVING with 100 listeners and 100
// outbound connections: open the journal, build the service and its gRPC
// server, Restore (every listener bound, every connection open): ns/op is
// one restart (the checks and the shutdown after it are not timed). The
// issue's budget is 5 s.
func BenchmarkRestart(b *testing.B) {
	const n = 100
	dir := b.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() { // a peer that accepts and holds every connection
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, nc)
		}
	})
	var gs *grpc.Server
	open := func() (*pebblejournal.Journal, *service.Service) {
		j, err := pebblejournal.Open(dir, pebblejournal.Options{})
		if err != nil {
			b.Fatal(err)
		}
		svc, err := service.New(service.Config{Journal: j, State: j.StateStore()})
		if err != nil {
			b.Fatal(err)
		}
		if gs, _, err = service.NewGRPCServer(svc, service.ServerOptions{}); err != nil {
			b.Fatal(err)
		}
		return j, svc
	}
	closeAll := func(j *pebblejournal.Journal, svc *service.Service) {
		svc.Shutdown(context.Background())
		gs.Stop()
		if err := j.Close(); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	j, svc := open()
	for i := range n {
		id := fmt.Sprintf("l-%03d", i)
		if _, err := svc.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: id, Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}}); err != nil {
			b.Fatal(err)
		}
		id = fmt.Sprintf("c-%03d", i)
		if _, err := svc.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: id, Config: &switchboardv1.ConnectionConfig{Address: ln.Addr().String()}}); err != nil {
			b.Fatal(err)
		}
	}
	closeAll(j, svc)
	b.ResetTimer()
	for b.Loop() {
		j, svc := open()
		if err := svc.Restore(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cs, err := svc.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{PageSize: 1000})
		if err != nil || len(cs.GetConnections()) != n {
			b.Fatalf("restored %d connections, %v", len(cs.GetConnections()), err)
		}
		for _, c := range cs.GetConnections() {
			if c.GetStatus().GetState() != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN {
				b.Fatalf("connection %s is %v after Restore", c.GetConnectionId(), c.GetStatus().GetState())
			}
		}
		closeAll(j, svc)
		b.StartTimer()
	}
}
