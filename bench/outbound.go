package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// closedLoop runs n workers, each calling op back to back, and measures the
// calls that start after warmup and end before warmup+duration; with
// count > 0, count calls in all, every one measured. op returns "" on
// success or an error kind.
func closedLoop(ctx context.Context, n, count int, warmup, duration time.Duration, op func(w, i int) string) (time.Duration, []latencies, []errCounter) {
	start := time.Now()
	from, to := start.Add(warmup), start.Add(warmup+duration)
	left := atomic.Int64{}
	if count > 0 {
		from, to = start, start.Add(365*24*time.Hour)
		left.Store(int64(count))
	}
	lats := make([]latencies, n)
	errs := make([]errCounter, n)
	var wg sync.WaitGroup
	for w := range n {
		errs[w] = errCounter{}
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				if t0.After(to) || (count > 0 && left.Add(-1) < 0) {
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
	if count > 0 {
		duration = time.Since(start)
	}
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
	// Count stops after this many Sends in all, every one measured (no
	// warm-up), instead of after Duration.
	Count int
	// Queued sends with SendRequest.queued: a call is done when its message
	// is durable in the outbox. The run then waits until the peer has
	// accepted every message queued (warm-up included), and DeliveredRate
	// is those messages over the time from the first call to the last
	// acceptance.
	Queued bool
	// MaxInFlight is the connections' OutboxPolicy.max_in_flight (queued
	// sends; zero: the default, 1).
	MaxInFlight int
	// DeliveryTimeout bounds the wait for delivery after the last call.
	// Zero: 5 minutes.
	DeliveryTimeout time.Duration
	// Existing, when set, are the ids of connections that already exist:
	// the Sends go to them (Conns is their number; Peer and MaxInFlight
	// are ignored) and they are left open afterwards. In a cluster they
	// may be owned by another instance than the one at GRPCAddr: the
	// Sends are then routed.
	Existing []string
}

func dialGRPC(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// Outbound measures Send through Switchboard. A direct Send must come back
// ACCEPTED for its own control id; a queued one QUEUED, and then be
// accepted by the peer (see OutboundConfig.Queued).
func Outbound(ctx context.Context, cfg OutboundConfig) (Result, error) {
	if len(cfg.Existing) > 0 {
		cfg.Conns = len(cfg.Existing)
	}
	cfg.Conns, cfg.Calls = max(cfg.Conns, 1), max(cfg.Calls, 1)
	res := Result{Group: "outbound", Target: cfg.Target, Conns: cfg.Conns, Calls: cfg.Calls, Size: cfg.Size}
	cc, err := dialGRPC(cfg.GRPCAddr)
	if err != nil {
		return res, err
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	ids := make([]string, cfg.Conns)
	if len(cfg.Existing) > 0 {
		ids = nil // nothing to create, nothing to disconnect
	}
	for k := range ids {
		ids[k] = fmt.Sprintf("bench-out-%d", k)
		conf := &switchboardv1.ConnectionConfig{Address: cfg.Peer}
		if cfg.MaxInFlight > 0 {
			conf.Outbox = &switchboardv1.OutboxPolicy{MaxInFlight: int32(cfg.MaxInFlight)}
		}
		if _, err := client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: ids[k], Config: conf}); err != nil {
			return res, fmt.Errorf("connect %d to %s: %w", k, cfg.Peer, err)
		}
	}
	defer func() {
		for _, id := range ids {
			_, _ = client.Disconnect(context.Background(), &switchboardv1.DisconnectRequest{ConnectionId: id})
		}
	}()
	sendTo := ids
	if len(cfg.Existing) > 0 {
		sendTo = cfg.Existing
	}
	msgs := make([][]byte, cfg.Calls)
	idAt := 0
	for w := range msgs {
		msgs[w], idAt = Message(cfg.Size)
	}
	done := make([]uint64, cfg.Calls) // each caller's Sends that succeeded
	last := make([]string, cfg.Calls) // and the message id of its last one, when queued
	start := time.Now()
	elapsed, lats, errs := closedLoop(ctx, cfg.Calls, cfg.Count, cfg.Warmup, cfg.Duration, func(w, i int) string {
		msg := msgs[w]
		putID(msg[idAt:], w, i)
		resp, err := client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: sendTo[w%cfg.Conns], Payload: msg, Queued: cfg.Queued})
		switch {
		case err != nil:
			return "send_error"
		case cfg.Queued && resp.GetOutcome() == switchboardv1.SendOutcome_SEND_OUTCOME_QUEUED:
			last[w] = resp.GetMessageId()
		case resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED:
			return "outcome_" + resp.GetOutcome().String()
		case resp.GetAck().GetControlId() != string(msg[idAt:idAt+controlIDWidth]):
			return "mismatch"
		}
		done[w]++
		return ""
	})
	res, err = finish(res, elapsed, lats, errs, "no Send succeeded")
	for _, n := range done {
		res.handled += n
	}
	if err != nil || !cfg.Queued {
		return res, err
	}
	total := res.handled
	if cfg.DeliveryTimeout <= 0 {
		cfg.DeliveryTimeout = 5 * time.Minute
	}
	end, acks, err := awaitDelivery(ctx, client, sendTo, last, total, cfg.DeliveryTimeout)
	accepted := min(acks.accepted, total)
	res.Errors = mergeErrors([]errCounter{res.Errors, {"not_accepted": total - accepted, "ack_timeout": acks.timeouts, "ack_mismatch": acks.mismatches}})
	if d := end.Sub(start); d > 0 {
		res.DeliveredRate = float64(accepted) / d.Seconds()
	}
	res.Note = fmt.Sprintf("%d messages queued, the last accepted %.2f s after the first call", total, end.Sub(start).Seconds())
	return res, err
}

