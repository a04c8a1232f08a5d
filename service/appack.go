package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/transport"
)

// Application acknowledgements: a listener with a ConsumerAck lets a durable
// consumer decide how each of its messages is answered. The message is
// stored first; the connection's read loop then waits in decider.Decide
// (original mode) while the consumer gets the message on its Receive stream
// and calls AnswerMessage. Enhanced mode sends the commit ACK at once and
// the application ACK later, from a goroutine of the service (Later).
//
// answerBook pairs the two sides by journal sequence. Either may come
// first: a consumer can answer before the read loop has started waiting
// (the record is visible to Receive as soon as it is committed), so
// whichever side comes first makes the entry.

// Defaults of ConsumerAck.
const (
	defaultAnswerTimeout = 5 * time.Second
	defaultFallbackCode  = hl7.AE
)

// answerWaitSlack is how long AnswerMessage waits, past the message's
// deadline, for the read loop to write the answer and record it.
const answerWaitSlack = 5 * time.Second

type answerBook struct {
	mu      sync.Mutex
	entries map[uint64]*pendingAnswer
}

// pendingAnswer is one message whose answer is being decided.
type pendingAnswer struct {
	consumer string
	// answer carries the consumer's answer to the deciding side (cap 1).
	answer chan *switchboardv1.AnswerMessageRequest
	// decided is set, under answerBook.mu, once the deciding side has taken
	// an answer or applied the fallback; later answers are late.
	decided bool
	// answered says which request was used, when one was.
	answered *switchboardv1.AnswerMessageRequest
	late     []switchboardv1.AckCode
	// enhanced: the read loop answered with a commit ACK; the outcome is
	// the application ACK's, recorded by Later.
	enhanced bool
	// outcome is what was decided and sent; done is closed once it is
	// recorded.
	outcome *switchboardv1.InboundAnswer
	done    chan struct{}
}

func newAnswerBook() *answerBook { return &answerBook{entries: make(map[uint64]*pendingAnswer)} }

// entry returns seq's entry, making it when there is none.
func (b *answerBook) entry(seq uint64, consumer string) (*pendingAnswer, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.entries[seq]; ok {
		return p, false
	}
	p := &pendingAnswer{consumer: consumer, answer: make(chan *switchboardv1.AnswerMessageRequest, 1), done: make(chan struct{})}
	b.entries[seq] = p
	return p, true
}

// decide marks p decided, with the answer a (nil: the fallback).
func (b *answerBook) decide(p *pendingAnswer, a *switchboardv1.AnswerMessageRequest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p.decided, p.answered = true, a
}

// take returns seq's entry and removes it.
func (b *answerBook) take(seq uint64) *pendingAnswer {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.entries[seq]
	delete(b.entries, seq)
	return p
}

// decider decides the answers of one listener's messages for its
// ConsumerAck (transport.ConsumerDecided).
type decider struct {
	s        *Service
	consumer string
	timeout  time.Duration
	fallback hl7.AckCode
	text     string
	appAckTo string // enhanced mode: outbound connection for application ACKs
}

func (s *Service) newDecider(c *switchboardv1.ConsumerAck) *decider {
	d := &decider{s: s, consumer: c.GetConsumer(), timeout: durationOr(c.GetTimeout(), defaultAnswerTimeout),
		fallback: defaultFallbackCode, text: c.GetFallbackText(), appAckTo: c.GetApplicationAckConnectionId()}
	switch c.GetFallbackCode() {
	case switchboardv1.AckCode_ACK_CODE_AA:
		d.fallback = hl7.AA
	case switchboardv1.AckCode_ACK_CODE_AR:
		d.fallback = hl7.AR
	}
	s.deciding.Store(d.consumer, true)
	return d
}

var _ transport.Decider = (*decider)(nil)

// Decide waits for the consumer's answer to in, up to the message's
// deadline, and builds the reply: the consumer's, or the fallback.
func (d *decider) Decide(ctx context.Context, dst []byte, in *transport.Frame) transport.Reply {
	a, why, ok := d.wait(ctx, in.Seq, in.Time)
	if !ok {
		return transport.Reply{} // the connection is closing: nothing is written
	}
	out, r := d.reply(dst, in.Header, a, why, in.NewControlID())
	d.s.pendingOutcome(in.Seq, out)
	return r
}

