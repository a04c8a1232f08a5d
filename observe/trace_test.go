package observe_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

// patient is in every test message's PID segment: no span may carry it.
const patient = "EVERYMAN^ADAM"

func hl7TypedMessage(msgType, controlID string) []byte {
	return []byte("MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB|GOOD HEALTH HOSPITAL|20261125101500||" + msgType + "|" + controlID +
		"|P|2.5\rPID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR||" + patient + "\r")
}

// tracedServer is a real Switchboard traced to an in-memory exporter: a
// journal in a temp dir, the Service with the tracing Observer, and a gRPC
// server on loopback with the otelgrpc stats handler; its client is traced
// too, so the server spans have the client's as parents.
type tracedServer struct {
	exp    *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	client switchboardv1.SwitchboardServiceClient
	stop   func()
}

func startTraced(t *testing.T) *tracedServer {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tr := observe.NewTracingFrom(tp, nil)
	if !tr.Enabled() || tr.Observer() == nil {
		t.Fatal("tracing with a provider is off")
	}
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Journal: j, Observer: tr.Observer(), InboundSpan: tr.InboundSpan})
	if err != nil {
		t.Fatal(err)
	}
	// Stop waits for the handlers, so their spans have ended when it returns.
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{GRPCOptions: []grpc.ServerOption{tr.ServerOption(), grpc.WaitForHandlers(true)}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{}))))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
		gs.Stop()
		_ = cc.Close()
		if err := j.Close(); err != nil {
			t.Errorf("journal close: %v", err)
		}
		if err := tr.Shutdown(ctx); err != nil {
			t.Errorf("tracing shutdown: %v", err)
		}
	}
	// The exporter forgets its spans at the provider's shutdown: after the
	// test has read them.
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	t.Cleanup(stop)
	return &tracedServer{exp: exp, tp: tp, client: switchboardv1.NewSwitchboardServiceClient(cc), stop: stop}
}

// mllpPeer is a hospital system on a TCP connection.
type mllpPeer struct {
	t   *testing.T
	nc  net.Conn
	dec *transport.Decoder
	f   transport.Framing
}

func traceDialPeer(t *testing.T, addr string) *mllpPeer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	f := transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()
	return &mllpPeer{t: t, nc: nc, dec: transport.NewDecoder(nc, f), f: f}
}

