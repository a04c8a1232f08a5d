package auth_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/tlstest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/service/auth"
)

func TestErrorDomainMatchesService(t *testing.T) {
	if auth.ErrorDomain != service.ErrorDomain {
		t.Fatalf("auth.ErrorDomain %q != service.ErrorDomain %q", auth.ErrorDomain, service.ErrorDomain)
	}
}

// logBuf collects log output from concurrent goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// records returns the audit records logged so far.
func (l *logBuf) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["msg"] == "audit" {
			out = append(out, m)
		}
	}
	return out
}

// find returns the first record whose fields include want.
func find(recs []map[string]any, want map[string]string) map[string]any {
next:
	for _, r := range recs {
		for k, v := range want {
			if s, _ := r[k].(string); s != v {
				continue next
			}
		}
		return r
	}
	return nil
}

// env is a real Switchboard (pebble journal, service, gRPC server on
// loopback) behind the auth interceptors.
type env struct {
	t       *testing.T
	svc     *service.Service
	gs      *grpc.Server
	addr    string
	authz   *auth.Authorizer
	logs    *logBuf // audit and authorizer logs, JSON
	file    string  // access file
	tokens  map[string]string
	tlsConf *tls.Config // server TLS, when set
}

type envOpts struct {
	access    string            // access file text (tokens added by name below); "" and !withFile: anonymous
	tokens    map[string]string // name -> "role [scope...]" lines to create
	cfg       auth.Config
	dataCalls bool
	tls       *tls.Config
}

func startEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, logs: &logBuf{}, tokens: map[string]string{}}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Journal: j, Consumers: j.Consumers(), Answers: j.Answers()})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	cfg := o.cfg
	cfg.Logger = logger
	cfg.Audit = auth.NewAuditor(auth.AuditConfig{Logger: logger, DataCalls: o.dataCalls})
	cfg.Lookup = auth.ServerLookup(svc)
	if o.tokens != nil || o.access != "" {
		af, err := auth.ParseAccessFile([]byte(o.access))
		if err != nil {
			t.Fatal(err)
		}
		for name, spec := range o.tokens {
			f := strings.Fields(spec)
			role, err := auth.ParseRole(f[0])
			if err != nil {
				t.Fatal(err)
			}
			var sc auth.Scope
			for _, opt := range f[1:] {
				k, v, _ := strings.Cut(opt, "=")
				p, err := auth.ParsePrefixes(v)
				if err != nil {
					t.Fatal(err)
				}
				if k == "listeners" {
					sc.Listeners = p
				} else {
					sc.Connections = p
				}
			}
			tok, err := af.AddToken(name, role, sc)
			if err != nil {
				t.Fatal(err)
			}
			e.tokens[name] = tok
		}
		e.file = filepath.Join(t.TempDir(), "access")
		if err := os.WriteFile(e.file, af.Format(), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.AccessFile = e.file
	} else {
		cfg.Anonymous = true
	}
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.authz = a
	sopts := service.ServerOptions{UnaryInterceptors: a.UnaryInterceptors(), StreamInterceptors: a.StreamInterceptors()}
	if o.tls != nil {
		sopts.GRPCOptions = []grpc.ServerOption{grpc.Creds(credentials.NewTLS(o.tls))}
	}
	gs, _, err := service.NewGRPCServer(svc, sopts)
	if err != nil {
		t.Fatal(err)
	}
	e.gs = gs
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
		gs.Stop()
		_ = a.Close()
		if err := j.Close(); err != nil {
			t.Errorf("journal close: %v", err)
		}
	})
	return e
}

// client dials the server (plain, or with tc).
func (e *env) client(tc *tls.Config) (switchboardv1.SwitchboardServiceClient, *grpc.ClientConn) {
	e.t.Helper()
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cc.Close() })
	return switchboardv1.NewSwitchboardServiceClient(cc), cc
}

