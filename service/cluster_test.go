package service_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/internal/natstest"
	"github.com/switchboard-dev/switchboard/journal/jsjournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/service/cluster"
	"github.com/switchboard-dev/switchboard/transport"
)

// instance is one Switchboard instance of a cluster, as serve --cluster
// assembles it: the journal stream, the cluster's bucket with the shared
// stores, the node, the Service and a gRPC server on loopback.
type instance struct {
	t      *testing.T
	name   string
	j      *jsjournal.Journal
	nc     *nats.Conn
	node   *cluster.Node
	svc    *service.Service
	gs     *grpc.Server
	cc     *grpc.ClientConn
	client switchboardv1.SwitchboardServiceClient
	done   bool
}

const testTTL = 2 * time.Second

// retry runs fn until it succeeds, for the first operations on a cluster
// that is still electing its stream leaders (bounded: 30 s).
func retry[T any](t *testing.T, what string, fn func() (T, error)) T {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := fn()
		if err == nil {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func startInstance(t *testing.T, urls, name string) *instance {
	t.Helper()
	ctx := t.Context()
	in := &instance{t: t, name: name}
	in.j = retry(t, "journal", func() (*jsjournal.Journal, error) {
		return jsjournal.Open(ctx, jsjournal.Options{URL: urls, Name: "sbtest", Replicas: 3,
			AppendTimeout: 2 * time.Second, CheckInterval: 500 * time.Millisecond, RetryMax: 500 * time.Millisecond,
			NATSOptions: []nats.Option{nats.ReconnectWait(100 * time.Millisecond)}})
	})
	var err error
	in.nc, err = nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(in.nc)
	if err != nil {
		t.Fatal(err)
	}
	b := retry(t, "bucket", func() (*jsjournal.Bucket, error) {
		return jsjournal.OpenBucket(ctx, js, "sbtest-state", 3, 2*time.Second)
	})
	answers := retry(t, "answers", func() (*jsjournal.AnswerStore, error) {
		return jsjournal.OpenAnswers(ctx, js, "sbtest-answers", 3, time.Hour)
	})
	in.node = retry(t, "node", func() (*cluster.Node, error) {
		return cluster.Start(ctx, cluster.Config{Bucket: b, Conn: in.nc, Cluster: "sbtest", Instance: name, LeaseTTL: testTTL, Logger: testLogger(t, name)})
	})
	in.svc, err = service.New(service.Config{
		Logger:  testLogger(t, name),
		Journal: in.j, State: jsjournal.NewStateStore(b), Outbox: jsjournal.NewOutbox(b, in.node.Fence),
		Consumers: jsjournal.NewConsumerStore(b), Answers: answers, Cluster: in.node,
	})
	if err != nil {
		t.Fatal(err)
	}
	in.gs, _, err = service.NewGRPCServer(in.svc, service.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = in.gs.Serve(lis) }()
	in.cc, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	in.client = switchboardv1.NewSwitchboardServiceClient(in.cc)
	if err := in.svc.Restore(ctx); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(in.stop)
	return in
}

// stop shuts the instance down as serve does: its resources are handed
// over at once.
func (in *instance) stop() {
	if in.done {
		return
	}
	in.done = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	in.svc.Shutdown(ctx)
	in.gs.Stop()
	_ = in.cc.Close()
	in.node.Close()
	in.nc.Close()
	_ = in.j.Close()
}

// cut cuts the instance's cluster connection (heartbeats and calls): to
// the others it is as good as dead, and it must let go of its resources
// by itself.
func (in *instance) cut() { in.nc.Close() }

// startPair starts instances a and b on a fresh in-process 3-node cluster.
func startPair(t *testing.T) (a, b *instance) {
	t.Helper()
	urls := natstest.URLs(natstest.Cluster(t))
	return startInstance(t, urls, "a"), startInstance(t, urls, "b")
}

func clusterMsg(i int) []byte {
	return fmt.Appendf(nil, "MSH|^~\\&|SB|TEST|LAB|HOSP|20261202120000||ADT^A01|CL%04d|P|2.5\rPID|1||%d\r", i, i)
}

func TestClusterRouting(t *testing.T) {
	a, b := startPair(t)
	ctx := testCtx(t)
	peer := startTestPeer(t, ackWith(hl7.AA, ""))

	// Created through a: owned by a.
	cfg := &switchboardv1.ConnectionConfig{Address: peer.addr()}
	cr, err := a.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "lab", Config: cfg})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if got := cr.GetConnection().GetStatus().GetInstance(); got != "a" {
		t.Fatalf("Connect through a: instance %q, want a", got)
	}
	// The same Connect through b is routed to a (idempotent there).
	cr, err = b.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "lab", Config: cfg})
	if err != nil || cr.GetConnection().GetStatus().GetInstance() != "a" {
		t.Fatalf("Connect again through b = %v, %v; want a's connection", cr, err)
	}
	// A Send through b runs on a, and the ACK comes back matched.
	waitFor(t, func() bool {
		g, err := b.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: "lab"})
		return err == nil && g.GetConnection().GetStatus().GetState() == switchboardv1.ConnectionState_CONNECTION_STATE_OPEN
	})
	sr, err := b.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: clusterMsg(1)})
	if err != nil {
		t.Fatalf("routed Send: %v", err)
	}
	if sr.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED || sr.GetSentControlId() != "CL0001" {
		t.Fatalf("routed Send = %v; want ACCEPTED for CL0001", sr)
	}
	if got := <-peer.received; !strings.Contains(string(got), "CL0001") {
		t.Fatalf("peer got %q", got)
	}
	// A listener started through b runs on b; a sees it, and both list both.
	ls, err := b.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "in", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	if err != nil || ls.GetListener().GetStatus().GetInstance() != "b" {
		t.Fatalf("StartListener through b = %v, %v", ls, err)
	}
	gl, err := a.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "in"})
	if err != nil || gl.GetListener().GetStatus().GetInstance() != "b" {
		t.Fatalf("GetListener through a = %v, %v; want b's", gl, err)
	}
	for _, in := range []*instance{a, b} {
		lc, err := in.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{})
		if err != nil || len(lc.GetConnections()) != 1 || lc.GetConnections()[0].GetStatus().GetInstance() != "a" {
			t.Fatalf("ListConnections through %s = %v, %v; want lab on a", in.name, lc, err)
		}
		ll, err := in.client.ListListeners(ctx, &switchboardv1.ListListenersRequest{})
		if err != nil || len(ll.GetListeners()) != 1 || ll.GetListeners()[0].GetStatus().GetInstance() != "b" {
			t.Fatalf("ListListeners through %s = %v, %v; want in on b", in.name, ll, err)
		}
	}
	// A message received on b's listener is in the shared journal: a reads
	// it.
	p := dialPeer(t, ls.GetListener().GetStatus().GetBoundAddress())
	p.write(mllp.AppendFrame(nil, clusterMsg(2)))
	if ack := p.readFrame(); !strings.Contains(string(ack), "MSA|AA|CL0002") {
		t.Fatalf("inbound ACK = %q", ack)
	}
	waitFor(t, func() bool { last, _ := a.j.LastSeq(ctx); return last >= 1 })
	// Disconnect through b removes it on a; it is gone everywhere.
	if _, err := b.client.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: "lab"}); err != nil {
		t.Fatalf("routed Disconnect: %v", err)
	}
	for _, in := range []*instance{a, b} {
		_, err := in.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: "lab"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("GetConnection through %s after Disconnect: %v; want NotFound", in.name, err)
		}
	}
	if a.node.Leased("connection", "lab") {
		waitFor(t, func() bool { return !a.node.Leased("connection", "lab") })
	}
}

