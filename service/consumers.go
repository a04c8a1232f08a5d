package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/delivery"
)

// receiveConsumer is Receive with a consumer name: the stream attaches to
// a durable consumer (service/delivery), which keeps the position, the
// redeliveries and the dead letters.
func (s *Service) receiveConsumer(ctx context.Context, req *switchboardv1.ReceiveRequest, stream switchboardv1.SwitchboardService_ReceiveServer) error {
	name := req.GetConsumer()
	if err := s.claimConsumer(ctx, name); err != nil {
		return err
	}
	st, err := s.attach(ctx, req)
	if err != nil {
		s.unclaimConsumer(name)
		return s.toStatus(ctx, ofConsumer(name, err))
	}
	defer s.unclaimConsumer(name) // after st.Close
	defer st.Close()
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	resp := &switchboardv1.ReceiveResponse{}
	for {
		b, err := st.Next(ctx, receiveBatchRecords, receiveBatchBytes)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return s.consumerStreamEnded(stream.Context(), name, err)
		}
		resp.Messages = resp.Messages[:0]
		resp.Lost = nil
		if b.Lost != nil {
			resp.Lost = &switchboardv1.LostRange{FirstSequence: b.Lost.First, LastSequence: b.Lost.Last}
		}
		for i := range b.Deliveries {
			d := &b.Deliveries[i]
			m := recordToProto(&d.Record)
			m.DeliveryCount = d.Count
			m.Redelivered = d.Redelivered
			m.AnswerDeadline = s.answerDeadline(name, &d.Record)
			resp.Messages = append(resp.Messages, m)
		}
		start := time.Now()
		if err := stream.Send(resp); err != nil {
			return err
		}
		traceDelivery(ctx, start, resp.Messages, s.inbound)
	}
}

// attach attaches a stream to the request's consumer, creating it with the
// request's filters and settings when it does not exist. A request that
// sets neither attaches to the consumer as it is (or creates it with
// defaults), so a client need not repeat them.
func (s *Service) attach(ctx context.Context, req *switchboardv1.ReceiveRequest) (*delivery.Stream, error) {
	start, err := s.startSequence(ctx, req)
	if err != nil {
		return nil, err
	}
	spec := consumerSpec(req)
	opts := delivery.AttachOptions{Spec: &spec, Start: start, StopAtHead: req.GetStopAtHead()}
	if !specGiven(req) {
		opts.Spec = nil
		st, err := s.consumers.Attach(ctx, req.GetConsumer(), opts)
		if !errors.Is(err, delivery.ErrNotFound) {
			return st, err
		}
		opts.Spec = &spec
	}
	return s.consumers.Attach(ctx, req.GetConsumer(), opts)
}

// startSequence is where a new stream or consumer starts: start_sequence
// (0 and 1 both mean the oldest retained), or after the last record when it
// is unset. A start past the head is refused rather than waited on.
func (s *Service) startSequence(ctx context.Context, req *switchboardv1.ReceiveRequest) (uint64, error) {
	last, err := s.journal.LastSeq(ctx)
	if err != nil {
		return 0, fmt.Errorf("journal last sequence: %w", err)
	}
	if req.StartSequence == nil {
		return last + 1, nil
	}
	start := req.GetStartSequence()
	if start > last+1 {
		return 0, &beyondHeadError{start: start, last: last}
	}
	if start <= 1 {
		return 0, nil
	}
	return start, nil
}

// beyondHeadError is a start_sequence after the next one to be stored.
type beyondHeadError struct{ start, last uint64 }

func (e *beyondHeadError) Error() string {
	return fmt.Sprintf("start_sequence %d is past the journal's head: the last stored sequence is %d (start at %d for the next one)",
		e.start, e.last, e.last+1)
}

// checkListeners refuses a filter naming a listener that does not exist,
// which would otherwise wait forever.
// In a cluster a listener running on another instance (its lease held)
// exists too.
func (s *Service) checkListeners(ids []string) error {
	for _, id := range ids {
		if _, err := s.reg.Listener(id); err != nil && (s.node == nil || !s.node.Leased("listener", id)) {
			return err
		}
	}
	return nil
}