// wait returns the consumer's answer to seq, or nil and why the fallback
// applies. ok is false when ctx ended first; the entry is then recorded as
// not written.
func (d *decider) wait(ctx context.Context, seq uint64, received time.Time) (*switchboardv1.AnswerMessageRequest, string, bool) {
	b := d.s.book
	p, _ := b.entry(seq, d.consumer)
	var a *switchboardv1.AnswerMessageRequest
	why := ""
	select {
	case a = <-p.answer: // answered before we got here
	default:
		if d.s.consumers.Attached(d.consumer) == 0 {
			why = "no consumer is attached to decide the acknowledgement"
			break
		}
		t := time.NewTimer(time.Until(received.Add(d.timeout)))
		defer t.Stop()
		select {
		case a = <-p.answer:
		case <-t.C:
			why = "no answer from the deciding consumer within " + d.timeout.String()
		case <-ctx.Done():
			b.decide(p, nil)
			d.s.finishAnswer(seq, &switchboardv1.InboundAnswer{Fallback: true, AnswerTime: timestamppb.Now()}, false)
			return nil, "", false
		}
	}
	b.decide(p, a)
	if a == nil {
		// An answer that raced the timer is late, not lost.
		select {
		case late := <-p.answer:
			b.mu.Lock()
			p.late = append(p.late, answerCode(late))
			b.mu.Unlock()
		default:
		}
	}
	return a, why, true
}

// reply builds the answer to a message with header h: the consumer's
// answer a, or the fallback (why says why).
func (d *decider) reply(dst []byte, h hl7.Header, a *switchboardv1.AnswerMessageRequest, why, controlID string) (*switchboardv1.InboundAnswer, transport.Reply) {
	out := &switchboardv1.InboundAnswer{AnswerTime: timestamppb.Now()}
	req := hl7.AckRequest{Time: time.Now(), ControlID: controlID}
	switch {
	case a == nil:
		out.Fallback = true
		req.Code, req.Text = d.fallback, d.text
		if req.Text == "" && !d.fallback.Positive() {
			req.Text = why
		}
	case a.GetPayload() != nil:
		out.Consumer = d.consumer
		r := transport.Reply{Payload: append(dst, a.GetPayload()...)}
		if ack, err := hl7.ParseAck(a.GetPayload()); err == nil {
			r.Code = transport.HL7Code(ack.Code)
			out.Code, out.Text = ackCode(r.Code), ack.Text
		}
		out.Sent = a.GetPayload()
		return out, r
	default:
		out.Consumer = d.consumer
		ack := a.GetAck()
		req.Code = hl7.AckCode(ackCodeName(ack.GetCode()))
		req.Text, req.ErrorCode, req.ErrorLocation = ack.GetText(), ack.GetErrorCode(), ack.GetErrorLocation()
	}
	payload := hl7.AppendAck(dst, h, req)
	out.Code, out.Text = ackCode(transport.HL7Code(req.Code)), req.Text
	out.Sent = bytes.Clone(payload) // payload is the connection's buffer, reused for the next answer
	r := transport.Reply{Payload: payload, Code: transport.HL7Code(req.Code)}
	if !req.Code.Positive() {
		r.Negative = req.Text
	}
	return out, r
}

// Later decides the application acknowledgement of a message received in
// enhanced mode and sends it, when MSH-16 asks for it, as a message of its
// own: on the connection the message came in on, or queued on the
// configured outbound connection.
func (d *decider) Later(in *transport.Frame) {
	s := d.s
	seq, received, h, connID := in.Seq, in.Time, in.Header, in.ConnectionID
	p, _ := s.book.entry(seq, d.consumer)
	s.book.mu.Lock()
	p.enhanced = true
	s.book.mu.Unlock()
	s.bg.Go(func() {
		a, why, ok := d.wait(s.ctx, seq, received)
		if !ok {
			return
		}
		out, r := d.reply(nil, h, a, why, "SBA"+strconv.FormatUint(seq, 36))
		if !h.ApplicationAckWanted(r.Negative != "" || !r.Code.Positive()) {
			out.Sent = nil
			s.pendingOutcome(seq, out)
			s.finishAnswer(seq, nil, false)
			return
		}
		s.pendingOutcome(seq, out)
		s.finishAnswer(seq, nil, d.sendAppAck(s.ctx, connID, r.Payload))
	})
}

