package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// deciderInFlight is how many AnswerMessage calls a Decider makes at once.
const deciderInFlight = 64

// Decider is a listener's deciding consumer (ListenerConfig.consumer_ack)
// run in this process, the way an application would: it receives as the
// consumer and answers every message it is delivered AA with
// AnswerMessage, each answer on a goroutine of its own (up to 64 at once),
// so one slow answer does not hold up the others.
type Decider struct {
	cc     *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	inflight int // AnswerMessage calls under way
	answered uint64
	// lag is, per message, from its receive_time to its delivery here;
	// call the AnswerMessage calls' durations.
	lag, call latencies
	errs      errCounter
	err       error // why the stream ended early
}

// DeciderStats is what a Decider did since the last Take.
type DeciderStats struct {
	// Answered counts answers that were written to the peer.
	Answered uint64
	// Delivery is the time from a message's receive_time to its delivery
	// to the Decider (the server and the Decider share a clock), Answer
	// that of an AnswerMessage call: p50 and p99 in microseconds.
	DeliveryP50, DeliveryP99, AnswerP50, AnswerP99 float64
	// Errors counts, by kind, messages delivered without an
	// answer_deadline (no_answer_deadline; they are answered anyway),
	// answers not written (answer_not_written) and failed calls
	// (answer_<gRPC code>, stream_<gRPC code>).
	Errors map[string]uint64
}

// StartDecider attaches to consumer on the server at grpcAddr and answers
// until Stop. It returns once the stream is attached, so the listener's
// messages have a decider from then on. The consumer should exist (a
// listener with consumer_ack creates it); the stream adds no filters or
// settings of its own.
func StartDecider(ctx context.Context, grpcAddr, consumer string) (*Decider, error) {
	cc, err := dialGRPC(grpcAddr)
	if err != nil {
		return nil, err
	}
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	sctx, cancel := context.WithCancel(ctx)
	stream, err := client.Receive(sctx, &switchboardv1.ReceiveRequest{Consumer: consumer})
	if err == nil {
		_, err = stream.Header() // sent once the stream is attached
	}
	if err != nil {
		cancel()
		cc.Close()
		return nil, fmt.Errorf("attach decider %s: %w", consumer, err)
	}
	d := &Decider{cc: cc, cancel: cancel, done: make(chan struct{}), errs: errCounter{}}
	go d.run(sctx, client, stream, consumer)
	return d, nil
}

func (d *Decider) run(ctx context.Context, client switchboardv1.SwitchboardServiceClient,
	stream grpc.ServerStreamingClient[switchboardv1.ReceiveResponse], consumer string) {
	defer close(d.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, deciderInFlight)
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				d.mu.Lock()
				d.errs["stream_"+status.Code(err).String()]++
				d.err = fmt.Errorf("decider %s: stream ended: %w", consumer, err)
				d.mu.Unlock()
			}
			return
		}
		now := time.Now()
		for _, m := range resp.GetMessages() {
			d.mu.Lock()
			d.lag = append(d.lag, now.Sub(m.GetReceiveTime().AsTime()))
			d.mu.Unlock()
			if m.GetAnswerDeadline() == nil {
				d.count("no_answer_deadline")
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			d.mu.Lock()
			d.inflight++
			d.mu.Unlock()
			wg.Go(func() {
				defer func() { <-sem }()
				d.answer(ctx, client, consumer, m.GetSequence())
				d.mu.Lock()
				d.inflight--
				d.mu.Unlock()
			})
		}
	}
}

func (d *Decider) answer(ctx context.Context, client switchboardv1.SwitchboardServiceClient, consumer string, seq uint64) {
	start := time.Now()
	resp, err := client.AnswerMessage(ctx, &switchboardv1.AnswerMessageRequest{Consumer: consumer, Sequence: seq,
		Answer: &switchboardv1.AnswerMessageRequest_Ack{Ack: &switchboardv1.AckAnswer{Code: switchboardv1.AckCode_ACK_CODE_AA}}})
	took := time.Since(start)
	d.mu.Lock()
	d.call = append(d.call, took)
	d.mu.Unlock()
	switch {
	case err != nil && ctx.Err() != nil:
		// Stopping.
	case err != nil:
		d.count("answer_" + status.Code(err).String())
	case !resp.GetWritten():
		d.count("answer_not_written")
	default:
		d.mu.Lock()
		d.answered++
		d.mu.Unlock()
	}
}

func (d *Decider) count(kind string) {
	d.mu.Lock()
	d.errs[kind]++
	d.mu.Unlock()
}

// Take returns what the Decider did since the last Take and starts
// counting again, or the error the stream ended with. It first waits (up
// to 5 s) for the AnswerMessage calls under way to return: the peer can
// read an answer before the call that gave it has returned.
func (d *Decider) Take() (DeciderStats, error) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		d.mu.Lock()
		n := d.inflight
		d.mu.Unlock()
		if n == 0 {
			break
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := DeciderStats{Answered: d.answered, Errors: mergeErrors([]errCounter{d.errs})}
	var lag, call Result
	summarize(&lag, 0, []latencies{d.lag})
	summarize(&call, 0, []latencies{d.call})
	st.DeliveryP50, st.DeliveryP99, st.AnswerP50, st.AnswerP99 = lag.P50, lag.P99, call.P50, call.P99
	d.answered, d.errs, d.lag, d.call = 0, errCounter{}, nil, nil
	return st, d.err
}

// Stop ends the stream, waits for the answers under way and returns the
// error the stream ended with early, if it did.
func (d *Decider) Stop() error {
	d.cancel()
	<-d.done
	d.cc.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}
