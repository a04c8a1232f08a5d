package service

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// The messages API: queued Send, GetMessage, ListMessages and
// ResolveMessage, over the outbox (outbound messages) and the journal
// (inbound ones, read-only).

// newOutbox makes the outbox on store (none when store is nil) and returns
// the registry's OutboundChanged hook for it. The outbox reaches sessions
// through s.reg, which exists before startOutbox lets its workers run.
func (s *Service) newOutbox(store outbox.Store) (changed func(string, *switchboardv1.ConnectionConfig, bool), released func(string), err error) {
	if store == nil {
		return nil, nil, nil
	}
	ob, err := outbox.New(outbox.Config{
		Store: store,
		Sessions: outbox.SessionsFunc(func(ctx context.Context, id string) (*transport.Conn, error) {
			return s.reg.WaitOpen(ctx, id)
		}),
		PeerAck: peerAckToProto,
		Logger:  s.log,
		Events:  s.events.OutboxHook(),
	})
	if err != nil {
		return nil, nil, err
	}
	s.outbox, s.messages = ob, store
	return ob.ConnectionChanged, ob.ConnectionReleased, nil
}

// startOutbox starts delivering, once the registry holds its connections.
func (s *Service) startOutbox() error {
	if s.outbox == nil {
		return nil
	}
	if err := s.outbox.Start(context.Background()); err != nil {
		return err
	}
	s.bg.Go(s.wakeOutboxOnRecovery)
	return nil
}

// wakeOutboxOnRecovery wakes the outbox's workers whenever the journal (whose
// database the embedded outbox shares) recovers from a failure: a queued
// Send that failed may have stored its message after all, and its caller
// may never retry. It returns when the service shuts down.
func (s *Service) wakeOutboxOnRecovery() {
	failed := false
	for {
		err, changed := s.journal.Health()
		if failed && err == nil {
			s.outbox.WakeAll()
		}
		failed = err != nil
		select {
		case <-changed:
		case <-s.ctx.Done():
			return
		}
	}
}

