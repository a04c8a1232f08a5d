package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// AckMode is how a durable consumer under load acks what it is delivered.
type AckMode string

// The ack modes. AckThrough and AckEach make one Ack call per response,
// after reading it and before reading the next.
const (
	// AckThrough acks a response's messages with one
	// Ack{through_sequence: the response's last sequence}.
	AckThrough AckMode = "through"
	// AckEach acks them one by one, in one Ack{sequences: every sequence
	// of the response}.
	AckEach AckMode = "each"
	// AckAsync does not wait for acks before reading on: a second
	// goroutine acks through the last sequence read, one Ack call at a
	// time (each call acks what was read while the previous one was under
	// way).
	AckAsync AckMode = "async"
)

// ParseAckMode returns the mode named s ("through", "each" or "async"; ""
// is through).
func ParseAckMode(s string) (AckMode, error) {
	switch m := AckMode(s); m {
	case "", AckThrough:
		return AckThrough, nil
	case AckEach, AckAsync:
		return m, nil
	}
	return "", fmt.Errorf("unknown ack mode %q (through, each or async)", s)
}

// consume is Receive for a durable consumer: cfg.Consumer is created from
// sequence 1, what it is delivered is acked as cfg.Ack says, and the run
// ends when cfg.Count messages are delivered and acked. Each message
// must be the next sequence, delivered for the first time; the last Ack
// must leave the consumer's ack floor at the last sequence. The consumer
// is deleted afterwards, whatever happened.
func consume(ctx context.Context, cfg ReceiveConfig) (Result, error) {
	mode, err := ParseAckMode(string(cfg.Ack))
	if err != nil {
		return Result{}, err
	}
	res := Result{Group: "receive", Target: cfg.Target, Conns: 1, Size: cfg.Size,
		Note: fmt.Sprintf("durable consumer, one Ack per response (%s)", ackNote(mode))}
	if cfg.Streams > 1 {
		return res, fmt.Errorf("a durable consumer is measured on one stream, not %d", cfg.Streams)
	}
	cc, err := dialGRPC(cfg.GRPCAddr)
	if err != nil {
		return res, err
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	if _, err := client.GetConsumer(ctx, &switchboardv1.GetConsumerRequest{Name: cfg.Consumer}); status.Code(err) != codes.NotFound {
		if err == nil {
			err = fmt.Errorf("consumer %s exists: the run needs a new one", cfg.Consumer)
		}
		return res, err
	}
	defer func() {
		// Leave nothing behind (a consumer holds retention back). The
		// run's own context may be over.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = client.DeleteConsumer(dctx, &switchboardv1.DeleteConsumerRequest{Name: cfg.Consumer})
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	progress, stopWatch := watchStall(cancel, cfg.Stall, cfg.Count)
	defer stopWatch()
	cause := func(err error) error {
		if c := context.Cause(ctx); c != nil {
			return c
		}
		return err
	}

	start := time.Now()
	stream, err := client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1), Consumer: cfg.Consumer})
	if err != nil {
		return res, err
	}
	var next uint64 = 1
	ack := &switchboardv1.AckRequest{Consumer: cfg.Consumer}
	var acks ackStats
	var async *asyncAcker
	if mode == AckAsync {
		async = startAsyncAcker(ctx, client, cfg.Consumer)
		defer async.stop()
	}
	for int(res.Msgs) < cfg.Count {
		resp, err := stream.Recv()
		if err != nil {
			return res, cause(err)
		}
		progress.Store(time.Now().UnixNano())
		msgs := resp.GetMessages()
		if lost := resp.GetLost(); lost != nil {
			return res, fmt.Errorf("consumer %s lost sequences %d-%d", cfg.Consumer, lost.GetFirstSequence(), lost.GetLastSequence())
		}
		if len(msgs) == 0 {
			continue
		}
		ack.Sequences, ack.ThroughSequence = ack.Sequences[:0], 0
		for _, m := range msgs {
			if m.GetSequence() != next || m.GetDeliveryCount() != 1 || m.GetRedelivered() {
				return res, fmt.Errorf("consumer %s: got sequence %d (delivery %d, redelivered %v), want %d delivered for the first time",
					cfg.Consumer, m.GetSequence(), m.GetDeliveryCount(), m.GetRedelivered(), next)
			}
			next++
			if mode == AckEach {
				ack.Sequences = append(ack.Sequences, m.GetSequence())
			}
		}
		res.Msgs += uint64(len(msgs))
		if async != nil {
			async.through(next - 1)
			continue
		}
		if mode == AckThrough {
			ack.ThroughSequence = next - 1
		}
		if err := acks.call(ctx, client, ack); err != nil {
			return res, cause(err)
		}
	}
	if async != nil {
		var err error
		if acks, err = async.stop(); err != nil {
			return res, cause(err)
		}
	}
	elapsed := time.Since(start)
	res.Seconds = elapsed.Seconds()
	res.Rate = float64(res.Msgs) / res.Seconds
	res.Note += fmt.Sprintf(", %d Acks of %.0f messages on average, %.0f%% of the time waiting for one (%.2f ms each)", acks.n,
		float64(res.Msgs)/float64(max(acks.n, 1)), 100*acks.wait.Seconds()/res.Seconds, acks.wait.Seconds()*1e3/float64(max(acks.n, 1)))
	if floor := acks.last.GetStatus().GetAckFloor(); floor < next-1 {
		return res, fmt.Errorf("consumer %s: ack floor %d after acking through %d", cfg.Consumer, floor, next-1)
	}
	return res, nil
}