// TestClusterFailover: the owner of a connection with queued messages is
// cut off from the cluster; it lets the connection go, the other instance
// takes it over within the lease TTL and delivers what was queued.
func TestClusterFailover(t *testing.T) {
	a, b := startPair(t)
	ctx := testCtx(t)
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	cfg := &switchboardv1.ConnectionConfig{Address: peer.addr(), Outbox: fastPolicy(nil), AckTimeout: durationpbNew(2 * time.Second)}
	if _, err := a.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "lab", Config: cfg}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n / 2 {
		if _, err := b.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: clusterMsg(i), Queued: true}); err != nil {
			t.Fatalf("queued Send %d through b: %v", i, err)
		}
	}
	// Cut a off while the rest are queued.
	a.cut()
	began := time.Now()
	for i := n / 2; i < n; i++ {
		// As a client would: each attempt bounded (a request that reached
		// the cut-off instance as its connection closed gets no answer),
		// retried while the connection has no live owner.
		var err error
		for range 100 {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = b.client.Send(actx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: clusterMsg(i), Queued: true, IdempotencyKey: fmt.Sprint("k", i)})
			cancel()
			if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
				break
			}
			time.Sleep(100 * time.Millisecond) // during the failover
		}
		if err != nil {
			t.Fatalf("queued Send %d through b during the failover: %v", i, err)
		}
	}
	waitFor(t, func() bool {
		g, err := b.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: "lab"})
		return err == nil && g.GetConnection().GetStatus().GetInstance() == "b"
	})
	t.Logf("connection re-owned by b %v after a was cut off (lease TTL %v)", time.Since(began).Round(100*time.Millisecond), testTTL)
	got := map[string]int{}
	deadline := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case m := <-peer.received:
			h, err := hl7.ParseHeader(m)
			if err != nil {
				t.Fatal(err)
			}
			got[h.ControlID]++
		case <-deadline:
			t.Fatalf("peer got %d of %d messages: %v", len(got), n, got)
		}
	}
	for id, c := range got {
		if c > 1 {
			t.Logf("%s delivered %d times (in doubt at the failover)", id, c)
		}
	}
	// a has let go: it runs nothing.
	if _, err := a.svc.Registry().Connection("lab"); err == nil {
		t.Fatal("a still runs lab after being cut off")
	}
}