// awaitDelivery waits until the last message of every caller is accepted
// and the connections' counters show an accepted acknowledgement for each
// of the total messages queued. It returns when the last of those messages
// was accepted (its update time: the server runs on this machine's clock),
// and the counters.
func awaitDelivery(ctx context.Context, client switchboardv1.SwitchboardServiceClient, conns, last []string, total uint64, timeout time.Duration) (time.Time, ackTotals, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var end time.Time
	for _, id := range last {
		for id != "" {
			resp, err := client.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: id})
			if err != nil {
				return end, ackTotals{}, fmt.Errorf("waiting for %s to be delivered: %w", id, err)
			}
			m := resp.GetMessage()
			if st := m.GetState(); st == switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED {
				end = maxTime(end, m.GetUpdateTime().AsTime())
				break
			} else if st == switchboardv1.MessageState_MESSAGE_STATE_FAILED {
				return end, ackTotals{}, fmt.Errorf("%s failed: %s", id, m.GetFailure())
			}
			if err := sleep(ctx, 10*time.Millisecond); err != nil {
				return end, ackTotals{}, fmt.Errorf("waiting for %s to be delivered: %w", id, err)
			}
		}
	}
	for {
		acks, err := countAcks(ctx, client, conns)
		if err != nil || acks.accepted >= total {
			return end, acks, err
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return end, acks, fmt.Errorf("%d of %d messages accepted: %w", acks.accepted, total, err)
		}
	}
}

// ackTotals are the connections' acknowledgement counters: positive ones,
// and the timeouts and mismatches that put messages in doubt.
type ackTotals struct{ accepted, timeouts, mismatches uint64 }

func countAcks(ctx context.Context, client switchboardv1.SwitchboardServiceClient, conns []string) (ackTotals, error) {
	var t ackTotals
	for _, id := range conns {
		resp, err := client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
		if err != nil {
			return t, err
		}
		k := resp.GetConnection().GetStatus().GetCounters()
		for _, a := range k.GetReceivedAcks() {
			if a.GetCode() == switchboardv1.AckCode_ACK_CODE_AA || a.GetCode() == switchboardv1.AckCode_ACK_CODE_CA {
				t.accepted += uint64(a.GetCount())
			}
		}
		t.timeouts += uint64(k.GetAckTimeoutCount())
		t.mismatches += uint64(k.GetAckMismatchCount())
	}
	return t, nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
	elapsed, lats, errs := closedLoop(ctx, cfg.Calls, 0, cfg.Warmup, cfg.Duration, func(int, int) string {
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