// as returns ctx carrying the named token.
func (e *env) as(ctx context.Context, name string) context.Context {
	tok, ok := e.tokens[name]
	if !ok {
		e.t.Fatalf("no token %q", name)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantErr checks an error's code and ErrorInfo reason and returns its
// ErrorInfo metadata.
func wantErr(t *testing.T, what string, err error, code codes.Code, reason string) map[string]string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("%s: %v, want code %v", what, err, code)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.GetReason() != reason || info.GetDomain() != service.ErrorDomain {
				t.Fatalf("%s: ErrorInfo %v, want reason %s", what, info, reason)
			}
			return info.GetMetadata()
		}
	}
	if reason != "" {
		t.Fatalf("%s: %v has no ErrorInfo", what, err)
	}
	return nil
}

func startListener(t *testing.T, ctx context.Context, c switchboardv1.SwitchboardServiceClient, id string) (*switchboardv1.Listener, error) {
	resp, err := c.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: id, Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	return resp.GetListener(), err
}

const marker = "PHI-MARKER-7f3a9c"

func hl7(controlID string) []byte {
	return []byte("MSH|^~\\&|ADT1|HOSP|LAB|HOSP|20261125101500||ADT^A01^ADT_A01|" + controlID +
		"|P|2.5\rPID|1||" + marker + "^^^HOSP^MR||EVERYMAN^ADAM\r")
}

// deliver sends one MLLP frame to a listener and waits for its ACK; it
// returns the open connection (closed at cleanup).
func deliver(t *testing.T, addr string, msg []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write(append(append([]byte{0x0b}, msg...), 0x1c, 0x0d)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes(0x1c); err != nil {
		t.Fatalf("read ACK: %v", err)
	}
	return c
}

func TestAuthentication(t *testing.T) {
	e := startEnv(t, envOpts{tokens: map[string]string{"v": "viewer"}})
	c, cc := e.client(nil)
	ctx := testCtx(t)

	_, err := c.ListListeners(ctx, &switchboardv1.ListListenersRequest{})
	wantErr(t, "no token", err, codes.Unauthenticated, "UNAUTHENTICATED")
	if !strings.Contains(status.Convert(err).Message(), "authorization: Bearer") {
		t.Errorf("message %q does not say how to authenticate", status.Convert(err).Message())
	}
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer sbt_nope")
	_, err = c.ListListeners(bad, &switchboardv1.ListListenersRequest{})
	wantErr(t, "unknown token", err, codes.Unauthenticated, "UNAUTHENTICATED")
	basic := metadata.AppendToOutgoingContext(ctx, "authorization", "Basic dXNlcg==")
	_, err = c.ListListeners(basic, &switchboardv1.ListListenersRequest{})
	wantErr(t, "basic auth", err, codes.Unauthenticated, "UNAUTHENTICATED")
	if _, err := c.ListListeners(e.as(ctx, "v"), &switchboardv1.ListListenersRequest{}); err != nil {
		t.Fatalf("viewer ListListeners: %v", err)
	}

	// Health stays open for probes.
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without credentials: %v %v", hr, err)
	}
	// Reflection needs a viewer.
	reflect := func(ctx context.Context) error {
		s, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			return err
		}
		// Send reports io.EOF when the server already ended the stream;
		// Recv then returns its status.
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = s.Recv()
		_ = s.CloseSend()
		return err
	}
	wantErr(t, "reflection without token", reflect(ctx), codes.Unauthenticated, "UNAUTHENTICATED")
	if err := reflect(e.as(ctx, "v")); err != nil {
		t.Fatalf("reflection as viewer: %v", err)
	}

	recs := e.logs.records(t)
	if r := find(recs, map[string]string{"event": "denied", "outcome": "UNAUTHENTICATED", "method": switchboardv1.SwitchboardService_ListListeners_FullMethodName}); r == nil || r["who"] != "" || r["peer"] == "" || r["time"] == nil {
		t.Errorf("no denial record with peer and time and without who: %v", recs)
	}
	if strings.Contains(e.logs.String(), e.tokens["v"]) {
		t.Error("a token appears in the log")
	}
}

