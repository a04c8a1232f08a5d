package service

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
)

// Receive batching: a stream that has fallen behind gets several messages
// per response, up to these limits (a single larger message still goes
// alone).
const (
	receiveBatchRecords = 256
	receiveBatchBytes   = 1 << 20
)

// Receive streams journaled messages in sequence order. It reads the
// journal at the client's pace, so a slow client never holds up a TCP peer.
func (s *Service) Receive(req *switchboardv1.ReceiveRequest, stream switchboardv1.SwitchboardService_ReceiveServer) error {
	var next uint64
	if req.StartSequence != nil {
		next = max(req.GetStartSequence(), 1)
	}
	listeners := toSet(req.GetListenerIds())
	conns := toSet(req.GetConnectionIds())

	// The stream ends when the client goes away or the service shuts down.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	ended := func(err error) error {
		select {
		case <-s.done:
			return status.Errorf(codes.Unavailable, "server shutting down; resume with start_sequence %d", next)
		default:
		}
		if errors.Is(err, journal.ErrClosed) {
			return status.Errorf(codes.Unavailable, "journal closed; resume with start_sequence %d", next)
		}
		if herr, _ := s.journal.Health(); herr != nil {
			s.log.Error("receive stream ended: journal failed", "err", err)
			return status.Errorf(codes.Unavailable, "journal failed; resume with start_sequence %d once it is back", next)
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		s.log.Error("receive stream failed", "err", err)
		return status.Error(codes.Internal, "internal error")
	}

	if req.StartSequence == nil {
		last, err := s.journal.LastSeq(ctx)
		if err != nil {
			return ended(fmt.Errorf("journal last sequence: %w", err))
		}
		next = last + 1
	}

	// Headers now, so the client knows the subscription is live before the
	// first message.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	resp := &switchboardv1.ReceiveResponse{}
	for {
		if ctx.Err() != nil {
			return ended(ctx.Err())
		}
		recs, err := s.journal.Read(ctx, next, receiveBatchRecords, receiveBatchBytes)
		if err != nil {
			return ended(fmt.Errorf("read journal: %w", err))
		}
		if len(recs) == 0 {
			if err := s.journal.Wait(ctx, next-1); err != nil {
				return ended(err)
			}
			continue
		}
		resp.Messages = resp.Messages[:0]
		for i := range recs {
			r := &recs[i]
			if (listeners != nil && !listeners[r.ListenerID]) || (conns != nil && !conns[r.ConnectionID]) {
				continue
			}
			resp.Messages = append(resp.Messages, &switchboardv1.ReceivedMessage{
				Sequence:      r.Seq,
				ListenerId:    r.ListenerID,
				ConnectionId:  r.ConnectionID,
				RemoteAddress: r.RemoteAddr,
				ReceiveTime:   timestamppb.New(r.Time),
				Payload:       r.Payload,
				MessageType:   r.MessageType,
				ControlId:     r.ControlID,
			})
		}
		if len(resp.Messages) > 0 {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		next = recs[len(recs)-1].Seq + 1
	}
}

func toSet(ids []string) map[string]bool {
	if len(ids) == 0 {
		return nil
	}
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}