// specGiven reports whether the request says what its consumer is: any
// filter or any setting.
func specGiven(req *switchboardv1.ReceiveRequest) bool {
	return len(req.GetListenerIds()) > 0 || len(req.GetConnectionIds()) > 0 || len(req.GetKinds()) > 0 ||
		req.GetConsumerConfig() != nil
}

func consumerSpec(req *switchboardv1.ReceiveRequest) delivery.Spec {
	c := req.GetConsumerConfig()
	spec := delivery.Spec{
		ListenerIDs:   req.GetListenerIds(),
		ConnectionIDs: req.GetConnectionIds(),
		MaxDeliveries: int(c.GetMaxDeliveries()),
		MaxAckPending: int(c.GetMaxAckPending()),
	}
	for _, k := range req.GetKinds() {
		switch k {
		case switchboardv1.RecordKind_RECORD_KIND_MESSAGE:
			spec.Kinds = append(spec.Kinds, journal.KindMessage)
		case switchboardv1.RecordKind_RECORD_KIND_ACK:
			spec.Kinds = append(spec.Kinds, journal.KindAck)
		}
	}
	if c.GetMode() == switchboardv1.ConsumerMode_CONSUMER_MODE_EXCLUSIVE {
		spec.Mode = delivery.ModeExclusive
	}
	if c.GetAckWait() != nil {
		spec.AckWait = c.GetAckWait().AsDuration()
	}
	return spec.WithDefaults()
}

// consumerStreamEnded is the status a consumer's stream ends with. There
// is no sequence to resume from: attaching again resumes.
func (s *Service) consumerStreamEnded(ctx context.Context, name string, err error) error {
	switch {
	case s.ctx.Err() != nil, errors.Is(err, delivery.ErrClosed):
		return statusOf(codes.Unavailable, "server shutting down; attach to consumer "+name+" again to resume",
			switchboardv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN, nil)
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	}
	return s.toStatus(ctx, ofConsumer(name, err))
}

// Ack records a durable consumer's acknowledgements.
func (s *Service) Ack(ctx context.Context, req *switchboardv1.AckRequest) (*switchboardv1.AckResponse, error) {
	info, err := s.consumers.Ack(ctx, req.GetConsumer(), req.GetSequences(), req.GetThroughSequence(), req.GetNakSequences())
	if err != nil {
		return nil, s.toStatus(ctx, ofConsumer(req.GetConsumer(), err))
	}
	return &switchboardv1.AckResponse{Status: consumerStatusToProto(info)}, nil
}

// GetConsumer returns one durable consumer.
func (s *Service) GetConsumer(ctx context.Context, req *switchboardv1.GetConsumerRequest) (*switchboardv1.GetConsumerResponse, error) {
	info, err := s.consumers.Get(ctx, req.GetName())
	if err != nil {
		return nil, s.toStatus(ctx, ofConsumer(req.GetName(), err))
	}
	return &switchboardv1.GetConsumerResponse{Consumer: consumerToProto(info)}, nil
}

