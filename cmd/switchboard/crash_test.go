package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/transport"
)

// The crash test runs the real command as a child process, kills it with
// SIGKILL at random moments under inbound and queued outbound load, and
// restarts it on the same data directory without repeating any
// StartListener or Connect: the server must bring its listener and its
// outbound connection back by itself. Afterwards every message the inbound
// peers saw acknowledged is in the journal, every queued message reached
// the outbound peer, and duplicates appear only where a message was
// resent after a lost acknowledgement (inbound) or was in doubt (outbound).

var crashMLLP = transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()

// freePort returns a loopback address nobody listens on (for a moment).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// crashServer is the child process.
type crashServer struct {
	t        *testing.T
	dir      string
	grpcAddr string
	cmd      *exec.Cmd
	waited   chan struct{}
	starts   int
}

func (s *crashServer) start() {
	s.t.Helper()
	s.starts++
	logf, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("serve-%d.log", s.starts)))
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd = exec.Command(os.Args[0], "serve", "--grpc-addr", s.grpcAddr, "--admin-addr", "127.0.0.1:0", "--data-dir", filepath.Join(s.dir, "data"), "--log-format", "json")
	s.cmd.Env = append(os.Environ(), "SWITCHBOARD_RUN_MAIN=1")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.waited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		logf.Close()
		close(s.waited)
	}()
}

// kill ends the child with SIGKILL: no drain, no clean journal close.
func (s *crashServer) kill() {
	_ = s.cmd.Process.Kill()
	<-s.waited
}

// stop ends the child with SIGTERM, the way an operator would.
func (s *crashServer) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.waited:
	case <-time.After(20 * time.Second):
		s.kill()
	}
}

// waitServing waits until health says SERVING.
func (s *crashServer) waitServing(ctx context.Context, hc healthpb.HealthClient) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("serve (start %d) did not report SERVING within 20 s", s.starts)
}

// crashMessage is a small ADT^A01 with control id id.
func crashMessage(id string) []byte {
	return []byte("MSH|^~\\&|ADT1|HOSP|LAB|HOSP|20261201120000||ADT^A01^ADT_A01|" + id + "|P|2.5\rPID|1||" + id + "\r")
}

// counter counts ids, safely, and keeps the order ids were first seen.
type counter struct {
	mu    sync.Mutex
	n     map[string]int
	order []string
}

func newCounter() *counter { return &counter{n: map[string]int{}} }

func (c *counter) add(id string) {
	c.mu.Lock()
	if c.n[id] == 0 {
		c.order = append(c.order, id)
	}
	c.n[id]++
	c.mu.Unlock()
}

func (c *counter) firstSeen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.order)
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.n))
	for k, v := range c.n {
		m[k] = v
	}
	return m
}

// outboundPeer is the peer the server's outbound connection dials: it
// acknowledges every message AA and counts what it received.
func outboundPeer(t *testing.T, addr string, got *counter) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				dec := transport.NewDecoder(nc, crashMLLP)
				for {
					msg, err := dec.Next()
					if err != nil {
						return
					}
					h, err := hl7.ParseHeader(msg)
					if err != nil {
						return
					}
					got.add(h.ControlID)
					ack := hl7.AppendAck(nil, h, hl7.AckRequest{Code: hl7.AA, ControlID: "P" + h.ControlID, Time: time.Now()})
					if _, err := nc.Write(crashMLLP.AppendFrame(nil, ack)); err != nil {
						return
					}
				}
			})
		}
	})
}

// inboundPeer sends numbered messages to the listener, one at a time, and
// resends a message whose acknowledgement it did not get (the server died
// in between), as a real sender does.
func inboundPeer(addr, prefix string, stop <-chan struct{}, acked, resent *counter, sent *int) {
	var nc net.Conn
	var dec *transport.Decoder
	defer func() {
		if nc != nil {
			nc.Close()
		}
	}()
	for n := 0; ; {
		select {
		case <-stop:
			return
		default:
		}
		if nc == nil {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			nc, dec = c, transport.NewDecoder(c, crashMLLP)
		}
		id := fmt.Sprintf("%s-%d", prefix, n)
		*sent++
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := nc.Write(crashMLLP.AppendFrame(nil, crashMessage(id)))
		var frame []byte
		if err == nil {
			frame, err = dec.Next()
		}
		if a, perr := hl7.ParseAck(frame); err == nil && perr == nil && a.Code == hl7.AA && a.ControlID == id {
			acked.add(id)
			n++
			continue
		}
		// No acknowledgement: the message may or may not be stored. Send
		// it again on a new connection.
		resent.add(id)
		nc.Close()
		nc = nil
	}
}