// roundTrip sends msg and returns the acknowledgement.
func (p *mllpPeer) roundTrip(msg []byte) string {
	p.t.Helper()
	_ = p.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.nc.Write(p.f.AppendFrame(nil, msg)); err != nil {
		p.t.Fatal(err)
	}
	ack, err := p.dec.Next()
	if err != nil {
		p.t.Fatalf("reading the ACK: %v", err)
	}
	return string(ack)
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

func named(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func serverSpan(t *testing.T, spans tracetest.SpanStubs, method string) tracetest.SpanStub {
	t.Helper()
	name := "switchboard.v1.SwitchboardService/" + method
	for _, s := range spans {
		if s.Name == name && s.SpanKind == trace.SpanKindServer {
			return s
		}
	}
	t.Fatalf("no server span %s", name)
	return tracetest.SpanStub{}
}

// TestTraces: a real server, real MLLP traffic and gRPC calls; every RPC
// has its otelgrpc span (a child of the client's), each received message an
// inbound span with its control id, type, listener, connection, sequence and
// ACK code, spanning receive -> append -> ACK; a direct Send's span is a
// child of the Send RPC's; Receive's delivery spans name the sequences they
// delivered and link to those messages' inbound spans; no span holds
// payload bytes.
func TestTraces(t *testing.T) {
	ts := startTraced(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	lresp, err := ts.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "adt",
		Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	laddr := lresp.GetListener().GetStatus().GetBoundAddress()

	// A hospital system sends three messages; each is acknowledged.
	peer := traceDialPeer(t, laddr)
	for i := 1; i <= 3; i++ {
		if ack := peer.roundTrip(hl7TypedMessage("ADT^A01^ADT_A01", fmt.Sprintf("MSG%05d", i))); !strings.Contains(ack, "MSA|AA|") {
			t.Fatalf("ACK %q", ack)
		}
	}

	// A consumer answers with a direct Send on an outbound connection (to
	// the same listener, which stores it as the fourth message).
	if _, err := ts.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "lab",
		Config: &switchboardv1.ConnectionConfig{Address: laddr}}); err != nil {
		t.Fatal(err)
	}
	sctx, clientSpan := ts.tp.Tracer("test").Start(ctx, "consumer")
	sresp, err := ts.client.Send(sctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7TypedMessage("ORU^R01^ORU_R01", "OUT00001")})
	clientSpan.End()
	if err != nil || sresp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED {
		t.Fatalf("Send: %v, %v", sresp, err)
	}

	// Everything is delivered to a Receive stream from the start.
	rctx, stopReceive := context.WithCancel(ctx)
	stream, err := ts.client.Receive(rctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	var delivered []uint64
	for len(delivered) < 4 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		for _, m := range resp.GetMessages() {
			delivered = append(delivered, m.GetSequence())
		}
	}
	stopReceive()
	ts.stop() // every span has ended
	spans := ts.exp.GetSpans()

	t.Run("rpc", func(t *testing.T) {
		for _, m := range []string{"StartListener", "Connect", "Send", "Receive"} {
			srv := serverSpan(t, spans, m)
			var client *tracetest.SpanStub
			for i := range spans {
				if spans[i].SpanKind == trace.SpanKindClient && spans[i].SpanContext.SpanID() == srv.Parent.SpanID() {
					client = &spans[i]
				}
			}
			if client == nil || client.Name != srv.Name || client.SpanContext.TraceID() != srv.SpanContext.TraceID() {
				t.Errorf("%s: the server span's parent is not the client's span", m)
				continue
			}
			if m == "Send" && client.Parent.SpanID() != spanID(spans, "consumer") {
				t.Errorf("the Send RPC is not in the consumer's trace")
			}
		}
	})

	inbound := named(spans, observe.SpanInbound)
	bySeq := map[int64]tracetest.SpanStub{}
	t.Run("inbound", func(t *testing.T) {
		if len(inbound) != 4 {
			t.Fatalf("%d inbound spans; want 4 (three from the peer, one from the Send)", len(inbound))
		}
		for _, s := range inbound {
			a := attrs(s)
			seq := a[observe.AttrSequence].AsInt64()
			bySeq[seq] = s
			want := map[attribute.Key]string{
				observe.AttrControlID: fmt.Sprintf("MSG%05d", seq), observe.AttrMessageType: "ADT^A01^ADT_A01",
				observe.AttrListenerID: "adt", observe.AttrAckCode: "AA",
			}
			if seq == 4 {
				want[observe.AttrControlID], want[observe.AttrMessageType] = "OUT00001", "ORU^R01^ORU_R01"
			}
			for k, v := range want {
				if got := a[k].Emit(); got != v {
					t.Errorf("inbound seq %d: %s = %q; want %q", seq, k, got, v)
				}
			}
			if a[observe.AttrConnectionID].AsString() == "" || a["network.peer.address"].AsString() != "127.0.0.1" {
				t.Errorf("inbound seq %d: connection %q, peer %q", seq, a[observe.AttrConnectionID].Emit(), a["network.peer.address"].Emit())
			}
			if s.SpanKind != trace.SpanKindServer || s.Parent.IsValid() || s.Status.Code == codes.Error {
				t.Errorf("inbound seq %d: kind %v, parent %v, status %v", seq, s.SpanKind, s.Parent.IsValid(), s.Status)
			}
			if us := a[observe.AttrAppendMicros]; us.Type() != attribute.INT64 || us.AsInt64() < 0 ||
				time.Duration(us.AsInt64())*time.Microsecond > s.EndTime.Sub(s.StartTime) {
				t.Errorf("inbound seq %d: %s = %v in a span of %v", seq, observe.AttrAppendMicros, us.Emit(), s.EndTime.Sub(s.StartTime))
			}
		}
		for seq := int64(1); seq <= 4; seq++ {
			if _, ok := bySeq[seq]; !ok {
				t.Errorf("no inbound span for sequence %d", seq)
			}
		}
	})

	t.Run("send", func(t *testing.T) {
		rpc := serverSpan(t, spans, "Send")
		sends := named(spans, observe.SpanSend)
		if len(sends) != 1 {
			t.Fatalf("%d send spans; want 1", len(sends))
		}
		s := sends[0]
		if s.Parent.SpanID() != rpc.SpanContext.SpanID() || s.SpanContext.TraceID() != rpc.SpanContext.TraceID() {
			t.Errorf("the send span's parent is %v; want the Send RPC's span %v", s.Parent.SpanID(), rpc.SpanContext.SpanID())
		}
		a := attrs(s)
		for k, v := range map[attribute.Key]string{observe.AttrConnectionID: "lab", observe.AttrControlID: "OUT00001",
			observe.AttrMessageType: "ORU^R01^ORU_R01", observe.AttrAckCode: "AA", "switchboard.outcome": "accepted"} {
			if got := a[k].Emit(); got != v {
				t.Errorf("send span: %s = %q; want %q", k, got, v)
			}
		}
		if s.SpanKind != trace.SpanKindClient || len(s.Events) != 1 || s.Events[0].Name != "message.written" {
			t.Errorf("send span: kind %v, events %v", s.SpanKind, s.Events)
		}
	})

	t.Run("receive", func(t *testing.T) {
		rpc := serverSpan(t, spans, "Receive")
		if got := attrs(rpc)["switchboard.start_sequence"].AsInt64(); got != 1 {
			t.Errorf("Receive span start_sequence %d; want 1", got)
		}
		var seqs []int64
		linked := map[int64]trace.SpanContext{}
		for _, s := range named(spans, observe.SpanDeliver) {
			if s.Parent.SpanID() != rpc.SpanContext.SpanID() {
				t.Errorf("a delivery span's parent is not the Receive RPC's span")
			}
			seqs = append(seqs, attrs(s)["switchboard.sequences"].AsInt64Slice()...)
			for _, l := range s.Links {
				for _, kv := range l.Attributes {
					if kv.Key == observe.AttrSequence {
						linked[kv.Value.AsInt64()] = l.SpanContext
					}
				}
			}
		}
		if !slices.Equal(seqs, []int64{1, 2, 3, 4}) {
			t.Errorf("delivery spans name sequences %v; want [1 2 3 4] (delivered %v)", seqs, delivered)
		}
		for seq := int64(1); seq <= 4; seq++ {
			if in, ok := bySeq[seq]; !ok || !linked[seq].Equal(in.SpanContext.WithRemote(linked[seq].IsRemote())) {
				t.Errorf("sequence %d: link %v; want the inbound span %v", seq, linked[seq], in.SpanContext)
			}
		}
	})

	t.Run("no payload", func(t *testing.T) {
		for _, s := range spans {
			var texts []string
			texts = append(texts, s.Name, s.Status.Description)
			kvs := slices.Clone(s.Attributes)
			for _, e := range s.Events {
				texts = append(texts, e.Name)
				kvs = append(kvs, e.Attributes...)
			}
			for _, l := range s.Links {
				kvs = append(kvs, l.Attributes...)
			}
			for _, kv := range kvs {
				texts = append(texts, kv.Value.Emit())
			}
			for _, x := range texts {
				if strings.Contains(x, "EVERYMAN") || strings.Contains(x, "PID|") || strings.Contains(x, "MSH|") {
					t.Errorf("span %s holds payload bytes: %q", s.Name, x)
				}
			}
		}
	})
}