// sendQueued is Send in queued mode: the message is stored in the
// connection's outbox and delivered from there.
func (s *Service) sendQueued(ctx context.Context, req *switchboardv1.SendRequest) (*switchboardv1.SendResponse, error) {
	id := req.GetConnectionId()
	switch {
	case !req.GetQueued():
		return nil, s.toStatus(ctx, errInvalid{field: "idempotency_key", msg: "only queued sends take an idempotency key"})
	case req.GetAckTimeout() != nil:
		return nil, s.toStatus(ctx, errInvalid{field: "ack_timeout", msg: "queued sends use the connection's ack_timeout; leave it unset"})
	case req.GetFailFast():
		return nil, s.toStatus(ctx, errInvalid{field: "fail_fast", msg: "only for direct sends; a queued message waits for the connection"})
	case s.outbox == nil:
		return nil, s.toStatus(ctx, errInvalid{field: "queued", msg: "this server has no outbox store; only direct sends"})
	}
	v, err := s.reg.Connection(id)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if v.Spec == nil {
		return nil, s.toStatus(ctx, errInvalid{field: "queued", msg: fmt.Sprintf("connection %q is inbound; only outbound connections have an outbox", id)})
	}
	// A message the connection could never send is refused now, not failed
	// later.
	if _, err := s.dialConfig(v.Spec).Conn.WithDefaults().Expect(req.GetPayload()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	m := &switchboardv1.Message{ConnectionId: id, Payload: req.GetPayload(), IdempotencyKey: req.GetIdempotencyKey()}
	if h, err := hl7.ParseHeader(req.GetPayload()); err == nil {
		m.MessageType, m.ControlId = text(h.MessageType), text(h.ControlID)
	}
	stored, _, err := s.outbox.Enqueue(ctx, m)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.SendResponse{
		Outcome:       switchboardv1.SendOutcome_SEND_OUTCOME_QUEUED,
		MessageId:     stored.GetMessageId(),
		SentControlId: stored.GetControlId(),
	}, nil
}

// GetMessage returns one outbound or inbound message, with its payload.
func (s *Service) GetMessage(ctx context.Context, req *switchboardv1.GetMessageRequest) (*switchboardv1.GetMessageResponse, error) {
	m, err := s.message(ctx, req.GetMessageId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.GetMessageResponse{Message: m}, nil
}

// message reads a message by id: "out-<connection_id>-<sequence>" from the
// outbox, "in-<sequence>" from the journal.
func (s *Service) message(ctx context.Context, id string) (*switchboardv1.Message, error) {
	notFound := &registry.ResourceError{Type: outbox.TypeMessage, ID: id, Err: registry.ErrNotFound}
	if seq, ok := inboundSeq(id); ok {
		recs, err := s.journal.Read(ctx, seq, 1, 0)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 || recs[0].Seq != seq {
			return nil, notFound
		}
		m := inboundToProto(&recs[0])
		if err := s.addAnswer(ctx, m); err != nil {
			return nil, err
		}
		return m, nil
	}
	connID, seq, ok := outbox.ParseMessageID(id)
	if !ok {
		return nil, errInvalid{field: "message_id", msg: `not a message id ("out-<connection_id>-<sequence>" or "in-<sequence>")`}
	}
	if s.messages == nil {
		return nil, notFound
	}
	m, err := s.messages.Get(ctx, connID, seq)
	if err != nil {
		if errors.Is(err, outbox.ErrNotFound) {
			return nil, notFound
		}
		return nil, err
	}
	return m, nil
}

// addAnswer fills m.Answer from the answer store, when it holds one for
// the inbound message m (listeners with duplicate suppression or a
// deciding consumer).
func (s *Service) addAnswer(ctx context.Context, m *switchboardv1.Message) error {
	a, err := s.storedAnswer(ctx, m.GetSequence())
	if err != nil {
		return err
	}
	m.Answer = a
	return nil
}

// inboundSeq reads an inbound message id, "in-<sequence>".
func inboundSeq(id string) (uint64, bool) {
	rest, ok := strings.CutPrefix(id, "in-")
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(rest, 10, 64)
	if err != nil || seq == 0 || strconv.FormatUint(seq, 10) != rest {
		return 0, false
	}
	return seq, true
}

func inboundID(seq uint64) string { return "in-" + strconv.FormatUint(seq, 10) }

// inboundToProto is the Message of a journaled record: received,
// read-only. Strings go through text, as for Receive.
func inboundToProto(r *journal.Record) *switchboardv1.Message {
	t := timestamppb.New(r.Time)
	return &switchboardv1.Message{
		MessageId:    inboundID(r.Seq),
		Direction:    switchboardv1.Direction_DIRECTION_INBOUND,
		ConnectionId: text(r.ConnectionID),
		ListenerId:   text(r.ListenerID),
		State:        switchboardv1.MessageState_MESSAGE_STATE_RECEIVED,
		Payload:      r.Payload,
		MessageType:  text(r.MessageType),
		ControlId:    text(r.ControlID),
		CreateTime:   t,
		UpdateTime:   t,
		Sequence:     r.Seq,
		Kind:         recordKind(r.Kind),
		PeerIdentity: text(r.PeerIdentity),
	}
}

// ResolveMessage settles an outbound message held in doubt.
func (s *Service) ResolveMessage(ctx context.Context, req *switchboardv1.ResolveMessageRequest) (*switchboardv1.ResolveMessageResponse, error) {
	id := req.GetMessageId()
	connID, seq, ok := outbox.ParseMessageID(id)
	if !ok || s.outbox == nil {
		// Inbound messages are never in doubt; say so for one that exists.
		if _, err := s.message(ctx, id); err != nil {
			return nil, s.toStatus(ctx, err)
		}
		return nil, s.toStatus(ctx, &registry.ResourceError{Type: outbox.TypeMessage, ID: id,
			Err: fmt.Errorf("%w (it is RECEIVED)", outbox.ErrNotInDoubt)})
	}
	m, err := s.outbox.Resolve(ctx, connID, seq, req.GetResolution())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.ResolveMessageResponse{Message: m}, nil
}

// ListMessages work bounds: one call examines at most this many messages
// (and about this many payload bytes), and returns a shorter page with a
// next_page_token when its filters let few of them through, so a narrow
// filter over a long journal cannot tie up the server.
const (
	listScanMessages = 10000
	listScanBytes    = 32 << 20
	listScanBatch    = 500
)

// ListMessages returns a page of messages: outbound ones in (connection,
// queue position) order, then inbound ones in journal order. The page token
// is the id of the last message examined.
func (s *Service) ListMessages(ctx context.Context, req *switchboardv1.ListMessagesRequest) (*switchboardv1.ListMessagesResponse, error) {
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	l := &lister{match: messageFilter(req), size: pageSize(req.GetPageSize()), payloads: req.GetIncludePayloads()}
	inSeq, inbound := inboundSeq(after)
	outConn, outSeq, outbound := outbox.ParseMessageID(after)
	switch {
	case after == "":
	case inbound, outbound:
	case after == inboundID(0): // the inbound phase, from its start
		inbound = true
	default:
		return nil, s.toStatus(ctx, errInvalid{field: "page_token", msg: "not a page token this server issued"})
	}
	if !inbound && s.messages != nil && wantOutbound(req) {
		if outConn == "" {
			outConn = req.GetConnectionId()
		}
		if err := l.outbound(ctx, s.messages, outConn, outSeq, req.GetConnectionId()); err != nil {
			return nil, s.toStatus(ctx, err)
		}
	}
	if !l.stopped() && wantInbound(req) {
		if err := l.inbound(ctx, s.journal, inSeq+1); err != nil {
			return nil, s.toStatus(ctx, err)
		}
	}
	// Inbound messages show what was answered, as GetMessage does; the
	// bytes sent only with include_payloads.
	for _, m := range l.page {
		if m.GetDirection() != switchboardv1.Direction_DIRECTION_INBOUND {
			continue
		}
		if err := s.addAnswer(ctx, m); err != nil {
			return nil, s.toStatus(ctx, err)
		}
		if m.Answer != nil && !req.GetIncludePayloads() {
			m.Answer.Sent = nil
		}
	}
	resp := &switchboardv1.ListMessagesResponse{Messages: l.page}
	if l.stopped() {
		resp.NextPageToken = encodePageToken(l.last)
	}
	return resp, nil
}

// lister collects one page of ListMessages.
type lister struct {
	match    func(*switchboardv1.Message) bool
	size     int
	payloads bool
	page     []*switchboardv1.Message
	last     string // the id of the last message examined
	examined int
	bytes    int
}

// stopped reports that the page is full or the call's work is done.
func (l *lister) stopped() bool {
	return len(l.page) >= l.size || l.examined >= listScanMessages || l.bytes >= listScanBytes
}

func (l *lister) consider(m *switchboardv1.Message, id string) {
	l.examined++
	l.bytes += len(m.GetPayload())
	l.last = id
	if l.match(m) {
		if !l.payloads {
			m.Payload = nil
		}
		l.page = append(l.page, m)
	}
}

// outbound scans the outbox after (conn, seq); only connection onlyConn
// when it is set.
func (l *lister) outbound(ctx context.Context, store outbox.Store, conn string, seq uint64, onlyConn string) error {
scan:
	for {
		ms, err := store.Scan(ctx, conn, seq, listScanBatch)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if onlyConn != "" && m.GetConnectionId() != onlyConn {
				break scan // past it: the scan is in connection order
			}
			l.consider(m, m.GetMessageId())
			conn, seq = m.GetConnectionId(), m.GetSequence()
			if l.stopped() {
				return nil
			}
		}
		if len(ms) < listScanBatch {
			break
		}
	}
	// The outbound phase is done; a page that ends here resumes with the
	// inbound one.
	l.last = inboundID(0)
	return nil
}

// inbound scans the journal from sequence from.
func (l *lister) inbound(ctx context.Context, j journal.Journal, from uint64) error {
	for !l.stopped() {
		recs, err := j.Read(ctx, from, listScanBatch, listScanBytes-l.bytes)
		var nr *journal.NotRetainedError
		if errors.As(err, &nr) && nr.First > from {
			// A listing shows what is retained: retention deleted the
			// rest since the page token was issued, or before the first
			// page.
			from = nr.First
			continue
		}
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return nil
		}
		for i := range recs {
			l.consider(inboundToProto(&recs[i]), inboundID(recs[i].Seq))
			from = recs[i].Seq + 1
			if l.stopped() {
				return nil
			}
		}
	}
	return nil
}

