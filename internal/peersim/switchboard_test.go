package peersim_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/peersim"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

// switchboard is a real Switchboard, as service/harness_test.go builds one:
// a journal in a temp dir, the Service, and its gRPC server on loopback.
type switchboard struct {
	client switchboardv1.SwitchboardServiceClient
}

func startSwitchboard(t *testing.T) *switchboard {
	t.Helper()
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	svc, err := service.New(service.Config{Journal: j, Consumers: j.Consumers(), Answers: j.Answers()})
	if err != nil {
		t.Fatalf("service.New: %v", err)
	}
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{})
	if err != nil {
		t.Fatalf("NewGRPCServer: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
		gs.Stop()
		wg.Wait()
		_ = cc.Close()
		if err := j.Close(); err != nil {
			t.Errorf("journal close: %v", err)
		}
	})
	return &switchboard{client: switchboardv1.NewSwitchboardServiceClient(cc)}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// listen starts a simulator and closes it when the test ends.
func listen(t *testing.T, cfg peersim.ServerConfig) *peersim.Server {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	s, err := peersim.Listen(cfg)
	if err != nil {
		t.Fatalf("peersim.Listen: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// connect makes Switchboard connect to the simulator, reconnecting fast
// after the simulator closes or resets the connection.
func (sb *switchboard) connect(t *testing.T, ctx context.Context, id, addr string, cfg *switchboardv1.ConnectionConfig) {
	t.Helper()
	if cfg == nil {
		cfg = &switchboardv1.ConnectionConfig{}
	}
	cfg.Address = addr
	cfg.Reconnect = &switchboardv1.ReconnectPolicy{InitialDelay: durationpb.New(20 * time.Millisecond), MaxDelay: durationpb.New(100 * time.Millisecond)}
	if _, err := sb.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: id, Config: cfg}); err != nil {
		t.Fatalf("Connect: %v", err)
	}
}

func message(id string) []byte {
	return fmt.Appendf(nil, "MSH|^~\\&|SWB|HOSP|PEER|SIM|20261202080000||ADT^A01^ADT_A01|%s|P|2.5\rPID|1||P1^^^SIM^MR||DOE^JANE\r", id)
}

func sendFailure(err error) (*switchboardv1.SendFailure, string) {
	var sf *switchboardv1.SendFailure
	var reason string
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *switchboardv1.SendFailure:
			sf = d
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		}
	}
	return sf, reason
}