// TestCrashRestart is the store-and-forward proof with the real binary.
func TestCrashRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts child processes")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	s := &crashServer{t: t, dir: t.TempDir(), grpcAddr: freePort(t)}
	listenAddr, peerAddr := freePort(t), freePort(t)
	delivered := newCounter()
	outboundPeer(t, peerAddr, delivered)

	s.start()
	t.Cleanup(s.kill)
	cc, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	hc := healthpb.NewHealthClient(cc)
	s.waitServing(ctx, hc)
	// Created once; every restart must restore them by itself.
	if _, err := client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "in", Config: &switchboardv1.ListenerConfig{Address: listenAddr}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "out", Config: &switchboardv1.ConnectionConfig{
		Address:   peerAddr,
		Reconnect: &switchboardv1.ReconnectPolicy{InitialDelay: durationOf(50 * time.Millisecond), MaxDelay: durationOf(500 * time.Millisecond)},
		Outbox:    &switchboardv1.OutboxPolicy{RetryDelay: durationOf(50 * time.Millisecond), MaxRetryDelay: durationOf(500 * time.Millisecond), MaxAttempts: 1000},
	}}); err != nil {
		t.Fatal(err)
	}

	acked, resent, queued := newCounter(), newCounter(), newCounter()
	var queuedIDs sync.Map // control id -> message id
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const peers = 4
	sent := make([]int, peers)
	for p := range peers {
		wg.Go(func() { inboundPeer(listenAddr, fmt.Sprintf("IN%d", p), stop, acked, resent, &sent[p]) })
	}
	wg.Go(func() { // queued outbound load, retrying each Send with its key until it is stored
		for n := 0; ; {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("OUT-%d", n)
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := client.Send(cctx, &switchboardv1.SendRequest{ConnectionId: "out", Payload: crashMessage(id), Queued: true, IdempotencyKey: id})
			cancel()
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			queued.add(id)
			queuedIDs.Store(id, resp.GetMessageId())
			n++
		}
	})

	cons := &crashConsumer{delivered: map[uint64]bool{}, acked: map[uint64]bool{}, maybe: map[uint64]bool{}}
	wg.Go(func() { cons.run(ctx, client, stop) })

	seed := uint64(time.Now().UnixNano())
	t.Logf("kill times from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	const kills = 6
	for k := range kills {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		s.kill()
		t.Logf("kill %d: %d acknowledged inbound, %d queued so far", k+1, len(acked.snapshot()), len(queued.snapshot()))
		s.start()
		s.waitServing(ctx, hc)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	// Every queued message reaches the peer, by itself.
	want := queued.snapshot()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := delivered.snapshot()
		missing := 0
		for id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d queued messages never reached the peer", missing, len(want))
		}
	}
	s.stop()

	// Read what the data directory holds.
	j, err := pebblejournal.Open(filepath.Join(s.dir, "data"), pebblejournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	stored := map[string]int{}
	inSeqs := map[uint64]bool{} // the inbound messages' sequences, for the consumer
	for next := uint64(1); ; {
		recs, err := j.Read(ctx, next, 1000, 16<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.ListenerID == "in" {
				stored[r.ControlID]++
				if r.Kind == journal.KindMessage {
					inSeqs[r.Seq] = true
				}
			}
			next = r.Seq + 1
		}
	}
	cons.check(t, ctx, j, inSeqs)
	ack, res := acked.snapshot(), resent.snapshot()
	lost, inDups := 0, 0
	for id := range ack {
		if stored[id] == 0 {
			lost++
			t.Errorf("inbound %s was acknowledged and is not in the journal", id)
		}
	}
	for id, n := range stored {
		if n > 1 {
			inDups++
			if res[id] == 0 {
				t.Errorf("inbound %s is stored %d times but was never resent", id, n)
			}
		}
	}
	outDups, outInDoubt := 0, 0
	box := j.Outbox()
	for id, n := range delivered.snapshot() {
		if want[id] == 0 {
			t.Errorf("the peer got %s, which was never queued", id)
			continue
		}
		if n == 1 {
			continue
		}
		outDups++
		mid, _ := queuedIDs.Load(id)
		conn, seq, ok := outbox.ParseMessageID(mid.(string))
		if !ok {
			t.Errorf("message id %q for %s", mid, id)
			continue
		}
		m, err := box.Get(ctx, conn, seq)
		if err != nil {
			t.Errorf("outbox message for %s: %v", id, err)
			continue
		}
		doubt := false
		for _, a := range m.GetAttempts() {
			doubt = doubt || a.GetResult() == switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT
		}
		if doubt {
			outInDoubt++
		} else {
			t.Errorf("outbound %s reached the peer %d times without an attempt in doubt", id, n)
		}
	}
	// One connection's queue is delivered in order, whatever the kills:
	// OUT-n reaches the peer for the first time after OUT-(n-1).
	for i, id := range delivered.firstSeen() {
		if want := fmt.Sprintf("OUT-%d", i); id != want {
			t.Errorf("the peer's %d-th new message is %s; want %s (queue order)", i+1, id, want)
			break
		}
	}
	totalSent := 0
	for _, n := range sent {
		totalSent += n
	}
	t.Logf("%d kills; inbound: %d sent (with resends), %d acknowledged, %d distinct stored, %d stored twice (all resent), %d lost; "+
		"outbound: %d queued, %d delivered, %d delivered twice (all in doubt: %d)",
		kills, totalSent, len(ack), len(stored), inDups, lost, len(want), len(delivered.snapshot()), outDups, outInDoubt)
	if len(ack) == 0 || len(want) == 0 {
		t.Errorf("no load got through: %d acknowledged, %d queued", len(ack), len(want))
	}
}

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// crashConsumer is a durable consumer that lives through the kills: it
// attaches again after every restart and acks two messages in three
// (sequence not divisible by 3), so that afterwards its un-acked set can
// be compared with what it never acked.
type crashConsumer struct {
	mu        sync.Mutex
	delivered map[uint64]bool
	acked     map[uint64]bool // Ack returned OK
	maybe     map[uint64]bool // Ack failed (the server died): either way
	streams   int
}