func TestRoles(t *testing.T) {
	e := startEnv(t, envOpts{tokens: map[string]string{"v": "viewer", "c": "consumer", "o": "operator", "a": "admin"}})
	c, _ := e.client(nil)
	ctx := testCtx(t)

	type call struct {
		name string
		do   func(ctx context.Context) error
		need string
	}
	calls := []call{
		{"GetJournal", func(ctx context.Context) error {
			_, err := c.GetJournal(ctx, &switchboardv1.GetJournalRequest{})
			return err
		}, "viewer"},
		{"ListMessages", func(ctx context.Context) error {
			_, err := c.ListMessages(ctx, &switchboardv1.ListMessagesRequest{})
			return err
		}, "viewer"},
		{"ListMessages+payloads", func(ctx context.Context) error {
			_, err := c.ListMessages(ctx, &switchboardv1.ListMessagesRequest{IncludePayloads: true})
			return err
		}, "consumer"},
		{"GetMessage", func(ctx context.Context) error {
			_, err := c.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: "in-1"})
			return err
		}, "consumer"},
		{"Ack", func(ctx context.Context) error {
			_, err := c.Ack(ctx, &switchboardv1.AckRequest{Consumer: "nobody", Sequences: []uint64{1}})
			return err
		}, "consumer"},
		{"StartListener", func(ctx context.Context) error {
			_, err := startListener(t, ctx, c, "")
			return err
		}, "operator"},
		{"Send", func(ctx context.Context) error {
			_, err := c.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "none", Payload: hl7("S1"), FailFast: true})
			return err
		}, "operator"},
		{"ReplayDeadLetters", func(ctx context.Context) error {
			_, err := c.ReplayDeadLetters(ctx, &switchboardv1.ReplayDeadLettersRequest{Consumer: "nobody"})
			return err
		}, "operator"},
		{"DeleteConsumer", func(ctx context.Context) error {
			_, err := c.DeleteConsumer(ctx, &switchboardv1.DeleteConsumerRequest{Name: "nobody"})
			return err
		}, "admin"},
		{"ResolveMessage", func(ctx context.Context) error {
			_, err := c.ResolveMessage(ctx, &switchboardv1.ResolveMessageRequest{MessageId: "out-x-1", Resolution: switchboardv1.Resolution_RESOLUTION_FAIL})
			return err
		}, "admin"},
	}
	rank := map[string]int{"v": 1, "c": 2, "o": 3, "a": 4}
	needRank := map[string]int{"viewer": 1, "consumer": 2, "operator": 3, "admin": 4}
	roleOf := map[string]string{"v": "viewer", "c": "consumer", "o": "operator", "a": "admin"}
	for _, cl := range calls {
		for who := range rank {
			err := cl.do(e.as(ctx, who))
			if rank[who] < needRank[cl.need] {
				meta := wantErr(t, cl.name+" as "+who, err, codes.PermissionDenied, "ROLE_REQUIRED")
				if meta["role"] != roleOf[who] || meta["required_role"] != cl.need {
					t.Errorf("%s as %s: metadata %v", cl.name, who, meta)
				}
				if msg := status.Convert(err).Message(); !strings.Contains(msg, "needs role "+cl.need) {
					t.Errorf("%s as %s: message %q does not name the role needed", cl.name, who, msg)
				}
				continue
			}
			// Allowed: whatever the service answers, it is not a denial.
			if st := status.Convert(err); st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated {
				t.Errorf("%s as %s: %v", cl.name, who, err)
			}
		}
	}
	recs := e.logs.records(t)
	if r := find(recs, map[string]string{"event": "denied", "who": "token:v", "role": "viewer", "reason": "ROLE_REQUIRED", "method": switchboardv1.SwitchboardService_DeleteConsumer_FullMethodName}); r == nil || r["target"] != "consumer:nobody" {
		t.Errorf("no denial record for the viewer's DeleteConsumer: %v", r)
	}
	if r := find(recs, map[string]string{"event": "call", "who": "token:a", "method": switchboardv1.SwitchboardService_DeleteConsumer_FullMethodName}); r == nil || r["outcome"] != "NOT_FOUND" {
		t.Errorf("no record of the admin's DeleteConsumer with its outcome: %v", r)
	}
	// Send is audited only with DataCalls, and GetJournal never.
	if r := find(recs, map[string]string{"event": "call", "method": switchboardv1.SwitchboardService_Send_FullMethodName}); r != nil {
		t.Errorf("Send recorded without DataCalls: %v", r)
	}
	if r := find(recs, map[string]string{"event": "call", "method": switchboardv1.SwitchboardService_GetJournal_FullMethodName}); r != nil {
		t.Errorf("GetJournal recorded: %v", r)
	}
}

