package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// closedLoop runs n workers, each calling op back to back, and measures the
// calls that start after warmup and end before warmup+duration. op returns
// "" on success or an error kind.
func closedLoop(ctx context.Context, n int, warmup, duration time.Duration, op func(w, i int) string) (time.Duration, []latencies, []errCounter) {
	start := time.Now()
	from, to := start.Add(warmup), start.Add(warmup+duration)
	lats := make([]latencies, n)
	errs := make([]errCounter, n)
	var wg sync.WaitGroup
	for w := range n {
		errs[w] = errCounter{}
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				if t0.After(to) {
					return
				}
				if kind := op(w, i); kind != "" {
					errs[w][kind]++
					continue
				}
				if t1 := time.Now(); !t0.Before(from) && !t1.After(to) {
					lats[w] = append(lats[w], t1.Sub(t0))
				}
			}
		})
	}
	wg.Wait()
	return duration, lats, errs
}

// OutboundConfig describes gRPC Send load: Calls concurrent Sends spread
// over Conns connections that Switchboard opens to Peer.
type OutboundConfig struct {
	Target   string
	GRPCAddr string // Switchboard's gRPC address
	Peer     string // an MLLP peer that answers HL7 ACKs (e.g. bench baseline --kind ack)
	Conns    int
	Calls    int
	Size     int
	Duration time.Duration
	Warmup   time.Duration
}

func dialGRPC(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// Outbound measures Send round trips through Switchboard. Every Send must
// come back ACK_OUTCOME_ACCEPTED for its own control id.
func Outbound(ctx context.Context, cfg OutboundConfig) (Result, error) {
	cfg.Conns, cfg.Calls = max(cfg.Conns, 1), max(cfg.Calls, 1)
	res := Result{Group: "outbound", Target: cfg.Target, Conns: cfg.Conns, Calls: cfg.Calls, Size: cfg.Size}
	cc, err := dialGRPC(cfg.GRPCAddr)
	if err != nil {
		return res, err
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	ids := make([]string, cfg.Conns)
	for k := range ids {
		ids[k] = fmt.Sprintf("bench-out-%d", k)
		if _, err := client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: ids[k], Config: &switchboardv1.ConnectionConfig{Address: cfg.Peer}}); err != nil {
			return res, fmt.Errorf("connect %d to %s: %w", k, cfg.Peer, err)
		}
	}
	defer func() {
		for _, id := range ids {
			_, _ = client.Disconnect(context.Background(), &switchboardv1.DisconnectRequest{ConnectionId: id})
		}
	}()
	msgs := make([][]byte, cfg.Calls)
	idAt := 0
	for w := range msgs {
		msgs[w], idAt = Message(cfg.Size)
	}
	elapsed, lats, errs := closedLoop(ctx, cfg.Calls, cfg.Warmup, cfg.Duration, func(w, i int) string {
		msg := msgs[w]
		putID(msg[idAt:], w, i)
		resp, err := client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: ids[w%cfg.Conns], Payload: msg})
		switch {
		case err != nil:
			return "send_error"
		case resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED:
			return "outcome_" + resp.GetOutcome().String()
		case resp.GetAck().GetControlId() != string(msg[idAt:idAt+controlIDWidth]):
			return "mismatch"
		}
		return ""
	})
	return finish(res, elapsed, lats, errs, "no Send succeeded")
}

// EchoConfig describes load on a plain gRPC unary echo (ServeEcho).
type EchoConfig struct {
	Target   string
	Addr     string
	Calls    int
	Size     int
	Duration time.Duration
	Warmup   time.Duration
}

// Echo measures the plain grpc-go unary call rate with Calls concurrent
// calls on one client connection, as Outbound uses.
func Echo(ctx context.Context, cfg EchoConfig) (Result, error) {
	cfg.Calls = max(cfg.Calls, 1)
	res := Result{Group: "outbound", Target: cfg.Target, Conns: cfg.Calls, Calls: cfg.Calls, Size: cfg.Size}
	cc, err := dialGRPC(cfg.Addr)
	if err != nil {
		return res, err
	}
	defer cc.Close()
	client := testpb.NewBenchmarkServiceClient(cc)
	body := bytes.Repeat([]byte("x"), cfg.Size)
	elapsed, lats, errs := closedLoop(ctx, cfg.Calls, cfg.Warmup, cfg.Duration, func(int, int) string {
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
		if err != nil {
			return "call_error"
		}
		if len(resp.GetPayload().GetBody()) != len(body) {
			return "short_echo"
		}
		return ""
	})
	return finish(res, elapsed, lats, errs, "no echo call succeeded")
}
