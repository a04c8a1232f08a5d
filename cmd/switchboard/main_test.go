package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/transport"
)

// The test binary runs the real command when asked to, so the tests below
// can start `switchboard serve` as a child process and signal it.
func TestMain(m *testing.M) {
	if os.Getenv("SWITCHBOARD_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "Usage:"},
		{[]string{"help"}, 0, "Usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"serve", "--no-such-flag"}, 2, "unknown flag: --no-such-flag"},
		{[]string{"serve", "--log-level", "loud"}, 1, "--log-level"},
		{[]string{"serve", "extra"}, 2, "unexpected arguments"},
		{[]string{"serve", "--admin-addr", "", "--admin-pprof"}, 2, "--admin-pprof needs an --admin-addr"},
		{[]string{"serve", "--pprof-addr", "127.0.0.1:6060"}, 2, "unknown flag: --pprof-addr"},
	} {
		var out bytes.Buffer
		if code := run(tc.args, &out, &out); code != tc.code || !strings.Contains(out.String(), tc.out) {
			t.Errorf("run(%q) = %d, %q; want %d containing %q", tc.args, code, out.String(), tc.code, tc.out)
		}
	}
}

// TestServeSignal runs `switchboard serve`, exercises it, sends SIGTERM with
// a frame half received and a Receive stream open, and checks the shutdown
// order: the frame is finished and acknowledged, the stream ends with
// UNAVAILABLE, the process exits 0, and the journal kept everything.
func TestServeSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir", dir, "--log-format", "json", "--drain-timeout", "5s")
	cmd.Env = append(os.Environ(), "SWITCHBOARD_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	logs := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				select {
				case logs <- rec:
				default:
				}
			}
		}
		close(logs)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	var grpcAddr, adminAddr string
	for rec := range logs {
		if rec["msg"] == "admin serving" {
			adminAddr, _ = rec["admin_addr"].(string)
		}
		if rec["msg"] == "switchboard serving" {
			grpcAddr, _ = rec["grpc_addr"].(string)
			break
		}
	}
	if grpcAddr == "" || adminAddr == "" {
		t.Fatalf("serve never logged its addresses (gRPC %q, admin %q)", grpcAddr, adminAddr)
	}
	t.Logf("serve is up on %s", grpcAddr)

	// A second server on the same data directory is refused, saying why.
	var second bytes.Buffer
	if code := run([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir", dir}, &second, &second); code != 1 || !strings.Contains(second.String(), "locked by another process") {
		t.Errorf("second serve on the same directory = %d, %q", code, second.String())
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	health := healthpb.NewHealthClient(cc)
	if h, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", h, err)
	}
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	l, err := client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "adt", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := client.Receive(ctx, &switchboardv1.ReceiveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}

	nc, err := net.Dial("tcp", l.GetListener().GetStatus().GetBoundAddress())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	mllp := transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()
	msg := []byte("MSH|^~\\&|A|B|C|D|20261125||ADT^A01^ADT_A01|SIGTERM-1|P|2.5\rPID|1\r")
	frame := mllp.AppendFrame(nil, msg)
	if _, err := nc.Write(frame[:15]); err != nil {
		t.Fatal(err)
	}
	// Wait until the server has read the partial frame.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		conns, err := client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{})
		if err == nil && len(conns.GetConnections()) == 1 && conns.GetConnections()[0].GetStatus().GetLastActivityTime().AsTime().After(conns.GetConnections()[0].GetStatus().GetOpenTime().AsTime()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server never read the partial frame")
		}
	}

	// The admin address: ready, the listener and its connection in the
	// metrics, no pprof unless asked for.
	if code, body := httpGet(t, "http://"+adminAddr+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz = %d %q; want 200 ready", code, body)
	}
	if code, _ := httpGet(t, "http://"+adminAddr+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --admin-pprof = %d; want 404", code)
	}
	_, metrics := httpGet(t, "http://"+adminAddr+"/metrics")
	for _, want := range []string{
		`switchboard_listener_up{listener="adt"} 1`,
		`switchboard_connections_open{connection="",direction="inbound",listener="adt"} 1`,
		`switchboard_journal_healthy 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="StartListener",grpc_service="switchboard.v1.SwitchboardService",grpc_type="unary"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The stream ends with UNAVAILABLE once the listener has drained; finish
	// the frame first.
	for rec := range logs { // shutdown has begun
		if rec["msg"] == "shutting down" {
			break
		}
	}
	// Draining waits for the frame: not ready meanwhile.
	if code, body := httpGet(t, "http://"+adminAddr+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz while draining = %d %q; want 503 shutting down", code, body)
	}
	if _, err := nc.Write(frame[15:]); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack, err := transport.NewDecoder(nc, mllp).Next()
	if err != nil {
		t.Fatalf("no ACK for the frame in flight at SIGTERM: %v", err)
	}
	if a, err := hl7.ParseAck(ack); err != nil || a.Code != hl7.AA || a.ControlID != "SIGTERM-1" {
		t.Errorf("ACK = %+v, %v", a, err)
	}
	var last error
	for {
		resp, err := stream.Recv()
		if err != nil {
			last = err
			break
		}
		if m := resp.GetMessages(); len(m) != 1 || m[0].GetControlId() != "SIGTERM-1" {
			t.Errorf("Receive got %v", resp)
		}
	}
	t.Logf("Receive ended with %v", last)
	if status.Code(last) != codes.Unavailable {
		t.Errorf("Receive ended with %v, want Unavailable", last)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve exited with %v, want 0", err)
		}
		exited <- err // for Cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
}

// fakeJournal is a journal whose health the test sets.
type fakeJournal struct {
	journal.Journal // only Health is used
	mu              sync.Mutex
	err             error
	changed         chan struct{}
}

func (f *fakeJournal) Health() (error, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if errors.Is(f.err, journal.ErrClosed) {
		return f.err, nil
	}
	return f.err, f.changed
}

func (f *fakeJournal) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
	close(f.changed)
	f.changed = make(chan struct{})
}

// countingHandler counts log records by level.
type countingHandler struct {
	mu     sync.Mutex
	counts map[slog.Level]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[r.Level]++
	return nil
}

func (h *countingHandler) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[l]
}

// TestHealthFollowsJournal: health is NOT_SERVING while the journal is
// unavailable and SERVING again once it recovers, for both the overall and
// the Switchboard service status; each change is logged once however often
// the journal signals; following stops when the journal closes.
func TestHealthFollowsJournal(t *testing.T) {
	j := &fakeJournal{changed: make(chan struct{})}
	hs := health.NewServer()
	logs := &countingHandler{counts: map[slog.Level]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		followJournalHealth(t.Context(), j, hs, slog.New(logs))
	}()
	waitStatus := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for _, svc := range []string{"", switchboardv1.SwitchboardService_ServiceDesc.ServiceName} {
			for {
				resp, err := hs.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
				if err == nil && resp.GetStatus() == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("health of %q = %v, %v; want %v", svc, resp, err, want)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}

	disk := errors.Join(journal.ErrUnavailable, errors.New("disk full"))
	j.set(disk)
	waitStatus(healthpb.HealthCheckResponse_NOT_SERVING)
	j.set(disk) // signalled again, still failing: no new log line
	j.set(nil)
	waitStatus(healthpb.HealthCheckResponse_SERVING)
	j.set(disk)
	waitStatus(healthpb.HealthCheckResponse_NOT_SERVING)
	j.set(nil)
	waitStatus(healthpb.HealthCheckResponse_SERVING)
	j.set(journal.ErrClosed)
	<-done
	if e, i := logs.count(slog.LevelError), logs.count(slog.LevelInfo); e != 2 || i != 2 {
		t.Errorf("logged %d errors and %d infos for two failures and two recoveries; want 2 and 2", e, i)
	}
}

// TestMemoryLimit: serve sets a soft memory limit above the buffered-frame
// budget unless told otherwise, and leaves GOMEMLIMIT to the runtime.
func TestMemoryLimit(t *testing.T) {
	f := serveFlags{maxBuffered: 256 << 20, memoryLimit: -1}
	t.Setenv("GOMEMLIMIT", "")
	if got := memoryLimit(f); got != 512<<20 {
		t.Errorf("default memory limit = %d, want the budget + 256 MiB", got)
	}
	f.memoryLimit = 0
	if got := memoryLimit(f); got != 0 {
		t.Errorf("--memory-limit 0 gives %d, want none", got)
	}
	f.memoryLimit = 1 << 30
	if got := memoryLimit(f); got != 1<<30 {
		t.Errorf("--memory-limit 1GiB gives %d", got)
	}
	t.Setenv("GOMEMLIMIT", "2GiB")
	if got := memoryLimit(f); got != 0 {
		t.Errorf("with GOMEMLIMIT set, serve sets %d; want it left to the runtime", got)
	}
}

// restorer is a Restore that returns when told to.
type restorer struct {
	entered chan struct{}
	release chan error
}

func (r restorer) Restore(context.Context) error {
	close(r.entered)
	return <-r.release
}

// TestNotServingUntilRestored: health is NOT_SERVING while the last run's
// listeners and connections are restored, SERVING once Restore returned,
// and stays NOT_SERVING when it failed.
func TestNotServingUntilRestored(t *testing.T) {
	for _, fail := range []bool{false, true} {
		hs := health.NewServer()
		setServing(hs, healthpb.HealthCheckResponse_NOT_SERVING) // as serve does before it starts gRPC
		r := restorer{entered: make(chan struct{}), release: make(chan error)}
		done := make(chan error, 1)
		go func() { done <- restoreThenServe(t.Context(), r, hs, func(context.Context) error { return nil }) }()
		<-r.entered
		check := func(want healthpb.HealthCheckResponse_ServingStatus) {
			t.Helper()
			for _, svc := range []string{"", switchboardv1.SwitchboardService_ServiceDesc.ServiceName} {
				resp, err := hs.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
				if err != nil || resp.GetStatus() != want {
					t.Errorf("health of %q = %v, %v; want %v", svc, resp.GetStatus(), err, want)
				}
			}
		}
		check(healthpb.HealthCheckResponse_NOT_SERVING)
		var err error
		if fail {
			err = errors.New("state store unreadable")
		}
		r.release <- err
		if got := <-done; (got != nil) != fail {
			t.Errorf("restoreThenServe = %v, want an error: %v", got, fail)
		}
		if fail {
			check(healthpb.HealthCheckResponse_NOT_SERVING)
		} else {
			check(healthpb.HealthCheckResponse_SERVING)
		}
	}
}

// TestNoAdminNoMetrics: --admin-addr "" means no metrics at all (the cost
// benchmark's "off"), and the default serves them on loopback.
func TestNoAdminNoMetrics(t *testing.T) {
	for _, tc := range []struct {
		args []string
		addr string
	}{
		{nil, "127.0.0.1:9090"},
		{[]string{"--admin-addr", ""}, ""},
	} {
		f, err := parseServeFlags(tc.args, io.Discard)
		if err != nil || f.adminAddr != tc.addr || f.adminPprof {
			t.Errorf("parseServeFlags(%q) = %+v, %v", tc.args, f, err)
		}
		m, reg, err := newMetrics(f)
		if err != nil || (m == nil) != (tc.addr == "") || (reg == nil) != (m == nil) {
			t.Errorf("--admin-addr %q: metrics %v, registry %v, %v", tc.addr, m != nil, reg != nil, err)
		}
		if tc.addr == "" && metricsObserver(m) != nil {
			t.Error("an Observer without metrics")
		}
	}
}

// httpGet returns the status and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}
