package bench

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// AckMode is how a durable consumer under load acks what it is delivered.
type AckMode string

// The ack modes. Either way the consumer makes one Ack call per response,
// after reading it and before reading the next.
const (
	// AckThrough acks a response's messages with one
	// Ack{through_sequence: the response's last sequence}.
	AckThrough AckMode = "through"
	// AckEach acks them one by one, in one Ack{sequences: every sequence
	// of the response}.
	AckEach AckMode = "each"
)

// ParseAckMode returns the mode named s ("through" or "each"; "" is
// through).
func ParseAckMode(s string) (AckMode, error) {
	switch m := AckMode(s); m {
	case "", AckThrough:
		return AckThrough, nil
	case AckEach:
		return m, nil
	}
	return "", fmt.Errorf("unknown ack mode %q (through or each)", s)
}

// consume is Receive for a durable consumer: cfg.Consumer is created from
// sequence 1, every response is acked before the next is read, and the
// run ends when cfg.Count messages are delivered and acked. Each message
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
	var acks int
	ack := &switchboardv1.AckRequest{Consumer: cfg.Consumer}
	var last *switchboardv1.AckResponse
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
		if mode == AckThrough {
			ack.ThroughSequence = msgs[len(msgs)-1].GetSequence()
		}
		if last, err = client.Ack(ctx, ack); err != nil {
			return res, cause(fmt.Errorf("ack through %d: %w", next-1, err))
		}
		acks++
		res.Msgs += uint64(len(msgs))
	}
	elapsed := time.Since(start)
	res.Seconds = elapsed.Seconds()
	res.Rate = float64(res.Msgs) / res.Seconds
	res.Note += fmt.Sprintf(", %d Acks, %.0f messages each", acks, float64(res.Msgs)/float64(max(acks, 1)))
	if floor := last.GetStatus().GetAckFloor(); floor < next-1 {
		return res, fmt.Errorf("consumer %s: ack floor %d after acking through %d", cfg.Consumer, floor, next-1)
	}
	return res, nil
}

func ackNote(m AckMode) string {
	if m == AckEach {
		return "sequences: each message"
	}
	return "through_sequence: the last"
}