// sendAppAck sends an application acknowledgement and reports whether it
// was written (or queued).
func (d *decider) sendAppAck(ctx context.Context, connID string, payload []byte) bool {
	s := d.s
	if d.appAckTo != "" {
		_, err := s.sendQueued(ctx, &switchboardv1.SendRequest{ConnectionId: d.appAckTo, Payload: payload, Queued: true})
		if err != nil {
			s.log.Warn("application acknowledgement not queued", "connection_id", d.appAckTo, "err", err)
		}
		return err == nil
	}
	c, err := s.reg.Conn(connID)
	if err == nil {
		_, err = c.Post(ctx, payload, 0)
	}
	if err != nil {
		s.log.Warn("application acknowledgement not written", "connection_id", connID, "err", err)
	}
	return err == nil
}

// pendingOutcome keeps what was decided for seq until the read loop says
// whether it was written (answered).
func (s *Service) pendingOutcome(seq uint64, out *switchboardv1.InboundAnswer) {
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	if p := s.book.entries[seq]; p != nil {
		p.outcome = out
	}
}

// answered is told, for every message a listener answered, what was
// written: for a consumer-decided message it records the outcome. It
// reports whether seq was one.
func (s *Service) answered(seq uint64, written bool) bool {
	s.book.mu.Lock()
	p := s.book.entries[seq]
	ours := p != nil && p.outcome != nil && !p.enhanced
	s.book.mu.Unlock()
	if ours {
		s.finishAnswer(seq, nil, written)
	}
	return ours
}

// finishAnswer records seq's outcome (out, or the one decided) with
// written, and wakes the AnswerMessage call waiting for it.
func (s *Service) finishAnswer(seq uint64, out *switchboardv1.InboundAnswer, written bool) {
	p := s.book.take(seq)
	if p == nil {
		return
	}
	if out == nil {
		out = p.outcome
	}
	if out == nil {
		out = &switchboardv1.InboundAnswer{}
	}
	s.book.mu.Lock()
	out.LateCodes = append(out.LateCodes, p.late...)
	s.book.mu.Unlock()
	out.Written = written
	p.outcome = out
	if err := s.putAnswer(context.Background(), seq, out); err != nil {
		s.log.Warn("answer not recorded", "seq", seq, "err", err)
	}
	close(p.done)
}

func (s *Service) putAnswer(ctx context.Context, seq uint64, out *switchboardv1.InboundAnswer) error {
	v, err := proto.Marshal(out)
	if err != nil {
		return err
	}
	return s.answers.PutAnswer(ctx, seq, v, false)
}