// TestSwitchboardMeetsEveryOutcome connects a real Switchboard to the
// simulator playing testdata/every-outcome.yaml and checks what Send
// reports for each step: the code of every answer, the mismatch of the
// wrong MSA-2, and the message in doubt when the peer is silent, resets or
// closes; Switchboard reconnects by itself after each of those.
func TestSwitchboardMeetsEveryOutcome(t *testing.T) {
	ctx := testCtx(t)
	sb := startSwitchboard(t)
	sc, err := peersim.Load("testdata/every-outcome.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var turns []peersim.Exchange
	peer := listen(t, peersim.ServerConfig{Scenario: sc, OnTurn: func(e peersim.Exchange) {
		mu.Lock()
		turns = append(turns, e)
		mu.Unlock()
	}})
	sb.connect(t, ctx, "to-peer", peer.Addr().String(), nil)

	const (
		accepted = switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED
		rejected = switchboardv1.SendOutcome_SEND_OUTCOME_REJECTED
	)
	type want struct {
		outcome switchboardv1.SendOutcome
		code    switchboardv1.AckCode
		text    string
		minRTT  time.Duration
		// For a Send that ends in an error status:
		status codes.Code
		cause  switchboardv1.SendFailureCause
		ackFor string // MSA-2 of the untrusted reply
	}
	steps := []want{
		{outcome: accepted, code: switchboardv1.AckCode_ACK_CODE_AA},
		{outcome: rejected, code: switchboardv1.AckCode_ACK_CODE_AE, text: "unknown patient"},
		{outcome: rejected, code: switchboardv1.AckCode_ACK_CODE_AR},
		{outcome: accepted, code: switchboardv1.AckCode_ACK_CODE_CA},
		{outcome: rejected, code: switchboardv1.AckCode_ACK_CODE_CE},
		{outcome: rejected, code: switchboardv1.AckCode_ACK_CODE_CR},
		{outcome: accepted, code: switchboardv1.AckCode_ACK_CODE_AA, minRTT: 200 * time.Millisecond},
		{status: codes.Unknown, cause: switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_MISMATCH, ackFor: "M8-WRONG"},
		{status: codes.DeadlineExceeded, cause: switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_TIMEOUT},
		{status: codes.Unavailable, cause: switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_LOST},
		{status: codes.Unavailable, cause: switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_LOST},
		{outcome: accepted, code: switchboardv1.AckCode_ACK_CODE_AA},
	}
	if len(steps) != len(sc.Steps) {
		t.Fatalf("%d expectations for %d steps", len(steps), len(sc.Steps))
	}
	for i, w := range steps {
		id := fmt.Sprintf("M%d", i+1)
		step := sc.Steps[i]
		req := &switchboardv1.SendRequest{ConnectionId: "to-peer", Payload: message(id)}
		if step.Action == peersim.Silence {
			// Not a timing assertion: how long Switchboard waits for an
			// answer that the peer will never send.
			req.AckTimeout = durationpb.New(300 * time.Millisecond)
		}
		resp, err := sb.client.Send(ctx, req)
		what := fmt.Sprintf("step %d (%s, line %d)", i+1, step.Describe(peersim.AckMode{Kind: peersim.AckHL7}), step.Line)
		if w.status != codes.OK {
			sf, reason := sendFailure(err)
			if status.Code(err) != w.status || sf.GetCause() != w.cause || !sf.GetWritten() || reason != "IN_DOUBT" || sf.GetSentControlId() != id {
				t.Errorf("%s: Send = %v, %v (failure %v, reason %q); want %v, cause %v, IN_DOUBT", what, resp, err, sf, reason, w.status, w.cause)
			}
			if w.ackFor != "" && sf.GetAck().GetControlId() != w.ackFor {
				t.Errorf("%s: untrusted ACK acknowledges %q, want %q", what, sf.GetAck().GetControlId(), w.ackFor)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Send: %v", what, err)
			continue
		}
		if resp.GetOutcome() != w.outcome || resp.GetAck().GetCode() != w.code || resp.GetAck().GetControlId() != id || resp.GetAck().GetText() != w.text {
			t.Errorf("%s: Send = %v; want %v %v for %s, text %q", what, resp, w.outcome, w.code, id, w.text)
		}
		if rtt := resp.GetRoundTrip().AsDuration(); rtt < w.minRTT {
			t.Errorf("%s: round trip %v, want at least the peer's delay %v", what, rtt, w.minRTT)
		}
	}
	select {
	case <-peer.Done():
	case <-ctx.Done():
		t.Fatal("the scenario did not finish")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(turns) != len(steps) {
		t.Fatalf("the peer saw %d messages, want %d", len(turns), len(steps))
	}
	for i, e := range turns {
		if e.N != i+1 || e.Index != i+1 || e.ControlID != fmt.Sprintf("M%d", i+1) || e.Err != nil {
			t.Errorf("turn %d = %+v", i+1, e)
		}
	}
	st := peer.Stats()
	if st.Messages != len(steps) || st.Silent != 1 || st.Reset != 1 || st.Closed != 1 || st.Answers["AA"] != 4 || st.Connections < 4 {
		t.Errorf("peer stats: %+v", st)
	}
}

// TestSwitchboardOtherAckModes runs the byte and fixed acknowledgements over
// the other framings: length-prefix with single-byte ACK/NAK, a newline
// delimiter with fixed OK/ERR payloads, and MLLP commit blocks.
func TestSwitchboardOtherAckModes(t *testing.T) {
	ctx := testCtx(t)
	sb := startSwitchboard(t)
	for _, tc := range []struct {
		name     string
		scenario string
		framing  transport.Framing
		ack      peersim.AckMode
		conn     *switchboardv1.ConnectionConfig
		want     []switchboardv1.AckCode
	}{
		{
			name: "single-byte over length-prefix", scenario: "testdata/single-byte-nak.yaml",
			conn: &switchboardv1.ConnectionConfig{
				Framing:   &switchboardv1.Framing{Kind: &switchboardv1.Framing_LengthPrefix{LengthPrefix: &switchboardv1.LengthPrefixFraming{}}},
				AckPolicy: &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_SingleByte{SingleByte: &switchboardv1.SingleByteAckPolicy{}}},
			},
			want: []switchboardv1.AckCode{switchboardv1.AckCode_ACK_CODE_BYTE_ACK, switchboardv1.AckCode_ACK_CODE_BYTE_NAK, switchboardv1.AckCode_ACK_CODE_BYTE_ACK},
		},
		{
			name: "fixed over a newline delimiter", scenario: "testdata/fixed-delimiter.yaml",
			conn: &switchboardv1.ConnectionConfig{
				Framing:   &switchboardv1.Framing{Kind: &switchboardv1.Framing_Delimiter{Delimiter: &switchboardv1.DelimiterFraming{Delimiter: []byte("\n")}}},
				AckPolicy: &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_Fixed{Fixed: &switchboardv1.FixedAckPolicy{Ack: []byte("OK"), Nak: []byte("ERR")}}},
			},
			want: []switchboardv1.AckCode{switchboardv1.AckCode_ACK_CODE_FIXED_ACK, switchboardv1.AckCode_ACK_CODE_FIXED_ACK, switchboardv1.AckCode_ACK_CODE_FIXED_NAK, switchboardv1.AckCode_ACK_CODE_FIXED_ACK},
		},
		{
			name: "MLLP commit", ack: peersim.AckMode{Kind: peersim.AckMLLPCommit},
			conn: &switchboardv1.ConnectionConfig{
				AckPolicy: &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_MllpCommit{MllpCommit: &switchboardv1.MllpCommitAckPolicy{}}},
			},
			want: []switchboardv1.AckCode{switchboardv1.AckCode_ACK_CODE_BYTE_NAK, switchboardv1.AckCode_ACK_CODE_BYTE_ACK},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := peersim.ServerConfig{Framing: tc.framing, Ack: tc.ack}
			if tc.scenario != "" {
				sc, err := peersim.Load(tc.scenario)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Scenario, cfg.Framing, cfg.Ack = sc, *sc.Framing, *sc.Ack
			} else {
				cfg.Scenario = &peersim.Scenario{Steps: []peersim.Step{{Action: peersim.Answer, Code: "NAK"}}}
			}
			peer := listen(t, cfg)
			id := fmt.Sprintf("c-%d", len(tc.want))
			sb.connect(t, ctx, id, peer.Addr().String(), tc.conn)
			for i, code := range tc.want {
				resp, err := sb.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: id, Payload: message(fmt.Sprint(i))})
				if err != nil || resp.GetAck().GetCode() != code {
					t.Errorf("message %d: Send = %v, %v; want %v", i+1, resp, err, code)
				}
			}
		})
	}
}