func wantOutbound(req *switchboardv1.ListMessagesRequest) bool {
	return req.GetListenerId() == "" && req.GetDirection() != switchboardv1.Direction_DIRECTION_INBOUND &&
		(len(req.GetStates()) == 0 || hasStateBut(req.GetStates(), switchboardv1.MessageState_MESSAGE_STATE_RECEIVED))
}

func wantInbound(req *switchboardv1.ListMessagesRequest) bool {
	return req.GetDirection() != switchboardv1.Direction_DIRECTION_OUTBOUND &&
		(len(req.GetStates()) == 0 || hasState(req.GetStates(), switchboardv1.MessageState_MESSAGE_STATE_RECEIVED))
}

func hasState(states []switchboardv1.MessageState, s switchboardv1.MessageState) bool {
	for _, x := range states {
		if x == s || x == switchboardv1.MessageState_MESSAGE_STATE_UNSPECIFIED {
			return true
		}
	}
	return false
}

// hasStateBut reports whether states names any state other than s.
func hasStateBut(states []switchboardv1.MessageState, s switchboardv1.MessageState) bool {
	for _, x := range states {
		if x != s {
			return true
		}
	}
	return false
}

// messageFilter returns whether a message passes the request's filters
// (direction and listener are also applied by which phases run).
func messageFilter(req *switchboardv1.ListMessagesRequest) func(*switchboardv1.Message) bool {
	states := map[switchboardv1.MessageState]bool{}
	for _, st := range req.GetStates() {
		if st == switchboardv1.MessageState_MESSAGE_STATE_UNSPECIFIED {
			states = nil // any state
			break
		}
		states[st] = true
	}
	if len(states) == 0 {
		states = nil
	}
	start, end := req.GetStartTime(), req.GetEndTime()
	return func(m *switchboardv1.Message) bool {
		t := m.GetCreateTime().AsTime()
		return (req.GetConnectionId() == "" || m.GetConnectionId() == req.GetConnectionId()) &&
			(req.GetListenerId() == "" || m.GetListenerId() == req.GetListenerId()) &&
			(states == nil || states[m.GetState()]) &&
			(start == nil || !t.Before(start.AsTime())) &&
			(end == nil || t.Before(end.AsTime())) &&
			(req.GetControlId() == "" || m.GetControlId() == req.GetControlId())
	}
}
