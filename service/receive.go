package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
)

// Receive batching: a stream that has fallen behind gets several messages
// per response, up to these limits (a single larger message still goes
// alone).
const (
	receiveBatchRecords = 1024
	receiveBatchBytes   = 1 << 20
)

// Receive streams journaled records in sequence order. It reads the journal
// at the client's pace, so a slow client never holds up a TCP peer.
func (s *Service) Receive(req *switchboardv1.ReceiveRequest, stream switchboardv1.SwitchboardService_ReceiveServer) error {
	// The stream ends when the client goes away or the service shuts down.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stopWatch := context.AfterFunc(s.ctx, cancel)
	defer stopWatch()
	if err := s.checkListeners(req.GetListenerIds()); err != nil {
		return s.toStatus(ctx, err)
	}
	if req.GetConsumer() != "" {
		return s.receiveConsumer(ctx, req, stream)
	}

	match := receiveFilter(req)
	// head is where stop_at_head stops: the last record stored before the
	// call.
	head, err := s.journal.LastSeq(ctx)
	if err != nil {
		return s.streamEnded(stream.Context(), fmt.Errorf("journal last sequence: %w", err), 1)
	}
	next, err := s.startSequence(ctx, req)
	if err != nil {
		return s.toStatus(ctx, err)
	}
	// replayAll: the client asked for everything retained, so a first
	// read that retention overtakes starts again at what is left.
	replayAll := next == 0
	if replayAll {
		first, err := s.journal.FirstSeq(ctx)
		if err != nil {
			return s.streamEnded(stream.Context(), fmt.Errorf("journal first sequence: %w", err), 1)
		}
		next = first
	}
	stopAtHead := req.GetStopAtHead()

	receiveSpanStart(ctx, next)
	// Headers now, so the client knows the subscription is live before the
	// first message.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	resp := &switchboardv1.ReceiveResponse{}
	for {
		if ctx.Err() != nil {
			return s.streamEnded(stream.Context(), ctx.Err(), next)
		}
		if stopAtHead && next > head {
			return nil
		}
		recs, err := s.journal.Read(ctx, next, receiveBatchRecords, receiveBatchBytes)
		var nr *journal.NotRetainedError
		if replayAll && errors.As(err, &nr) {
			next = nr.First
			continue
		}
		if err != nil {
			return s.streamEnded(stream.Context(), fmt.Errorf("read journal at %d: %w", next, err), next)
		}
		if len(recs) == 0 {
			if err := s.journal.Wait(ctx, next-1); err != nil {
				return s.streamEnded(stream.Context(), err, next)
			}
			continue
		}
		resp.Messages = resp.Messages[:0]
		for i := range recs {
			if r := &recs[i]; match(r) && (!stopAtHead || r.Seq <= head) {
				resp.Messages = append(resp.Messages, recordToProto(r))
			}
		}
		if len(resp.Messages) > 0 {
			start := time.Now()
			if err := stream.Send(resp); err != nil {
				return err
			}
			traceDelivery(ctx, start, resp.Messages, s.inbound)
		}
		next = recs[len(recs)-1].Seq + 1
		replayAll = false
	}
}

// recordToProto builds the API message of a record. Every string field
// goes through text, so no record can be one the API cannot deliver.
func recordToProto(r *journal.Record) *switchboardv1.ReceivedMessage {
	return &switchboardv1.ReceivedMessage{
		Sequence:      r.Seq,
		ListenerId:    text(r.ListenerID),
		ConnectionId:  text(r.ConnectionID),
		RemoteAddress: text(r.RemoteAddr),
		ReceiveTime:   timestamppb.New(r.Time),
		Payload:       r.Payload,
		MessageType:   text(r.MessageType),
		ControlId:     text(r.ControlID),
		Kind:          recordKind(r.Kind),
		PeerIdentity:  text(r.PeerIdentity),
	}
}

func recordKind(k journal.Kind) switchboardv1.RecordKind {
	switch k {
	case journal.KindMessage:
		return switchboardv1.RecordKind_RECORD_KIND_MESSAGE
	case journal.KindAck:
		return switchboardv1.RecordKind_RECORD_KIND_ACK
	}
	return switchboardv1.RecordKind_RECORD_KIND_UNSPECIFIED
}

// receiveFilter returns whether a record passes the request's filters.
func receiveFilter(req *switchboardv1.ReceiveRequest) func(*journal.Record) bool {
	listeners := toSet(req.GetListenerIds())
	conns := toSet(req.GetConnectionIds())
	var kinds map[switchboardv1.RecordKind]bool
	for _, k := range req.GetKinds() {
		if k != switchboardv1.RecordKind_RECORD_KIND_UNSPECIFIED {
			if kinds == nil {
				kinds = make(map[switchboardv1.RecordKind]bool)
			}
			kinds[k] = true
		}
	}
	return func(r *journal.Record) bool {
		return (listeners == nil || listeners[r.ListenerID]) && (conns == nil || conns[r.ConnectionID]) &&
			(kinds == nil || kinds[recordKind(r.Kind)])
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