// TestSendToSwitchboard sends testdata/messages to a real Switchboard
// listener and checks the report (every message AA) and the journal (every
// message stored); then it sends to a listener whose frame limit the ORU
// exceeds, which Switchboard answers AR.
func TestSendToSwitchboard(t *testing.T) {
	ctx := testCtx(t)
	sb := startSwitchboard(t)
	msgs, err := peersim.ReadMessages([]string{"testdata/messages"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := func(id string, maxFrame int32) string {
		resp, err := sb.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: id,
			Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0", MaxFrameBytes: maxFrame}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetListener().GetStatus().GetBoundAddress()
	}

	var results []peersim.Result
	rep, err := peersim.Send(ctx, peersim.SendConfig{Address: start("in", 0), Rate: 200, OnResult: func(r peersim.Result) { results = append(results, r) }}, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 4 || rep.Codes["AA"] != 4 || rep.Accepted != 4 || !rep.AllPositive() || rep.P50 <= 0 || rep.P99 < rep.P50 {
		t.Errorf("report = %+v", rep)
	}
	for i, r := range results {
		if want := fmt.Sprintf("PEER-%d", i+1); r.ControlID != want || r.Code != "AA" || !r.Positive() {
			t.Errorf("result %d = %+v, want AA for %s", i+1, r, want)
		}
	}
	stream, err := sb.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: new(uint64(1)), StopAtHead: true, ListenerIds: []string{"in"}})
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for {
		resp, err := stream.Recv()
		if err != nil {
			break
		}
		for _, m := range resp.GetMessages() {
			stored = append(stored, m.GetControlId())
		}
	}
	if fmt.Sprint(stored) != "[PEER-1 PEER-2 PEER-3 PEER-4]" {
		t.Errorf("journal holds %v", stored)
	}

	// The ORU is 157 bytes, the ADTs less than 130.
	rep, err = peersim.Send(ctx, peersim.SendConfig{Address: start("small", 150)}, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 4 || rep.Codes["AA"] != 3 || rep.Codes["AR"] != 1 || rep.Rejected != 1 || rep.AllPositive() {
		t.Errorf("report = %+v", rep)
	}
}
