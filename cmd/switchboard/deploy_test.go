package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// metricName finds the metric names in a PromQL expression: Switchboard's
// own and the gRPC server's (up is Prometheus's).
var metricName = regexp.MustCompile(`\b(?:switchboard|grpc_server)_[a-z_]+\b`)

// deployMetrics returns every metric name the alert rules and the dashboard
// under deploy/ use, histogram series reduced to their family.
func deployMetrics(t *testing.T) []string {
	t.Helper()
	var exprs []string
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	exprs = append(exprs, string(rules))
	raw, err := os.ReadFile("../../deploy/grafana/switchboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("deploy/grafana/switchboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				m = strings.TrimSuffix(m, suffix)
			}
			seen[m] = true
		}
	}
	names := make([]string, 0, len(seen))
	for m := range seen {
		names = append(names, m)
	}
	slices.Sort(names)
	if len(names) < 10 {
		t.Fatalf("found only %v in deploy/", names)
	}
	return names
}

// TestDeployMetricsExist: every metric the alert rules and the dashboard
// use is exported by a running server (the real binary) once it has seen
// the traffic that makes each of them: a durable consumer, an inbound
// message, a Send that is acknowledged, a queued message held in doubt, a
// framing error.
func TestDeployMetricsExist(t *testing.T) {
	names := deployMetrics(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	grpcAddr, adminAddr := freePort(t), freePort(t)
	logf, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(os.Args[0], "serve", "--grpc-addr", grpcAddr, "--admin-addr", adminAddr, "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "SWITCHBOARD_RUN_MAIN=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	s := &crashServer{t: t}
	s.waitServing(ctx, healthpb.NewHealthClient(cc))

	// A durable consumer (its figures exist from its creation on; the
	// stream stays attached for the rest of the test).
	if _, err := client.Receive(ctx, &switchboardv1.ReceiveRequest{Consumer: "ops"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := client.GetConsumer(ctx, &switchboardv1.GetConsumerRequest{Name: "ops"}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("consumer ops never created: %v", err)
		}
	}

	// An inbound listener, and an outbound connection to it: a direct Send
	// is received, stored and acknowledged.
	adt := freePort(t)
	if _, err := client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "adt", Config: &switchboardv1.ListenerConfig{Address: adt}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "lab", Config: &switchboardv1.ConnectionConfig{Address: adt}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: crashMessage("D-1")}); err != nil {
		t.Fatal(err)
	}
	// A peer that reads and never answers, with the HOLD policy: a queued
	// message ends in doubt and is held.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			nc, err := silent.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, nc); nc.Close() }()
		}
	}()
	if _, err := client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "silent", Config: &switchboardv1.ConnectionConfig{
		Address:    silent.Addr().String(),
		AckTimeout: durationpb.New(200 * time.Millisecond),
		Outbox:     &switchboardv1.OutboxPolicy{InDoubt: switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD},
	}}); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "silent", Payload: crashMessage("Q-1"), Queued: true})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m, err := client.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: resp.GetMessageId()})
		if err == nil && m.GetMessage().GetState() == switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queued message never held in doubt: %v, %v", m, err)
		}
	}
	// A strict listener and a peer that sends junk: a framing error.
	strict := freePort(t)
	if _, err := client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "strict", Config: &switchboardv1.ListenerConfig{
		Address: strict,
		Framing: &switchboardv1.Framing{Kind: &switchboardv1.Framing_Mllp{Mllp: &switchboardv1.MllpFraming{Strict: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
	junk, err := net.Dial("tcp", strict)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = junk.Write([]byte("not a frame\r\n"))
	_ = junk.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(io.Discard, junk) // until the server closes it
	junk.Close()

	// Every family the rules and the dashboard use is exported (its HELP
	// line is there); wait, bounded, for the scrape-time ones to catch up.
	var missing []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		body := scrape(t, "http://"+adminAddr+"/metrics")
		missing = missing[:0]
		for _, n := range names {
			if !strings.Contains(body, "# HELP "+n+" ") {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("metrics used in deploy/ but not exported: %v", missing)
	}
	t.Logf("%d metric families used in deploy/, all exported: %v", len(names), names)
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}