// ListConsumers returns a page of durable consumers, ordered by name.
func (s *Service) ListConsumers(ctx context.Context, req *switchboardv1.ListConsumersRequest) (*switchboardv1.ListConsumersResponse, error) {
	all, err := s.consumers.List(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	list := func(after string, n int) ([]delivery.Info, bool) {
		i, _ := slices.BinarySearchFunc(all, after, func(c delivery.Info, name string) int {
			return cmpString(c.Name, name)
		})
		if i < len(all) && all[i].Name == after {
			i++
		}
		rest := all[i:]
		if len(rest) > n {
			return rest[:n], true
		}
		return rest, false
	}
	cs, next, err := page(req.GetPageToken(), req.GetPageSize(), list,
		func(c delivery.Info) string { return c.Name }, consumerToProto)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.ListConsumersResponse{Consumers: cs, NextPageToken: next}, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// DeleteConsumer removes a durable consumer.
func (s *Service) DeleteConsumer(ctx context.Context, req *switchboardv1.DeleteConsumerRequest) (*switchboardv1.DeleteConsumerResponse, error) {
	if err := s.consumers.Delete(ctx, req.GetName()); err != nil {
		return nil, s.toStatus(ctx, ofConsumer(req.GetName(), err))
	}
	return &switchboardv1.DeleteConsumerResponse{}, nil
}

// ListDeadLetters returns a page of a consumer's dead letters.
func (s *Service) ListDeadLetters(ctx context.Context, req *switchboardv1.ListDeadLettersRequest) (*switchboardv1.ListDeadLettersResponse, error) {
	after, err := decodeSeqToken(req.GetPageToken())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	n := pageSize(req.GetPageSize())
	dls, err := s.consumers.DeadLetters(ctx, req.GetConsumer(), after, n+1)
	if err != nil {
		return nil, s.toStatus(ctx, ofConsumer(req.GetConsumer(), err))
	}
	resp := &switchboardv1.ListDeadLettersResponse{}
	if len(dls) > n {
		dls = dls[:n]
		resp.NextPageToken = encodeSeqToken(dls[n-1].Seq)
	}
	for _, d := range dls {
		resp.DeadLetters = append(resp.DeadLetters, &switchboardv1.DeadLetter{
			Sequence: d.Seq, DeliveryCount: d.Deliveries, DeadTime: timestamppb.New(d.Time),
		})
	}
	return resp, nil
}

// ReplayDeadLetters puts dead letters back in their consumer's queue.
func (s *Service) ReplayDeadLetters(ctx context.Context, req *switchboardv1.ReplayDeadLettersRequest) (*switchboardv1.ReplayDeadLettersResponse, error) {
	n, err := s.consumers.Replay(ctx, req.GetConsumer(), req.GetSequences())
	if err != nil {
		return nil, s.toStatus(ctx, ofConsumer(req.GetConsumer(), err))
	}
	return &switchboardv1.ReplayDeadLettersResponse{ReplayedCount: int64(n)}, nil
}

// GetJournal returns the journal's retained range.
func (s *Service) GetJournal(ctx context.Context, _ *switchboardv1.GetJournalRequest) (*switchboardv1.GetJournalResponse, error) {
	first, err := s.journal.FirstSeq(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, fmt.Errorf("journal first sequence: %w", err))
	}
	last, err := s.journal.LastSeq(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, fmt.Errorf("journal last sequence: %w", err))
	}
	return &switchboardv1.GetJournalResponse{FirstSequence: first, LastSequence: last}, nil
}

func consumerToProto(c delivery.Info) *switchboardv1.Consumer {
	cfg := &switchboardv1.ConsumerConfig{
		Mode:          switchboardv1.ConsumerMode_CONSUMER_MODE_SHARED,
		AckWait:       durationpb.New(c.Spec.AckWait),
		MaxDeliveries: int32(c.Spec.MaxDeliveries),
		MaxAckPending: int32(c.Spec.MaxAckPending),
	}
	if c.Spec.Mode == delivery.ModeExclusive {
		cfg.Mode = switchboardv1.ConsumerMode_CONSUMER_MODE_EXCLUSIVE
	}
	out := &switchboardv1.Consumer{
		Name:          c.Name,
		Config:        cfg,
		ListenerIds:   c.Spec.ListenerIDs,
		ConnectionIds: c.Spec.ConnectionIDs,
		Status:        consumerStatusToProto(c),
	}
	for _, k := range c.Spec.Kinds {
		out.Kinds = append(out.Kinds, recordKind(k))
	}
	return out
}

func consumerStatusToProto(c delivery.Info) *switchboardv1.ConsumerStatus {
	st := &switchboardv1.ConsumerStatus{
		CreateTime:          timestamppb.New(c.Created),
		NextSequence:        c.Next,
		AckFloor:            c.AckFloor,
		PendingCount:        int64(c.Pending),
		BacklogCount:        c.Backlog,
		RedeliveryCount:     c.Redeliveries,
		DeadLetterCount:     c.DeadLetters,
		AttachedStreamCount: int32(c.Streams),
	}
	if !c.OldestPending.IsZero() {
		st.OldestPendingTime = timestamppb.New(c.OldestPending)
	}
	return st
}
