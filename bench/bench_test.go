package bench

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMessage(t *testing.T) {
	bare, _ := Message(0)
	for _, size := range []int{100, 260, 1024} {
		msg, at := Message(size)
		if want := max(size, len(bare)); len(msg) != want {
			t.Errorf("Message(%d) is %d bytes, want %d", size, len(msg), want)
		}
		putID(msg[at:], 12, 345)
		h, err := hl7.ParseHeader(msg)
		if err != nil || h.ControlID != "W0012N0000000345" || h.MessageType != "ADT^A01^ADT_A01" {
			t.Errorf("Message(%d): header %+v, %v", size, h, err)
		}
	}
}

func TestCheckAck(t *testing.T) {
	id := []byte("W0001N0000000001")
	for _, tc := range []struct {
		ack  string
		want string
	}{
		{"MSH|^~\\&|A|B|C|D|x||ACK|1|P|2.5\rMSA|AA|W0001N0000000001\r", ""},
		{"MSH|^~\\&|A|B|C|D|x||ACK|1|P|2.5\rMSA|CA|W0001N0000000001|ok\r", ""},
		{"MSH|^~\\&|A|B|C|D|x||ACK|1|P|2.5\rMSA|AE|W0001N0000000001\r", "nack_AE"},
		{"MSH|^~\\&|A|B|C|D|x||ACK|1|P|2.5\rMSA|AA|W0001N0000000002\r", "mismatch"},
		{"garbage", "not_an_ack"},
	} {
		if got := checkAck([]byte(tc.ack), id); got != tc.want {
			t.Errorf("checkAck(%q) = %q, want %q", tc.ack, got, tc.want)
		}
	}
}

// TestInboundAgainstBaseline runs the load generator against the bare ACK
// server on loopback: every message acknowledged, nothing counted as an
// error, latencies measured.
func TestInboundAgainstBaseline(t *testing.T) {
	res, err := Inbound(t.Context(), InboundConfig{Target: "bare-ack", Addr: startACK(t), Conns: 4, Count: 400})
	if err != nil {
		t.Fatal(err)
	}
	if res.Msgs != 400 || res.Errors != nil || res.P50 <= 0 || res.P99 < res.P50 || res.Rate <= 0 {
		t.Errorf("result = %+v", res)
	}
}

// TestServeACKPipelined: the bare ACK server answers frames written
// back to back, before any ACK is read, in order, each with MSA-2 its
// message's MSH-10 (what a pipelining window needs of a peer).
func TestServeACKPipelined(t *testing.T) {
	nc, err := net.Dial("tcp", startACK(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	msg, at := Message(260)
	var frames []byte
	for i := range 8 {
		putID(msg[at:], 7, i)
		frames = mllp.AppendFrame(frames, msg)
	}
	if _, err := nc.Write(frames); err != nil {
		t.Fatal(err)
	}
	dec := newTestDecoder(nc)
	id := make([]byte, controlIDWidth)
	for i := range 8 {
		ack, err := dec.Next()
		if err != nil {
			t.Fatal(err)
		}
		putID(id, 7, i)
		if kind := checkAck(ack, id); kind != "" {
			t.Errorf("ACK %d: %s (%q)", i, kind, ack)
		}
	}
}

// startACK runs the bare ACK server on loopback until the test ends.
func startACK(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ServeACK(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeACK: %v", err)
		}
	})
	return ln.Addr().String()
}

// TestInboundCountsNacks: a peer that rejects is counted by kind, not
// measured as acknowledged.
func TestInboundCountsNacks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		dec := newTestDecoder(nc)
		for {
			msg, err := dec.Next()
			if err != nil {
				return
			}
			h, _ := hl7.ParseHeader(msg)
			ack := hl7.AppendAck(nil, h, hl7.AckRequest{Code: hl7.AR, ControlID: "X", Time: time.Now()})
			if _, err := nc.Write(mllp.AppendFrame(nil, ack)); err != nil {
				return
			}
		}
	}()
	res, err := Inbound(t.Context(), InboundConfig{Addr: ln.Addr().String(), Conns: 1, Count: 10})
	if err == nil || !strings.Contains(err.Error(), "nack_AR=10") || res.Msgs != 0 {
		t.Errorf("Inbound against a rejecting peer = %+v, %v", res, err)
	}
}

