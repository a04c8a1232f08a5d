package observe_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal/pebbletest"
)

// TestMetricsMove runs real MLLP traffic through a real server, inbound
// and outbound (direct and queued), and checks over HTTP that the metrics
// follow it, and that their labels only ever name configured listeners
// and connections.
func TestMetricsMove(t *testing.T) {
	ctx := testCtx(t)
	s := startStack(t, t.TempDir(), pebblejournal.Options{})
	if err := s.svc.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	s.life.SetRestored()
	l, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "adt", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	adt := l.GetListener().GetStatus().GetBoundAddress()

	// Inbound: two peers, 5 and 3 messages.
	p1, p2 := dialPeer(t, adt), dialPeer(t, adt)
	for i := range 5 {
		p1.send(fmt.Sprintf("A%d", i))
	}
	for i := range 3 {
		p2.send(fmt.Sprintf("B%d", i))
	}
	in := "direction=inbound,listener=adt,connection="
	s.waitMetrics(ctx, "inbound traffic",
		expect{name: "switchboard_frames_received_total", labels: in, want: 8},
		expect{name: "switchboard_bytes_received_total", labels: in, want: float64(8 * len(hl7Message("A0")))},
		expect{name: "switchboard_frames_sent_total", labels: in, want: 8},
		expect{name: "switchboard_acks_sent_total", labels: "listener=adt,connection=,code=AA", want: 8},
		expect{name: "switchboard_acks_sent_total", labels: "listener=adt,connection=,code=AR", want: 0},
		expect{name: "switchboard_connections_open", labels: in, want: 2},
		expect{name: "switchboard_connections_accepted_total", labels: "listener=adt", want: 2},
		expect{name: "switchboard_connections_rejected_total", labels: "listener=adt,reason=max_connections", want: 0},
		expect{name: "switchboard_listener_up", labels: "listener=adt", want: 1},
		expect{name: "switchboard_journal_last_sequence", want: 8},
		expect{name: "switchboard_journal_first_sequence", want: 1},
		expect{name: "switchboard_journal_healthy", want: 1},
		expect{name: "switchboard_journal_failures_total", want: 0},
		expect{name: "switchboard_journal_fsyncs_total", want: 1, atLeast: true},
		expect{name: "switchboard_journal_disk_bytes", want: 1, atLeast: true},
		expect{name: "switchboard_journal_append_seconds", want: 1, atLeast: true},       // observations
		expect{name: "switchboard_journal_group_commit_records", want: 1, atLeast: true}, // observations
		expect{name: "grpc_server_handled_total", labels: "grpc_method=StartListener,grpc_code=OK", want: 1},
		expect{name: "grpc_server_handling_seconds", labels: "grpc_method=StartListener", want: 1},
		expect{name: "go_goroutines", want: 1, atLeast: true},
	)
	s.waitRecordsCommitted(ctx, 8)

	// Outbound, direct: a Send to our own listener.
	if _, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "lab", Config: &switchboardv1.ConnectionConfig{Address: adt}}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("L1")})
	if err != nil || resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED {
		t.Fatalf("Send = %v, %v", resp, err)
	}
	out := "direction=outbound,listener=,connection=lab"
	s.waitMetrics(ctx, "a direct Send",
		expect{name: "switchboard_ack_round_trip_seconds", labels: "listener=,connection=lab", want: 1},
		expect{name: "switchboard_acks_received_total", labels: "listener=,connection=lab,code=AA", want: 1},
		expect{name: "switchboard_frames_sent_total", labels: out, want: 1},
		expect{name: "switchboard_frames_received_total", labels: out, want: 1},
		expect{name: "switchboard_connections_open", labels: out, want: 1},
		expect{name: "switchboard_connection_up", labels: "connection=lab", want: 1},
		expect{name: "switchboard_sends_in_doubt_total", labels: "listener=,connection=lab", want: 0},
		expect{name: "switchboard_frames_received_total", labels: in, want: 9},
		expect{name: "switchboard_connections_open", labels: in, want: 3},
		expect{name: "switchboard_outbox_queued_messages", labels: "connection=lab", want: 0},
		expect{name: "switchboard_outbox_oldest_message_age_seconds", labels: "connection=lab", want: 0},
		expect{name: "grpc_server_handled_total", labels: "grpc_method=Send,grpc_code=OK", want: 1},
	)

	// Queued, to a peer that went away: the listener it was connected to
	// stops, and the connection backs off with three messages waiting.
	pl, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "peer", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "gone", Config: &switchboardv1.ConnectionConfig{Address: pl.GetListener().GetStatus().GetBoundAddress()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.StopListener(ctx, &switchboardv1.StopListenerRequest{ListenerId: "peer"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "gone", Payload: hl7Message(fmt.Sprintf("G%d", i)), Queued: true})
		if err != nil || r.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_QUEUED {
			t.Fatalf("queued Send = %v, %v", r, err)
		}
	}
	fams := s.waitMetrics(ctx, "three messages queued for an absent peer",
		expect{name: "switchboard_outbox_queued_messages", labels: "connection=gone", want: 3},
		expect{name: "switchboard_outbox_in_doubt_messages", labels: "connection=gone", want: 0},
		expect{name: "switchboard_outbox_failed_total", labels: "connection=gone", want: 0},
		expect{name: "switchboard_outbox_attempts_total", labels: "connection=gone,result=accepted", want: 0},
		expect{name: "switchboard_connection_up", labels: "connection=gone", want: 0},
		expect{name: "switchboard_connections_open", labels: "direction=outbound,connection=gone", want: 0},
		expect{name: "switchboard_connections_closed_total", labels: "direction=outbound,connection=gone", want: 1, atLeast: true},
		expect{name: "switchboard_outbox_attempts_total", labels: "connection=lab,result=accepted", want: 0},
	)
	if age, ok := fams.value("switchboard_outbox_oldest_message_age_seconds", "connection=gone"); !ok || age < 0 {
		t.Errorf("oldest message age of gone = %v (present %v); want a non-negative age", age, ok)
	}
	// The stopped listener's series go once its connections have.
	s.waitGone(ctx, "switchboard_listener_up", "listener=peer")
	s.waitGone(ctx, "switchboard_connections_open", "listener=peer")

	// Labels: configured ids only, never a generated connection id or a
	// peer's port.
	conns, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var generated []string
	for _, c := range conns.GetConnections() {
		if c.GetListenerId() != "" {
			generated = append(generated, c.GetConnectionId())
		}
	}
	if len(generated) < 3 {
		t.Fatalf("ListConnections shows %d inbound connections; want 3", len(generated))
	}
	fams = s.scrape()
	byLabel, all := labelValues(fams)
	for label, allowed := range map[string]map[string]bool{
		"listener":   {"": true, "adt": true},
		"connection": {"": true, "lab": true, "gone": true},
	} {
		for _, v := range keys(byLabel[label]) {
			if !allowed[v] {
				t.Errorf("label %s has value %q; want only %v", label, v, keys(allowed))
			}
		}
	}
	ports := []string{p1.port(), p2.port()}
	for _, v := range all {
		for _, id := range generated {
			if strings.Contains(v, id) {
				t.Errorf("a label value %q holds the inbound connection id %s", v, id)
			}
		}
		for _, port := range ports {
			if v == port || strings.Contains(v, ":"+port) {
				t.Errorf("a label value %q holds the peer port %s", v, port)
			}
		}
	}
}