// writeAtomic replaces a file the way the token command and Kubernetes do.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestRevocation(t *testing.T) {
	// CheckEvery of a nanosecond: every call stats the file, so the test
	// needs no clock; the poller still ends open streams.
	e := startEnv(t, envOpts{tokens: map[string]string{"keep": "admin", "gone": "consumer"}, cfg: auth.Config{CheckEvery: time.Nanosecond}})
	c, _ := e.client(nil)
	ctx := testCtx(t)
	l, err := startListener(t, e.as(ctx, "keep"), c, "adt-1")
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, l.GetStatus().GetBoundAddress(), hl7("R1"))

	// An open Receive stream of the token to be revoked.
	start := uint64(1)
	stream, err := c.Receive(e.as(ctx, "gone"), &switchboardv1.ReceiveRequest{StartSequence: &start})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first Recv: %v", err)
	}

	data, err := os.ReadFile(e.file)
	if err != nil {
		t.Fatal(err)
	}
	af, err := auth.ParseAccessFile(data)
	if err != nil {
		t.Fatal(err)
	}
	// A broken file is ignored (the old policy stays) and logged.
	writeAtomic(t, e.file, append(af.Format(), "token broken\n"...))
	if _, err := c.GetJournal(e.as(ctx, "gone"), &switchboardv1.GetJournalRequest{}); err != nil {
		t.Fatalf("after a broken file: %v", err)
	}
	if !strings.Contains(e.logs.String(), "does not load") {
		t.Error("no warning about the broken access file")
	}

	if err := af.Remove(auth.KindToken, "gone"); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, e.file, af.Format())
	_, err = c.GetJournal(e.as(ctx, "gone"), &switchboardv1.GetJournalRequest{})
	wantErr(t, "revoked token", err, codes.Unauthenticated, "UNAUTHENTICATED")
	if _, err := c.GetJournal(e.as(ctx, "keep"), &switchboardv1.GetJournalRequest{}); err != nil {
		t.Fatalf("the other token: %v", err)
	}
	// The open stream ends too (the poller ends it within CheckEvery).
	for {
		_, err := stream.Recv()
		if err != nil {
			wantErr(t, "stream of a revoked token", err, codes.Unauthenticated, "UNAUTHENTICATED")
			break
		}
	}
}