func newTestDecoder(nc net.Conn) *transport.Decoder { return transport.NewDecoder(nc, mllp) }

// TestReceive delivers a pre-filled journal through a real Switchboard
// gRPC server, and gives up with a clear error, instead of waiting for
// ever, when asked for more than the journal holds.
func TestReceive(t *testing.T) {
	dir := t.TempDir()
	if err := Prefill(t.Context(), dir, 300, 1024); err != nil {
		t.Fatal(err)
	}
	addr := startService(t, dir)
	res, err := Receive(t.Context(), ReceiveConfig{GRPCAddr: addr, Streams: 2, Count: 300, Size: 1024})
	if err != nil || res.Msgs != 600 || res.Rate <= 0 {
		t.Errorf("Receive = %+v, %v; want 600 messages", res, err)
	}
	_, err = Receive(t.Context(), ReceiveConfig{GRPCAddr: addr, Count: 301, Stall: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "does the journal hold 301 messages") {
		t.Errorf("Receive of more than the journal holds = %v", err)
	}
}

// TestOutbound runs direct and queued Sends, with and without a window,
// through a real Switchboard to the bare ACK server: every message is
// accepted, and a queued run waits for their delivery.
func TestOutbound(t *testing.T) {
	addr, peer := startService(t, t.TempDir()), startACK(t)
	for _, cfg := range []OutboundConfig{
		{Conns: 2, Calls: 4, Count: 20},
		{Conns: 2, Calls: 4, Count: 20, Queued: true},
		{Conns: 1, Calls: 4, Count: 20, Queued: true, MaxInFlight: 4},
	} {
		cfg.GRPCAddr, cfg.Peer, cfg.Size = addr, peer, 260
		res, err := Outbound(t.Context(), cfg)
		if err != nil || res.Msgs != 20 || res.Errors != nil || res.Rate <= 0 || (res.DeliveredRate > 0) != cfg.Queued {
			t.Errorf("Outbound(%+v) = %+v, %v; want 20 messages, delivered when queued", cfg, res, err)
		}
	}
	// Existing: Sends on a connection that is already there, left open.
	cc, err := dialGRPC(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	if _, err := client.Connect(t.Context(), &switchboardv1.ConnectRequest{ConnectionId: "mine", Config: &switchboardv1.ConnectionConfig{Address: peer}}); err != nil {
		t.Fatal(err)
	}
	res, err := Outbound(t.Context(), OutboundConfig{GRPCAddr: addr, Existing: []string{"mine"}, Calls: 2, Count: 10, Size: 260})
	if err != nil || res.Msgs != 10 || res.Errors != nil || res.Conns != 1 {
		t.Errorf("Outbound on an existing connection = %+v, %v; want 10 messages", res, err)
	}
	if _, err := client.GetConnection(t.Context(), &switchboardv1.GetConnectionRequest{ConnectionId: "mine"}); err != nil {
		t.Errorf("the existing connection is gone after the run: %v", err)
	}
}

// startService serves Switchboard over gRPC on loopback with its journal,
// state, outbox, consumers and answers in dir (fsync off), until the test
// ends.
func startService(t *testing.T, dir string) string {
	t.Helper()
	j, err := pebblejournal.Open(dir, pebblejournal.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Journal: j, State: j.StateStore(), Outbox: j.Outbox(), Consumers: j.Consumers(), Answers: j.Answers()})
	if err != nil {
		j.Close()
		t.Fatal(err)
	}
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(func() {
		svc.Shutdown(context.Background())
		gs.Stop()
		j.Close()
	})
	return ln.Addr().String()
}