// TestFramingAndRejections: a connection turned away by the limit and a
// frame over the size limit are counted by reason and kind.
func TestFramingAndRejections(t *testing.T) {
	ctx := testCtx(t)
	s := startStack(t, t.TempDir(), pebblejournal.Options{})
	l, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "tiny",
		Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0", MaxConnections: 1, MaxFrameBytes: 64}})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.GetListener().GetStatus().GetBoundAddress()
	p := dialPeer(t, addr)
	s.waitMetrics(ctx, "the first connection", expect{name: "switchboard_connections_open", labels: "listener=tiny", want: 1})
	// Turned away at once (reset: the dial itself may fail).
	if extra, err := net.Dial("tcp", addr); err == nil {
		_ = extra.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.ReadAll(extra)
		extra.Close()
	}
	if _, err := p.nc.Write(mllp.AppendFrame(nil, hl7Message("TOO-LARGE"))); err != nil {
		t.Fatal(err)
	}
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.ReadAll(p.nc) // the negative ACK, then the close
	tiny := "direction=inbound,listener=tiny,connection="
	s.waitMetrics(ctx, "a rejection and a frame too large",
		expect{name: "switchboard_connections_rejected_total", labels: "listener=tiny,reason=max_connections", want: 1},
		expect{name: "switchboard_connections_rejected_total", labels: "listener=tiny,reason=max_connections_per_source", want: 0},
		expect{name: "switchboard_framing_errors_total", labels: tiny + ",kind=frame_too_large", want: 1},
		expect{name: "switchboard_connections_closed_total", labels: tiny + ",reason=frame_too_large", want: 1},
		expect{name: "switchboard_acks_sent_total", labels: "listener=tiny,code=AR", want: 1},
		expect{name: "switchboard_connections_open", labels: tiny, want: 0},
		expect{name: "switchboard_connections_accepted_total", labels: "listener=tiny", want: 1},
	)
}