// TestClusterQuorumLoss: with two of three NATS nodes down no inbound
// message is acknowledged positively and the journal reports unhealthy;
// once they are back, messages are acknowledged again.
func TestClusterQuorumLoss(t *testing.T) {
	nodes := natstest.Cluster(t)
	a := startInstance(t, nodes[0].URL(), "a")
	ctx := testCtx(t)
	// A fixed port: cut off from the quorum, the instance lets the
	// listener go, and binds it again once it is back.
	addr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePorts(t, 1)[0])
	if _, err := a.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "in", Config: &switchboardv1.ListenerConfig{Address: addr}}); err != nil {
		t.Fatal(err)
	}
	p := dialPeer(t, addr)
	p.write(mllp.AppendFrame(nil, clusterMsg(1)))
	if ack := p.readFrame(); !strings.Contains(string(ack), "MSA|AA|") {
		t.Fatalf("ACK before = %q", ack)
	}
	nodes[1].Stop()
	nodes[2].Stop()
	waitFor(t, func() bool { err, _ := a.j.Health(); return err != nil })
	p.write(mllp.AppendFrame(nil, clusterMsg(2)))
	if ack, err := p.tryRead(); strings.Contains(string(ack), "MSA|AA|") {
		t.Fatalf("positive ACK without quorum: %q", ack)
	} else {
		t.Logf("without quorum: answer %q, read error %v", ack, err)
	}
	nodes[1].Restart()
	nodes[2].Restart()
	deadline := time.Now().Add(30 * time.Second)
	for i := 3; ; i++ {
		if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			p := &peer{t: t, nc: nc, dec: transport.NewDecoder(nc, mllp)}
			p.write(mllp.AppendFrame(nil, clusterMsg(i)))
			ack, _ := p.tryRead()
			_ = nc.Close()
			if strings.Contains(string(ack), "MSA|AA|") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no positive ACK 30 s after quorum came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tryRead returns the next frame, or the error that ended the wait (the
// server closed the connection, or 10 s passed).
func (p *peer) tryRead() ([]byte, error) {
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := p.dec.Next()
	return bytes.Clone(f), err
}

// testLogger logs an instance's lines to the test log when SB_TEST_LOG is
// set (debugging), else nowhere.
func testLogger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("SB_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("instance", name)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestClusterEveryInstance: a listener with every_instance is bound by
// every instance (here on a port of its own each, as they share one
// host), and stopping it through one stops it everywhere.
func TestClusterEveryInstance(t *testing.T) {
	a, b := startPair(t)
	ctx := testCtx(t)
	cfg := &switchboardv1.ListenerConfig{Address: "127.0.0.1:0", EveryInstance: true}
	if _, err := a.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "lb", Config: cfg}); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for i, in := range []*instance{a, b} {
		var g *switchboardv1.GetListenerResponse
		waitFor(t, func() bool {
			var err error
			g, err = in.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "lb"})
			return err == nil && g.GetListener().GetStatus().GetState() == switchboardv1.ListenerState_LISTENER_STATE_LISTENING
		})
		if got := g.GetListener().GetStatus().GetInstance(); got != in.name {
			t.Fatalf("GetListener through %s: instance %q", in.name, got)
		}
		addrs = append(addrs, g.GetListener().GetStatus().GetBoundAddress())
		p := dialPeer(t, addrs[i])
		p.write(mllp.AppendFrame(nil, clusterMsg(10+i)))
		if ack := p.readFrame(); !strings.Contains(string(ack), "MSA|AA|") {
			t.Fatalf("ACK from %s = %q", in.name, ack)
		}
	}
	ll, err := b.client.ListListeners(ctx, &switchboardv1.ListListenersRequest{})
	if err != nil || len(ll.GetListeners()) != 1 {
		t.Fatalf("ListListeners = %v, %v; want lb once", ll, err)
	}
	if _, err := b.client.StopListener(ctx, &switchboardv1.StopListenerRequest{ListenerId: "lb"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := a.svc.Registry().Listener("lb")
		return err != nil
	})
}