// spanID is the span id of the span named name.
func spanID(spans tracetest.SpanStubs, name string) trace.SpanID {
	for _, s := range spans {
		if s.Name == name {
			return s.SpanContext.SpanID()
		}
	}
	return trace.SpanID{}
}

// TestSendSpanInDoubt: a Send whose peer never answers ends its span in
// error, saying the message was written (in doubt) and why.
func TestSendSpanInDoubt(t *testing.T) {
	ts := startTraced(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if nc, err := silent.Accept(); err == nil {
			accepted <- nc
		}
	}()
	if _, err := ts.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "silent",
		Config: &switchboardv1.ConnectionConfig{Address: silent.Addr().String(), Reconnect: &switchboardv1.ReconnectPolicy{Disabled: true}}}); err != nil {
		t.Fatal(err)
	}
	nc := <-accepted
	defer nc.Close()
	_, err = ts.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "silent", Payload: hl7TypedMessage("ORU^R01^ORU_R01", "LOST0001"),
		AckTimeout: durationpb.New(100 * time.Millisecond)})
	if status.Code(err) != grpccodes.DeadlineExceeded {
		t.Fatalf("Send: %v; want DEADLINE_EXCEEDED (in doubt)", err)
	}
	ts.stop()
	sends := named(ts.exp.GetSpans(), observe.SpanSend)
	if len(sends) != 1 {
		t.Fatalf("%d send spans; want 1", len(sends))
	}
	s := sends[0]
	a := attrs(s)
	if s.Status.Code != codes.Error || !a["switchboard.written"].AsBool() || a["switchboard.send_failure_cause"].AsString() != "ack timeout" ||
		a[observe.AttrControlID].AsString() != "LOST0001" {
		t.Errorf("send span: status %v, attributes %v", s.Status, s.Attributes)
	}
}