// TestReadyz: /readyz is 503 until Restore has finished and while a
// restored listener's port is taken (BACKING_OFF, with the reason), 200
// once it is bound; 503 while the journal fails, and 200 again once it
// recovered; /healthz is 200 throughout.
func TestReadyz(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	port := freePort(t)
	first := startStack(t, dir, pebblejournal.Options{})
	if _, err := first.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "adt",
		Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:" + port}}); err != nil {
		t.Fatal(err)
	}
	first.stop()

	blocker, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	s := startStack(t, dir, pebblejournal.Options{FS: fs})
	s.expectReady(http.StatusServiceUnavailable, "restore not finished")
	if code, body := s.get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if err := s.svc.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	s.life.SetRestored()
	body := s.expectReady(http.StatusServiceUnavailable, `listener "adt" is backing off`)
	if strings.Contains(body, "restore") || !strings.Contains(body, "in use") {
		t.Errorf("/readyz body %q; want only the listener's reason, with its error", body)
	}
	s.waitMetrics(ctx, "the listener backing off", expect{name: "switchboard_listener_up", labels: "listener=adt", want: 0})

	blocker.Close() // the retry (1 s after the failed bind) binds it
	for {
		if code, _ := s.get("/readyz"); code == http.StatusOK {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("/readyz never turned 200 once the port was free")
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.waitMetrics(ctx, "the listener bound", expect{name: "switchboard_listener_up", labels: "listener=adt", want: 1})

	// The disk fails: a message is refused, and the server is not ready.
	fs.FailSyncs.Store(true)
	p := dialPeer(t, "127.0.0.1:"+port)
	if _, err := p.nc.Write(mllp.AppendFrame(nil, hl7Message("LOST"))); err != nil {
		t.Fatal(err)
	}
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.dec.Next(); err != nil { // the AR
		t.Fatal(err)
	}
	s.expectReady(http.StatusServiceUnavailable, "journal: ")
	s.waitMetrics(ctx, "the journal failing",
		expect{name: "switchboard_journal_healthy", want: 0},
		expect{name: "switchboard_journal_failures_total", want: 1},
		expect{name: "switchboard_acks_sent_total", labels: "listener=adt,code=AR", want: 1})
	fs.FailSyncs.Store(false)
	journaltest.WaitHealthy(t, s.j)
	s.expectReady(http.StatusOK, "ready")

	s.life.SetStopping()
	s.expectReady(http.StatusServiceUnavailable, "shutting down")
}

// expectReady checks /readyz's status and that its body holds want.
func (s *stack) expectReady(code int, want string) string {
	s.t.Helper()
	got, body := s.get("/readyz")
	if got != code || !strings.Contains(body, want) {
		s.t.Fatalf("/readyz = %d %q; want %d with %q", got, body, code, want)
	}
	return body
}

// waitGone scrapes until no series of name has the labels.
func (s *stack) waitGone(ctx context.Context, name, labels string) {
	s.t.Helper()
	for {
		if _, ok := s.scrape().value(name, labels); !ok {
			return
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("%s{%s} never went away", name, labels)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitRecordsCommitted waits until the group-commit-records histogram sums
// to n records (the hook runs once a commit's appends were released).
func (s *stack) waitRecordsCommitted(ctx context.Context, n float64) {
	s.t.Helper()
	for {
		var sum float64
		if fam := s.scrape()["switchboard_journal_group_commit_records"]; fam != nil && len(fam.GetMetric()) == 1 {
			sum = fam.GetMetric()[0].GetHistogram().GetSampleSum()
		}
		if sum == n {
			return
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("switchboard_journal_group_commit_records sums to %v records; want %v", sum, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