// TestClusterRoutedDeclare: the same listener declared on two instances
// (a configuration file they share, reconciled through Routed) is started
// once, on one of them, and both calls succeed.
func TestClusterRoutedDeclare(t *testing.T) {
	a, b := startPair(t)
	ctx := testCtx(t)
	req := func() *switchboardv1.StartListenerRequest {
		return &switchboardv1.StartListenerRequest{ListenerId: "adt", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}}
	}
	ra, err := a.svc.Routed().StartListener(ctx, req())
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.svc.Routed().StartListener(ctx, req())
	if err != nil {
		t.Fatal(err)
	}
	if ra.GetListener().GetStatus().GetInstance() != "a" || rb.GetListener().GetStatus().GetInstance() != "a" {
		t.Fatalf("declared on a then b: instances %q and %q; want a for both", ra.GetListener().GetStatus().GetInstance(), rb.GetListener().GetStatus().GetInstance())
	}
	if _, err := b.svc.Registry().Listener("adt"); err == nil {
		t.Fatal("b runs the listener too")
	}
}

// TestClusterConsumer: a durable consumer is served by one instance at a
// time. Attached through b, an Ack through a runs on b and attaching
// through a is refused, naming b; once b's stream ends a takes it over from
// the stored position: what was acked is not delivered again.
func TestClusterConsumer(t *testing.T) {
	a, b := startPair(t)
	ctx := testCtx(t)
	ls, err := a.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "in", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	p := dialPeer(t, ls.GetListener().GetStatus().GetBoundAddress())
	for i := 1; i <= 4; i++ {
		p.write(mllp.AppendFrame(nil, clusterMsg(i)))
		if ack := p.readFrame(); !strings.Contains(string(ack), "MSA|AA|") {
			t.Fatalf("ACK %d = %q", i, ack)
		}
	}
	sctx, stop := context.WithCancel(ctx)
	rb, err := b.client.Receive(sctx, &switchboardv1.ReceiveRequest{Consumer: "c1", StartSequence: proto64(1), ListenerIds: []string{"in"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for len(got) < 4 {
		r, err := rb.Recv()
		if err != nil {
			t.Fatalf("Receive through b: %v", err)
		}
		for _, m := range r.GetMessages() {
			got = append(got, m.GetSequence())
		}
	}
	// Ack the first two through a: it runs on b, which serves c1.
	if _, err := a.client.Ack(ctx, &switchboardv1.AckRequest{Consumer: "c1", ThroughSequence: got[1]}); err != nil {
		t.Fatalf("Ack through a: %v", err)
	}
	ra, err := a.client.Receive(ctx, &switchboardv1.ReceiveRequest{Consumer: "c1"})
	if err == nil {
		_, err = ra.Recv()
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("attach through a while b serves c1: %v; want FailedPrecondition naming b", err)
	}
	stop() // b's stream ends; b gives c1 up
	waitFor(t, func() bool { return !b.node.Holds("consumer", "c1") && !a.node.Leased("consumer", "c1") })
	ra, err = a.client.Receive(ctx, &switchboardv1.ReceiveRequest{Consumer: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ra.Recv()
	if err != nil {
		t.Fatalf("Receive through a after b: %v", err)
	}
	for _, m := range r.GetMessages() {
		if m.GetSequence() <= got[1] {
			t.Fatalf("a delivered %d again, acked through b up to %d", m.GetSequence(), got[1])
		}
	}
	if len(r.GetMessages()) == 0 || r.GetMessages()[0].GetSequence() != got[2] {
		t.Fatalf("a delivered %v first; want %d (the first not acked)", r.GetMessages(), got[2])
	}
}

func proto64(v uint64) *uint64 { return &v }

// TestClusterHandover: an instance that stops gracefully hands its
// connection over at once, with its queue: messages queued while the peer
// was down are delivered by the next owner, none failed.
func TestClusterHandover(t *testing.T) {
	a, b := startPair(t)
	ctx := testCtx(t)
	first := startTestPeer(t, ackWith(hl7.AA, ""))
	peerAddr := first.addr()
	cfg := &switchboardv1.ConnectionConfig{Address: peerAddr, Outbox: fastPolicy(nil), AckTimeout: durationpbNew(2 * time.Second),
		Reconnect: &switchboardv1.ReconnectPolicy{InitialDelay: durationpbNew(50 * time.Millisecond), MaxDelay: durationpbNew(200 * time.Millisecond)}}
	if _, err := a.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "lab", Config: cfg}); err != nil {
		t.Fatal(err)
	}
	first.stop() // the peer goes away: what is queued now waits
	const n = 5
	for i := range n {
		if _, err := b.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: clusterMsg(i), Queued: true}); err != nil {
			t.Fatalf("queued Send %d: %v", i, err)
		}
	}
	a.stop()
	waitFor(t, func() bool { return b.node.Holds("connection", "lab") })
	peer := startTestPeerOn(t, peerAddr, ackWith(hl7.AA, ""))
	got := map[string]bool{}
	deadline := time.After(15 * time.Second)
	for len(got) < n {
		select {
		case m := <-peer.received:
			h, _ := hl7.ParseHeader(m)
			got[string(h.ControlID)] = true
		case <-deadline:
			t.Fatalf("peer got %v of %d", got, n)
		}
	}
	lm, err := b.client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{ConnectionId: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range lm.GetMessages() {
		if m.GetState() == switchboardv1.MessageState_MESSAGE_STATE_FAILED {
			t.Errorf("message %s FAILED after the handover: %s", m.GetMessageId(), m.GetFailure())
		}
	}
}
