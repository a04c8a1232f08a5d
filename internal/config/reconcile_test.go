package config_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	configv1 "github.com/switchboard-dev/switchboard/gen/switchboard/config/v1"
	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/internal/config"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

// server is a real Switchboard on data directory dir, built as serve
// builds it: the journal's own stores, the gRPC server with the
// production interceptors on loopback, and the desired state restored.
type server struct {
	t      *testing.T
	j      *pebblejournal.Journal
	svc    *service.Service
	gs     *grpc.Server
	cc     *grpc.ClientConn
	client switchboardv1.SwitchboardServiceClient
	log    *bytes.Buffer
	logger *slog.Logger
	done   bool
}

func startServer(t *testing.T, dir string) *server {
	t.Helper()
	j, err := pebblejournal.Open(dir, pebblejournal.Options{})
	if err != nil {
		t.Fatalf("journal.Open: %v", err)
	}
	svc, err := service.New(service.Config{Journal: j, State: j.StateStore(), Outbox: j.Outbox(), Consumers: j.Consumers(), Answers: j.Answers()})
	if err != nil {
		t.Fatalf("service.New: %v", err)
	}
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	s := &server{t: t, j: j, svc: svc, gs: gs, cc: cc, client: switchboardv1.NewSwitchboardServiceClient(cc), log: &buf,
		logger: slog.New(slog.NewTextHandler(&syncWriter{w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	t.Cleanup(s.stop)
	if err := svc.Restore(testCtx(t)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return s
}

// stop shuts the server down as serve does.
func (s *server) stop() {
	if s.done {
		return
	}
	s.done = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.svc.Shutdown(ctx)
	s.gs.Stop()
	_ = s.cc.Close()
	if err := s.j.Close(); err != nil {
		s.t.Errorf("journal.Close: %v", err)
	}
}

// reconcile reconciles f through the gRPC API, as a client would.
func (s *server) reconcile(ctx context.Context, f *configv1.ServeConfig) (*config.Report, error) {
	return config.Reconcile(ctx, config.ClientAPI(s.client), f, s.logger)
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// peer is an MLLP peer answering AA to every message, on addr.
type peer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	open []net.Conn
}

func startPeer(t *testing.T, addr string) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{ln: ln}
	framing := transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()
	p.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.open = append(p.open, nc)
			p.mu.Unlock()
			p.wg.Go(func() {
				dec := transport.NewDecoder(nc, framing)
				for {
					msg, err := dec.Next()
					if err != nil {
						return
					}
					h, _ := hl7.ParseHeader(msg)
					ack := hl7.AppendAck(nil, h, hl7.AckRequest{Code: hl7.AA, ControlID: "PEER", Time: time.Now()})
					if _, err := nc.Write(framing.AppendFrame(nil, ack)); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(p.stop)
	return p
}

func (p *peer) addr() string { return p.ln.Addr().String() }

func (p *peer) stop() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.open {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func hl7Message(controlID string) []byte {
	return []byte("MSH|^~\\&|ADT1|HOSP|LAB|HOSP|20261125101500||ADT^A01^ADT_A01|" + controlID + "|P|2.5\rPID|1||PATID1234\r")
}

// sendThrough sends one message to a listener as a peer would and returns
// the ACK's code.
func sendThrough(t *testing.T, addr, controlID string) hl7.AckCode {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer nc.Close()
	framing := transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()
	if _, err := nc.Write(framing.AppendFrame(nil, hl7Message(controlID))); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := transport.NewDecoder(nc, framing).Next()
	if err != nil {
		t.Fatalf("reading the ACK: %v", err)
	}
	a, err := hl7.ParseAck(f)
	if err != nil {
		t.Fatal(err)
	}
	return a.Code
}

// parse loads a configuration from YAML text.
func parse(t *testing.T, text string) *configv1.ServeConfig {
	t.Helper()
	f, err := config.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return f.Config
}

func actions(r *config.Report) map[string]config.Action {
	out := map[string]config.Action{}
	for _, c := range r.Changes {
		out[c.Kind+" "+c.ID] = c.Action
	}
	return out
}

func checkActions(t *testing.T, step string, r *config.Report, want map[string]config.Action) {
	t.Helper()
	got := actions(r)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %s was %q, want %q (all: %v)", step, k, got[k], w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: changes %v, want %v", step, got, want)
	}
}

// TestReconcileAcrossRestarts follows one data directory through restarts
// with a config file that changes: declared resources are created once,
// restored unchanged, replaced when the file changes them (the file wins),
// and resources made through the API are never touched.
func TestReconcileAcrossRestarts(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	lab := startPeer(t, "127.0.0.1:0")
	adtAddr := freeAddr(t)
	v1 := `
listeners:
  - listener_id: adt
    config: {address: "` + adtAddr + `"}
connections:
  - connection_id: lab
    config:
      address: "` + lab.addr() + `"
      reconnect: {initial_delay: 50ms, max_delay: 200ms}
`
	// 1. First start: both are created; an API client adds its own.
	s := startServer(t, dir)
	r, err := s.reconcile(ctx, parse(t, v1))
	if err != nil {
		t.Fatal(err)
	}
	checkActions(t, "first start", r, map[string]config.Action{"listener adt": config.Created, "connection lab": config.Created})
	if code := sendThrough(t, adtAddr, "FIRST"); code != hl7.AA {
		t.Errorf("declared listener answered %s", code)
	}
	api, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "api-made", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	apiCreated := api.GetListener().GetStatus().GetCreateTime().AsTime()
	s.stop()

	// 2. Restart with the same file: restored as they were, nothing done.
	s = startServer(t, dir)
	r, err = s.reconcile(ctx, parse(t, v1))
	if err != nil {
		t.Fatal(err)
	}
	checkActions(t, "same file", r, map[string]config.Action{"listener adt": config.Unchanged, "connection lab": config.Unchanged})
	if code := sendThrough(t, adtAddr, "SECOND"); code != hl7.AA {
		t.Errorf("restored listener answered %s", code)
	}
	s.stop()

	// 3. Restart with a changed file: the file wins over the durable
	// state; the API-made listener is left as it was.
	v2 := strings.Replace(v1, `config: {address: "`+adtAddr+`"}`, `config: {address: "`+adtAddr+`", max_frame_bytes: 65536}`, 1)
	v2 = strings.Replace(v2, "reconnect:", "ack_timeout: 3s\n      reconnect:", 1)
	s = startServer(t, dir)
	r, err = s.reconcile(ctx, parse(t, v2))
	if err != nil {
		t.Fatal(err)
	}
	checkActions(t, "changed file", r, map[string]config.Action{"listener adt": config.Replaced, "connection lab": config.Replaced})
	want := parse(t, v2)
	gl, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "adt"})
	if err != nil || !proto.Equal(gl.GetListener().GetConfig(), want.GetListeners()[0].GetConfig()) {
		t.Errorf("listener adt after the change = %v, %v; want the file's config", gl, err)
	}
	gc, err := s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: "lab"})
	if err != nil || !proto.Equal(gc.GetConnection().GetConfig(), want.GetConnections()[0].GetConfig()) ||
		gc.GetConnection().GetStatus().GetState() != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN {
		t.Errorf("connection lab after the change = %v, %v; want open with the file's config", gc, err)
	}
	ga, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "api-made"})
	if err != nil || !ga.GetListener().GetStatus().GetCreateTime().AsTime().Equal(apiCreated) {
		t.Errorf("the API-made listener = %v, %v; want it untouched", ga, err)
	}
	if code := sendThrough(t, adtAddr, "THIRD"); code != hl7.AA {
		t.Errorf("replaced listener answered %s", code)
	}
	if !strings.Contains(s.log.String(), "the config file wins") {
		t.Errorf("the replacement was not logged; log:\n%s", s.log)
	}
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("OUT-1")})
	if err != nil || resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED {
		t.Errorf("Send on the replaced connection = %v, %v", resp, err)
	}

	// 4. Messages queued while the peer is down: a changed file does not
	// replace the connection (that would fail them); it is kept.
	lab.stop()
	waitState(t, ctx, s, "lab", func(st switchboardv1.ConnectionState) bool {
		return st != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN
	})
	if _, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("QUEUED-1"), Queued: true}); err != nil {
		t.Fatalf("queued Send: %v", err)
	}
	s.stop()
	v3 := strings.Replace(v2, "ack_timeout: 3s", "ack_timeout: 4s", 1)
	s = startServer(t, dir)
	r, err = s.reconcile(ctx, parse(t, v3))
	if err != nil {
		t.Fatal(err)
	}
	checkActions(t, "queued messages", r, map[string]config.Action{"listener adt": config.Unchanged, "connection lab": config.Kept})
	gc, err = s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: "lab"})
	if err != nil || !proto.Equal(gc.GetConnection().GetConfig(), want.GetConnections()[0].GetConfig()) ||
		gc.GetConnection().GetStatus().GetQueuedMessageCount() != 1 {
		t.Errorf("connection lab with a queued message = %v, %v; want its durable config and the message queued", gc, err)
	}
	if !strings.Contains(s.log.String(), "queued_messages=1") {
		t.Errorf("the kept connection was not logged; log:\n%s", s.log)
	}
	s.stop()

	// 5. The file no longer declares them: nothing is removed.
	s = startServer(t, dir)
	r, err = s.reconcile(ctx, parse(t, ""))
	if err != nil || len(r.Changes) != 0 {
		t.Fatalf("empty file: %v, %v", r, err)
	}
	for _, id := range []string{"adt", "api-made"} {
		if _, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: id}); err != nil {
			t.Errorf("listener %s after a file without it: %v", id, err)
		}
	}
}