func TestScopes(t *testing.T) {
	e := startEnv(t, envOpts{tokens: map[string]string{
		"a":  "admin",
		"op": "operator listeners=adt- connections=out-adt",
	}})
	c, _ := e.client(nil)
	ctx := testCtx(t)
	admin, op := e.as(ctx, "a"), e.as(ctx, "op")

	adt, err := startListener(t, op, c, "adt-1")
	if err != nil {
		t.Fatalf("in-scope StartListener: %v", err)
	}
	_, err = startListener(t, op, c, "lab-1")
	meta := wantErr(t, "out-of-scope StartListener", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	if meta["scope"] != "listeners=adt- connections=out-adt" {
		t.Errorf("scope metadata %q", meta["scope"])
	}
	_, err = startListener(t, op, c, "")
	wantErr(t, "StartListener without id", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	if !strings.Contains(status.Convert(err).Message(), "listener_id") {
		t.Errorf("message %q does not say which field to set", status.Convert(err).Message())
	}
	lab, err := startListener(t, admin, c, "lab-1")
	if err != nil {
		t.Fatal(err)
	}

	// Listing is filtered to the scope.
	ll, err := c.ListListeners(op, &switchboardv1.ListListenersRequest{})
	if err != nil || len(ll.GetListeners()) != 1 || ll.GetListeners()[0].GetListenerId() != "adt-1" {
		t.Fatalf("scoped ListListeners = %v, %v", ll, err)
	}

	// Inbound connections: in scope through their listener.
	deliver(t, adt.GetStatus().GetBoundAddress(), hl7("A1"))
	deliver(t, lab.GetStatus().GetBoundAddress(), hl7("L1"))
	conns := map[string]string{} // listener -> connection id
	lc, err := c.ListConnections(admin, &switchboardv1.ListConnectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cn := range lc.GetConnections() {
		conns[cn.GetListenerId()] = cn.GetConnectionId()
	}
	if _, err := c.GetConnection(op, &switchboardv1.GetConnectionRequest{ConnectionId: conns["adt-1"]}); err != nil {
		t.Errorf("GetConnection of an inbound connection of adt-1: %v", err)
	}
	_, err = c.GetConnection(op, &switchboardv1.GetConnectionRequest{ConnectionId: conns["lab-1"]})
	wantErr(t, "GetConnection of lab-1's connection", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	lc, err = c.ListConnections(op, &switchboardv1.ListConnectionsRequest{})
	if err != nil || len(lc.GetConnections()) != 1 || lc.GetConnections()[0].GetListenerId() != "adt-1" {
		t.Errorf("scoped ListConnections = %v, %v", lc, err)
	}
	_, err = c.ListConnections(op, &switchboardv1.ListConnectionsRequest{ListenerId: "lab-1"})
	wantErr(t, "ListConnections of lab-1", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	_, err = c.Disconnect(op, &switchboardv1.DisconnectRequest{ConnectionId: "out-lab"})
	wantErr(t, "Disconnect out of scope", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	_, err = c.Connect(op, &switchboardv1.ConnectRequest{ConnectionId: "lab-out", Config: &switchboardv1.ConnectionConfig{Address: "127.0.0.1:1"}})
	wantErr(t, "Connect out of scope", err, codes.PermissionDenied, "OUT_OF_SCOPE")

	// Spanning calls need a filter within the scope.
	_, err = c.ListMessages(op, &switchboardv1.ListMessagesRequest{})
	wantErr(t, "ListMessages without filter", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	if !strings.Contains(status.Convert(err).Message(), "listener_id or connection_id") {
		t.Errorf("message %q", status.Convert(err).Message())
	}
	lm, err := c.ListMessages(op, &switchboardv1.ListMessagesRequest{ListenerId: "adt-1", IncludePayloads: true})
	if err != nil || len(lm.GetMessages()) != 1 {
		t.Fatalf("ListMessages of adt-1 = %v, %v", lm, err)
	}
	_, err = c.GetMessage(op, &switchboardv1.GetMessageRequest{MessageId: lm.GetMessages()[0].GetMessageId()})
	if err != nil {
		t.Errorf("GetMessage of adt-1's message: %v", err)
	}
	all, err := c.ListMessages(admin, &switchboardv1.ListMessagesRequest{ListenerId: "lab-1"})
	if err != nil || len(all.GetMessages()) != 1 {
		t.Fatal(all, err)
	}
	_, err = c.GetMessage(op, &switchboardv1.GetMessageRequest{MessageId: all.GetMessages()[0].GetMessageId()})
	wantErr(t, "GetMessage of lab-1's message", err, codes.PermissionDenied, "OUT_OF_SCOPE")

	recv := func(ctx context.Context, req *switchboardv1.ReceiveRequest) error {
		s, err := c.Receive(ctx, req)
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	one := uint64(1)
	err = recv(op, &switchboardv1.ReceiveRequest{StartSequence: &one, StopAtHead: true})
	wantErr(t, "Receive without filter", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	if !strings.Contains(status.Convert(err).Message(), "listener_ids or connection_ids") {
		t.Errorf("message %q", status.Convert(err).Message())
	}
	err = recv(op, &switchboardv1.ReceiveRequest{StartSequence: &one, StopAtHead: true, ListenerIds: []string{"adt-1", "lab-1"}})
	wantErr(t, "Receive of lab-1", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	if err := recv(op, &switchboardv1.ReceiveRequest{StartSequence: &one, StopAtHead: true, ListenerIds: []string{"adt-1"}, Consumer: "adt-reader"}); err != nil {
		t.Errorf("Receive of adt-1: %v", err)
	}
	// Consumer calls: in scope when the consumer's filters are.
	if _, err := c.GetConsumer(op, &switchboardv1.GetConsumerRequest{Name: "adt-reader"}); err != nil {
		t.Errorf("GetConsumer of an in-scope consumer: %v", err)
	}
	if _, err := c.Ack(op, &switchboardv1.AckRequest{Consumer: "adt-reader", ThroughSequence: 1}); err != nil {
		t.Errorf("Ack on an in-scope consumer: %v", err)
	}
	if err := recv(admin, &switchboardv1.ReceiveRequest{StartSequence: &one, StopAtHead: true, Consumer: "everything"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Ack(op, &switchboardv1.AckRequest{Consumer: "everything", ThroughSequence: 1})
	wantErr(t, "Ack on an unfiltered consumer", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	_, err = c.GetConsumer(op, &switchboardv1.GetConsumerRequest{Name: "everything"})
	wantErr(t, "GetConsumer of an unfiltered consumer", err, codes.PermissionDenied, "OUT_OF_SCOPE")
	lcs, err := c.ListConsumers(op, &switchboardv1.ListConsumersRequest{})
	if err != nil || len(lcs.GetConsumers()) != 1 || lcs.GetConsumers()[0].GetName() != "adt-reader" {
		t.Errorf("scoped ListConsumers = %v, %v", lcs, err)
	}

	ws, err := c.WatchEvents(op, &switchboardv1.WatchEventsRequest{})
	if err == nil {
		_, err = ws.Recv()
	}
	wantErr(t, "WatchEvents without filter", err, codes.PermissionDenied, "OUT_OF_SCOPE")
}

func TestMTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	srvLeaf := ca.Issue(t, tlstest.LeafOptions{CommonName: "switchboard", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	sc := tlstest.ServerConfig(srvLeaf, ca)
	sc.ClientAuth = tls.VerifyClientCertIfGiven
	e := startEnv(t, envOpts{access: "# client certificates\ncert *.ops.hospital.example operator\n", tokens: map[string]string{"v": "viewer"}, tls: sc})
	ctx := testCtx(t)

	mapped := ca.Issue(t, tlstest.LeafOptions{CommonName: "ignored", DNSNames: []string{"ris.ops.hospital.example"}, Client: true})
	c, _ := e.client(tlstest.ClientConfig(ca, mapped, "127.0.0.1"))
	if _, err := startListener(t, ctx, c, "tls-1"); err != nil {
		t.Fatalf("StartListener with a mapped certificate: %v", err)
	}
	_, err := c.DeleteConsumer(ctx, &switchboardv1.DeleteConsumerRequest{Name: "x"})
	wantErr(t, "operator DeleteConsumer", err, codes.PermissionDenied, "ROLE_REQUIRED")

	unmapped := ca.Issue(t, tlstest.LeafOptions{DNSNames: []string{"evil.example"}, Client: true})
	c2, _ := e.client(tlstest.ClientConfig(ca, unmapped, "127.0.0.1"))
	_, err = c2.GetJournal(ctx, &switchboardv1.GetJournalRequest{})
	wantErr(t, "unmapped certificate", err, codes.Unauthenticated, "UNAUTHENTICATED")
	if !strings.Contains(status.Convert(err).Message(), "evil.example") {
		t.Errorf("message %q does not name the certificate", status.Convert(err).Message())
	}

	// No certificate: a token over TLS works, nothing else does.
	c3, _ := e.client(tlstest.ClientConfig(ca, nil, "127.0.0.1"))
	_, err = c3.GetJournal(ctx, &switchboardv1.GetJournalRequest{})
	wantErr(t, "no certificate", err, codes.Unauthenticated, "UNAUTHENTICATED")
	if _, err := c3.GetJournal(e.as(ctx, "v"), &switchboardv1.GetJournalRequest{}); err != nil {
		t.Errorf("token over TLS: %v", err)
	}

	r := find(e.logs.records(t), map[string]string{"event": "call", "method": switchboardv1.SwitchboardService_StartListener_FullMethodName})
	if r == nil || r["who"] != "cert:ris.ops.hospital.example" || r["role"] != "operator" || r["target"] != "listener:tls-1" || r["outcome"] != "OK" {
		t.Errorf("StartListener record = %v", r)
	}
}

func TestRateLimit(t *testing.T) {
	// A tenth of a call per second, burst 2: the third control call in a
	// row is refused whatever the machine's speed.
	e := startEnv(t, envOpts{tokens: map[string]string{"o": "operator", "o2": "operator"}, cfg: auth.Config{RateLimit: 0.1, RateBurst: 2}})
	c, cc := e.client(nil)
	ctx := e.as(testCtx(t), "o")
	for range 2 {
		if _, err := c.GetJournal(ctx, &switchboardv1.GetJournalRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.GetJournal(ctx, &switchboardv1.GetJournalRequest{})
	wantErr(t, "third call", err, codes.ResourceExhausted, "RATE_LIMITED")
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("no RetryInfo with a delay: %v", status.Convert(err).Details())
	}
	// Streams count too.
	ws, err := c.WatchEvents(ctx, &switchboardv1.WatchEventsRequest{})
	if err == nil {
		_, err = ws.Recv()
	}
	wantErr(t, "WatchEvents over the limit", err, codes.ResourceExhausted, "RATE_LIMITED")
	// The data path is exempt, health is open, other identities have
	// their own bucket.
	for range 3 {
		_, err := c.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "none", Payload: hl7("S"), FailFast: true})
		if st := status.Convert(err); st.Code() == codes.ResourceExhausted {
			t.Fatalf("Send rate limited: %v", err)
		}
	}
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health: %v", err)
	}
	if _, err := c.GetJournal(e.as(testCtx(t), "o2"), &switchboardv1.GetJournalRequest{}); err != nil {
		t.Fatalf("another identity: %v", err)
	}
	if find(e.logs.records(t), map[string]string{"event": "denied", "who": "token:o", "reason": "RATE_LIMITED"}) == nil {
		t.Error("no audit record of the rate-limit denial")
	}
}

func TestStreamCapAndAudit(t *testing.T) {
	e := startEnv(t, envOpts{tokens: map[string]string{"a": "admin", "c": "consumer"}, cfg: auth.Config{MaxStreams: 1}, dataCalls: true})
	c, _ := e.client(nil)
	ctx := testCtx(t)
	admin := e.as(ctx, "a")
	l, err := startListener(t, admin, c, "adt-1")
	if err != nil {
		t.Fatal(err)
	}
	conn := deliver(t, l.GetStatus().GetBoundAddress(), hl7("M1"))
	_ = conn

	cctx, cancel := context.WithCancel(e.as(ctx, "c"))
	defer cancel()
	one := uint64(1)
	s1, err := c.Receive(cctx, &switchboardv1.ReceiveRequest{StartSequence: &one})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s1.Recv()
	if err != nil || !bytes.Contains(m.GetMessages()[0].GetPayload(), []byte(marker)) {
		t.Fatalf("first stream: %v %v", m, err)
	}
	// Open: a second stream of the same identity is refused, another
	// identity's is not.
	s2, err := c.WatchEvents(e.as(ctx, "c"), &switchboardv1.WatchEventsRequest{})
	if err == nil {
		_, err = s2.Recv()
	}
	wantErr(t, "second stream", err, codes.ResourceExhausted, "TOO_MANY_STREAMS")
	s3, err := c.Receive(admin, &switchboardv1.ReceiveRequest{StartSequence: &one})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Recv(); err != nil {
		t.Fatalf("admin's stream: %v", err)
	}
	cancel()
	for {
		if _, err := s1.Recv(); err != nil {
			break
		}
	}
	// Once the first stream ended, the slot is free again (the server may
	// take a moment to see the cancellation: retry until it has).
	for {
		s4, err := c.Receive(e.as(ctx, "c"), &switchboardv1.ReceiveRequest{StartSequence: &one})
		if err == nil {
			_, err = s4.Recv()
		}
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("stream slot never freed")
		case <-time.After(10 * time.Millisecond):
		}
	}

	// Payload reads and data calls are audited; payload bytes never are.
	if _, err := c.GetMessage(admin, &switchboardv1.GetMessageRequest{MessageId: "in-1"}); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Send(admin, &switchboardv1.SendRequest{ConnectionId: "none", Payload: hl7("S" + marker), FailFast: true})
	recs := e.logs.records(t)
	for _, want := range []map[string]string{
		{"event": "stream_open", "who": "token:c", "role": "consumer", "method": switchboardv1.SwitchboardService_Receive_FullMethodName},
		{"event": "stream_end", "who": "token:c", "outcome": "CANCELLED"},
		{"event": "denied", "who": "token:c", "reason": "TOO_MANY_STREAMS"},
		{"event": "call", "who": "token:a", "method": switchboardv1.SwitchboardService_GetMessage_FullMethodName, "target": "message:in-1", "outcome": "OK"},
		{"event": "call", "who": "token:a", "method": switchboardv1.SwitchboardService_Send_FullMethodName, "target": "connection:none"},
		{"event": "call", "who": "token:a", "method": switchboardv1.SwitchboardService_StartListener_FullMethodName, "target": "listener:adt-1", "outcome": "OK"},
	} {
		if find(recs, want) == nil {
			t.Errorf("no audit record %v", want)
		}
	}
	if strings.Contains(e.logs.String(), marker) {
		t.Errorf("payload bytes in the log:\n%s", e.logs.String())
	}
}

func TestAnonymous(t *testing.T) {
	e := startEnv(t, envOpts{})
	c, _ := e.client(nil)
	ctx := testCtx(t)
	if _, err := startListener(t, ctx, c, "anon-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteConsumer(ctx, &switchboardv1.DeleteConsumerRequest{Name: "x"}); status.Code(err) != codes.NotFound {
		t.Fatalf("anonymous DeleteConsumer: %v", err)
	}
	if r := find(e.logs.records(t), map[string]string{"event": "call", "who": "anonymous", "role": "admin", "target": "listener:anon-1"}); r == nil {
		t.Error("no audit record for the anonymous StartListener")
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := auth.New(auth.Config{}); !errors.Is(err, auth.ErrInvalid) {
		t.Errorf("no file, not anonymous: %v", err)
	}
	if _, err := auth.New(auth.Config{AccessFile: filepath.Join(t.TempDir(), "missing")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("\n\ntoken x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.New(auth.Config{AccessFile: bad}); !errors.Is(err, auth.ErrInvalid) || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("bad file: %v", err)
	}
}