func ackNote(m AckMode) string {
	switch m {
	case AckEach:
		return "sequences: each message"
	case AckAsync:
		return "through_sequence, from a second goroutine, one call at a time, the stream read meanwhile"
	}
	return "through_sequence: the last"
}

// ackStats counts a consumer's Ack calls.
type ackStats struct {
	n    int
	wait time.Duration // in Ack calls
	last *switchboardv1.AckResponse
}

// call makes one Ack call and counts it.
func (a *ackStats) call(ctx context.Context, client switchboardv1.SwitchboardServiceClient, req *switchboardv1.AckRequest) error {
	t := time.Now()
	resp, err := client.Ack(ctx, req)
	if err != nil {
		return fmt.Errorf("ack %d sequences through %d: %w", len(req.GetSequences()), req.GetThroughSequence(), err)
	}
	a.wait += time.Since(t)
	a.n++
	a.last = resp
	return nil
}

// asyncAcker acks through the latest sequence it is given, one Ack call at
// a time, from a goroutine of its own: a sequence given while a call is
// under way is acked by the next call, with any given after it.
type asyncAcker struct {
	mu      sync.Mutex
	want    uint64
	kick    chan struct{} // cap 1: want moved
	done    chan struct{}
	stopped bool
	stats   ackStats
	err     error
}

func startAsyncAcker(ctx context.Context, client switchboardv1.SwitchboardServiceClient, consumer string) *asyncAcker {
	a := &asyncAcker{kick: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		var acked uint64
		req := &switchboardv1.AckRequest{Consumer: consumer}
		for range a.kick {
			a.mu.Lock()
			want := a.want
			a.mu.Unlock()
			if want <= acked {
				continue
			}
			req.ThroughSequence = want
			if err := a.stats.call(ctx, client, req); err != nil {
				a.err = err
				for range a.kick { // until stop
				}
				return
			}
			acked = want
		}
	}()
	return a
}

// through asks for every message up to seq to be acked.
func (a *asyncAcker) through(seq uint64) {
	a.mu.Lock()
	a.want = max(a.want, seq)
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default: // a kick is waiting already
	}
}

// stop waits for the acks asked for to be made and returns the counts, or
// the first failed call's error. Calling it again returns the same.
func (a *asyncAcker) stop() (ackStats, error) {
	a.mu.Lock()
	if !a.stopped {
		a.stopped = true
		// A last kick, so what was asked since the last call is acked,
		// then no more.
		select {
		case a.kick <- struct{}{}:
		default:
		}
		close(a.kick)
	}
	a.mu.Unlock()
	<-a.done
	return a.stats, a.err
}