func waitState(t *testing.T, ctx context.Context, s *server, id string, cond func(switchboardv1.ConnectionState) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		gc, err := s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
		if err != nil {
			t.Fatal(err)
		}
		if cond(gc.GetConnection().GetStatus().GetState()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection %s: state %v never met the condition", id, gc.GetConnection().GetStatus().GetState())
		}
	}
}

// TestReconcilePending: a declared listener whose address is taken and a
// connection whose peer is down do not stop the start; they are Pending,
// and RetryPending creates them once the address is free and the peer up.
func TestReconcilePending(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	peerAddr := freeAddr(t)
	r, err := config.Reconcile(ctx, s.svc, parse(t, `
listeners:
  - listener_id: late-listener
    config: {address: "`+busy.Addr().String()+`"}
connections:
  - connection_id: late-peer
    config: {address: "`+peerAddr+`"}
`), s.logger)
	if err != nil {
		t.Fatal(err)
	}
	checkActions(t, "busy address, peer down", r, map[string]config.Action{"listener late-listener": config.Pending, "connection late-peer": config.Pending})
	for _, c := range r.Changes {
		if c.Err == nil {
			t.Errorf("%s %s is pending without a cause", c.Kind, c.ID)
		}
	}
	config.SetRetryDelay(r, 20*time.Millisecond)
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { r.RetryPending(rctx) })

	busyAddr := busy.Addr().String()
	_ = busy.Close()
	startPeer(t, peerAddr)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, errL := s.svc.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "late-listener"})
		_, errC := s.svc.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: "late-peer"})
		if errL == nil && errC == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still pending after 10 s: listener %v, connection %v; log:\n%s", errL, errC, s.log)
		}
	}
	if code := sendThrough(t, busyAddr, "LATE"); code != hl7.AA {
		t.Errorf("the late listener answered %s", code)
	}
	cancel()
	wg.Wait() // RetryPending returns once everything is created or ctx ends
}