const crashConsumerName = "crash-consumer"

func (c *crashConsumer) run(ctx context.Context, client switchboardv1.SwitchboardServiceClient, stop <-chan struct{}) {
	// Long ack wait and many deliveries: only restarts redeliver, and
	// nothing becomes a dead letter during the run.
	req := &switchboardv1.ReceiveRequest{Consumer: crashConsumerName, ListenerIds: []string{"in"},
		Kinds: []switchboardv1.RecordKind{switchboardv1.RecordKind_RECORD_KIND_MESSAGE}, StartSequence: proto.Uint64(1),
		ConsumerConfig: &switchboardv1.ConsumerConfig{AckWait: durationOf(time.Hour), MaxDeliveries: 1000, MaxAckPending: 100000}}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	for sctx.Err() == nil {
		stream, err := client.Receive(sctx, req)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		c.mu.Lock()
		c.streams++
		c.mu.Unlock()
		for {
			resp, err := stream.Recv()
			if err != nil {
				break
			}
			var toAck []uint64
			c.mu.Lock()
			for _, m := range resp.GetMessages() {
				c.delivered[m.GetSequence()] = true
				if m.GetSequence()%3 != 0 {
					toAck = append(toAck, m.GetSequence())
				}
			}
			c.mu.Unlock()
			if len(toAck) == 0 {
				continue
			}
			actx, acancel := context.WithTimeout(sctx, 2*time.Second)
			_, err = client.Ack(actx, &switchboardv1.AckRequest{Consumer: crashConsumerName, Sequences: toAck})
			acancel()
			c.mu.Lock()
			for _, seq := range toAck {
				if err == nil {
					c.acked[seq] = true
				} else if !c.acked[seq] {
					c.maybe[seq] = true
				}
			}
			c.mu.Unlock()
		}
	}
}

// check reads the consumer's state from the data directory after the last
// stop: every stored inbound message was delivered to it or is still
// waiting for it, and what waits is exactly what it did not ack (give or
// take acks whose answer the kills swallowed).
func (c *crashConsumer) check(t *testing.T, ctx context.Context, j *pebblejournal.Journal, stored map[uint64]bool) {
	t.Helper()
	m, err := delivery.Open(ctx, delivery.Config{Journal: j, Store: j.Consumers()})
	if err != nil {
		t.Fatalf("open consumers: %v", err)
	}
	defer m.Close()
	st, err := m.Attach(ctx, crashConsumerName, delivery.AttachOptions{StopAtHead: true})
	if err != nil {
		t.Fatalf("attach %s: %v", crashConsumerName, err)
	}
	defer st.Close()
	left := map[uint64]bool{}
	for {
		b, err := st.Next(ctx, 1000, 16<<20)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("consumer Next: %v", err)
		}
		for _, d := range b.Deliveries {
			left[d.Record.Seq] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	never, ackedBack, unackedGone := 0, 0, 0
	for seq := range stored {
		switch {
		case !c.delivered[seq] && !left[seq]:
			never++
		case c.acked[seq] && left[seq]:
			ackedBack++
		case !c.acked[seq] && !c.maybe[seq] && !left[seq]:
			unackedGone++
		}
	}
	for seq := range left {
		if !stored[seq] {
			t.Errorf("consumer has %d pending, which is no stored inbound message", seq)
		}
	}
	if never > 0 || ackedBack > 0 || unackedGone > 0 {
		t.Errorf("consumer: %d stored messages never delivered nor pending, %d acked ones pending again, %d un-acked ones gone",
			never, ackedBack, unackedGone)
	}
	t.Logf("consumer: %d streams over the kills; %d stored inbound messages, %d delivered during the run, %d acked (%d acks unconfirmed), %d left un-acked",
		c.streams, len(stored), len(c.delivered), len(c.acked), len(c.maybe), len(left))
}