// storedAnswer returns what was recorded for seq; nil when nothing was.
func (s *Service) storedAnswer(ctx context.Context, seq uint64) (*switchboardv1.InboundAnswer, error) {
	v, err := s.answers.Answer(ctx, seq)
	if errors.Is(err, journal.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := &switchboardv1.InboundAnswer{}
	if err := proto.Unmarshal(v, out); err != nil {
		return nil, fmt.Errorf("answer of %d: %w", seq, err)
	}
	return out, nil
}

// notAwaitingError is an answer for a message no listener waits for this
// consumer to decide.
type notAwaitingError struct {
	seq      uint64
	consumer string
	why      string
}

func (e *notAwaitingError) Error() string {
	return fmt.Sprintf("message %d does not wait for an answer from consumer %s: %s", e.seq, e.consumer, e.why)
}

// AnswerMessage takes a deciding consumer's answer to a message.
func (s *Service) AnswerMessage(ctx context.Context, req *switchboardv1.AnswerMessageRequest) (*switchboardv1.AnswerMessageResponse, error) {
	seq, consumer := req.GetSequence(), req.GetConsumer()
	rec, d, err := s.decidedBy(ctx, seq, consumer)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	// Answering acks the message for the consumer, if it was delivered: in
	// the background, so the peer does not wait for that fsync too. An ack
	// lost in a crash only means the message is delivered again, and its
	// second answer is late.
	acked := make(chan error, 1)
	go func() {
		_, err := s.consumers.Ack(context.WithoutCancel(ctx), consumer, []uint64{seq}, 0, nil)
		if errors.Is(err, delivery.ErrNotDelivered) || errors.Is(err, delivery.ErrNotFound) {
			err = nil
		}
		acked <- err
	}()
	resp, err := s.answer(ctx, seq, consumer, rec, d, req)
	if ackErr := <-acked; err == nil && ackErr != nil {
		return nil, s.toStatus(ctx, ackErr)
	}
	return resp, err
}

// answer hands a consumer's answer to the read loop waiting for it (or
// records it as late) and returns what was sent.
func (s *Service) answer(ctx context.Context, seq uint64, consumer string, rec *journal.Record, d *decider,
	req *switchboardv1.AnswerMessageRequest) (*switchboardv1.AnswerMessageResponse, error) {
	p, made := s.book.entry(seq, consumer)
	if made {
		if out, err := s.storedAnswer(ctx, seq); err != nil || out != nil || time.Since(rec.Time) > d.timeout {
			// Decided before (or before a restart, or never waited on):
			// record the answer as late.
			s.book.take(seq)
			if err != nil {
				return nil, s.toStatus(ctx, err)
			}
			return s.lateAnswer(ctx, seq, out, req)
		}
	}
	s.book.mu.Lock()
	late := p.decided
	if !late {
		select {
		case p.answer <- req:
		default:
			late = true // another answer came first
		}
	}
	if late {
		p.late = append(p.late, answerCode(req))
	}
	s.book.mu.Unlock()
	if made {
		// The answer came before the read loop asked for it, which it
		// does right after the record is stored, unless the connection
		// closed first: then nobody ever will.
		if _, err := s.reg.Conn(rec.ConnectionID); err != nil && s.book.take(seq) == p {
			return s.lateAnswer(ctx, seq, nil, req)
		}
	}
	wait := time.NewTimer(time.Until(rec.Time.Add(d.timeout + answerWaitSlack)))
	defer wait.Stop()
	select {
	case <-p.done:
	case <-wait.C:
		// The read loop never took it (its connection closed before the
		// message was answered): the answer is recorded as late.
		if s.book.take(seq) == p {
			return s.lateAnswer(ctx, seq, nil, req)
		}
		select { // taken meanwhile: it is being written
		case <-p.done:
		case <-ctx.Done():
			return nil, s.toStatus(ctx, ctx.Err())
		}
	case <-ctx.Done():
		return nil, s.toStatus(ctx, ctx.Err())
	}
	s.book.mu.Lock()
	used := p.answered == req
	s.book.mu.Unlock()
	return &switchboardv1.AnswerMessageResponse{Written: used && p.outcome.GetWritten(), Answer: p.outcome}, nil
}

// lateAnswer records an answer that came after seq was decided.
func (s *Service) lateAnswer(ctx context.Context, seq uint64, out *switchboardv1.InboundAnswer, req *switchboardv1.AnswerMessageRequest) (*switchboardv1.AnswerMessageResponse, error) {
	if out == nil {
		out = &switchboardv1.InboundAnswer{}
	}
	out.LateCodes = append(out.LateCodes, answerCode(req))
	if err := s.putAnswer(ctx, seq, out); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.AnswerMessageResponse{Written: false, Answer: out}, nil
}

// decidedBy returns the record at seq and the decider of its listener, when
// that listener's acknowledgements are decided by consumer.
func (s *Service) decidedBy(ctx context.Context, seq uint64, consumer string) (*journal.Record, *decider, error) {
	recs, err := s.journal.Read(ctx, seq, 1, 1)
	if err != nil {
		return nil, nil, err
	}
	if len(recs) == 0 || recs[0].Seq != seq {
		return nil, nil, &notAwaitingError{seq, consumer, "no such message"}
	}
	rec := &recs[0]
	d := s.listenerDecider(rec.ListenerID)
	switch {
	case d == nil:
		return nil, nil, &notAwaitingError{seq, consumer, "its listener has no deciding consumer"}
	case d.consumer != consumer:
		return nil, nil, &notAwaitingError{seq, consumer, "its listener's deciding consumer is " + d.consumer}
	}
	return rec, d, nil
}

// listenerDecider returns the decider of a listener, or nil.
func (s *Service) listenerDecider(listenerID string) *decider {
	if listenerID == "" {
		return nil
	}
	v, err := s.reg.Listener(listenerID)
	if err != nil || v.Spec.GetConsumerAck() == nil {
		return nil
	}
	c := v.Spec.GetConsumerAck()
	return &decider{consumer: c.GetConsumer(), timeout: durationOr(c.GetTimeout(), defaultAnswerTimeout)}
}

// answerDeadline is the answer_deadline of a record delivered to consumer:
// set while the record's listener waits for that consumer's answer.
func (s *Service) answerDeadline(consumer string, r *journal.Record) *timestamppb.Timestamp {
	if _, ok := s.deciding.Load(consumer); !ok || r.Kind != journal.KindMessage {
		return nil
	}
	d := s.listenerDecider(r.ListenerID)
	if d == nil || d.consumer != consumer {
		return nil
	}
	deadline := r.Time.Add(d.timeout)
	if !time.Now().Before(deadline) {
		return nil
	}
	s.book.mu.Lock()
	p := s.book.entries[r.Seq]
	decided := p != nil && p.decided
	s.book.mu.Unlock()
	if decided {
		return nil
	}
	return timestamppb.New(deadline)
}

// ensureDecidingConsumer creates a listener's deciding consumer, filtered
// to the listener's messages, when it does not exist yet.
func (s *Service) ensureDecidingConsumer(ctx context.Context, listenerID string, c *switchboardv1.ConsumerAck) error {
	if c == nil {
		return nil
	}
	if _, err := s.consumers.Get(ctx, c.GetConsumer()); err == nil {
		return nil
	}
	last, err := s.journal.LastSeq(ctx)
	if err != nil {
		return err
	}
	spec := delivery.Spec{ListenerIDs: []string{listenerID}, Kinds: []journal.Kind{journal.KindMessage}}.WithDefaults()
	st, err := s.consumers.Attach(ctx, c.GetConsumer(), delivery.AttachOptions{Spec: &spec, Start: last + 1})
	if errors.Is(err, delivery.ErrConflict) {
		return nil // someone made it first, with their own filters
	}
	if err != nil {
		return err
	}
	st.Close()
	return nil
}

// listenerAck is the ACK policy of a listener: its ack_policy's, or
// decided by its deciding consumer.
func (s *Service) listenerAck(c *switchboardv1.ListenerConfig) transport.AckPolicy {
	if ca := c.GetConsumerAck(); ca != nil {
		return transport.ConsumerDecided(s.newDecider(ca))
	}
	return ackFromProto(c.GetAckPolicy())
}

// checkConsumerAck refuses a deciding consumer on a listener whose ACK
// policy is not HL7's: only HL7 acknowledgements can carry its answers.
func checkConsumerAck(c *switchboardv1.ListenerConfig) error {
	if c.GetConsumerAck() == nil {
		return nil
	}
	if k := c.GetAckPolicy().GetKind(); k != nil {
		if _, ok := k.(*switchboardv1.AckPolicy_Hl7); !ok {
			return errInvalid{field: "config.consumer_ack", msg: "a deciding consumer needs the HL7 ACK policy"}
		}
	}
	return nil
}

func answerCode(a *switchboardv1.AnswerMessageRequest) switchboardv1.AckCode {
	if a.GetAck() != nil {
		return a.GetAck().GetCode()
	}
	if ack, err := hl7.ParseAck(a.GetPayload()); err == nil {
		return ackCode(transport.HL7Code(ack.Code))
	}
	return switchboardv1.AckCode_ACK_CODE_UNSPECIFIED
}

// ackCodeName is the HL7 code of an API code: "AA" for ACK_CODE_AA.
func ackCodeName(c switchboardv1.AckCode) string {
	return c.String()[len("ACK_CODE_"):]
}