// TestReconcileRefusal: a declared resource the server refuses for a
// reason that will not pass (here a TLS profile the server does not have)
// is an error naming it.
func TestReconcileRefusal(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	_, err := config.Reconcile(ctx, s.svc, parse(t, `
listeners:
  - listener_id: secure
    config:
      address: "127.0.0.1:0"
      tls: {profile: missing}
`), s.logger)
	if err == nil || !strings.Contains(err.Error(), `listener "secure" declared in the config file`) {
		t.Fatalf("Reconcile = %v; want an error naming the listener", err)
	}
	if _, err := s.svc.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "secure"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetListener(secure) = %v; want NotFound", err)
	}
}

// TestReconcileManyConnections: connections are reconciled side by side,
// and the report keeps the file's order.
func TestReconcileManyConnections(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	peerUp := startPeer(t, "127.0.0.1:0")
	down := freeAddr(t)
	var b strings.Builder
	b.WriteString("connections:\n")
	var ids []string
	for i := range 20 {
		id, addr := "c"+string(rune('a'+i)), down
		if i%2 == 0 {
			addr = peerUp.addr()
		}
		ids = append(ids, id)
		b.WriteString("  - connection_id: " + id + "\n    config: {address: \"" + addr + "\"}\n")
	}
	r, err := config.Reconcile(ctx, s.svc, parse(t, b.String()), s.logger)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Changes) != len(ids) {
		t.Fatalf("%d changes for %d connections", len(r.Changes), len(ids))
	}
	for i, c := range r.Changes {
		want := config.Created
		if i%2 == 1 {
			want = config.Pending
		}
		if c.ID != ids[i] || c.Action != want {
			t.Errorf("change %d = %s %s, want %s %s", i, c.ID, c.Action, ids[i], want)
		}
	}
}
