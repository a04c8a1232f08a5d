package outbox

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// The state machine of a message, as the worker runs it:
//
//	QUEUED --(its turn, due, session open)--> SENDING    synced before any byte is written
//	SENDING --(written)-------------------> AWAITING_ACK not synced: both mean "possibly written"
//	AWAITING_ACK --(positive ACK)---------> ACCEPTED     synced
//	... --(AE/CE; AR/CR/NAK with fail_rejected; no attempts left; in doubt with FAIL)
//	                                     --> FAILED      synced, with the reason
//	... --(in doubt with HOLD)-----------> IN_DOUBT     synced; blocks the queue until ResolveMessage
//	... --(not sent; AR/CR/NAK; in doubt with RESEND; attempts left)
//	                                     --> QUEUED      synced, with the next attempt's time
//
// Every attempt is recorded in the message (start and end time, result, the
// acknowledgement, the error). A message found SENDING or AWAITING_ACK that
// the worker did not write itself was interrupted by a restart (or its
// outcome could not be stored): it may have been written, so it is in doubt
// and follows the in-doubt policy; it is never resent as if unsent, and
// never dropped.
//
// Order: a message starts only when every earlier message of its
// connection is final or in flight, so none overtakes an earlier one. With
// a window (max_in_flight > 1) the messages already in flight behind one
// that must be retried have been written before its retry; nothing new is
// written until it has gone again.

// worker delivers the messages of one outbound connection.
type worker struct {
	o      *Outbox
	id     string
	pol    policy
	log    *slog.Logger
	wakeCh chan struct{} // buffered: a wake-up is never lost
	// ctx ends when the worker must stop at once: its connection was
	// removed, or Close gave up waiting. idle also ends when Close begins;
	// the worker waits on it when nothing is in flight.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	running  bool // guarded by o.mu
	appendMu sync.RWMutex
	removed  bool // guarded by appendMu
}

// flight is a message written and awaiting its acknowledgement.
type flight struct {
	m *switchboardv1.Message
	h *transport.InFlight
}

func (o *Outbox) newWorker(id string, spec *switchboardv1.ConnectionConfig) *worker {
	w := &worker{o: o, id: id, pol: policyOf(spec), log: o.log.With("connection_id", id),
		wakeCh: make(chan struct{}, 1), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(o.stop)
	return w
}

func (w *worker) wake() {
	select {
	case w.wakeCh <- struct{}{}:
	default:
	}
}

// halt stops a removed connection's worker and waits for it; appends in
// progress finish first, later ones are refused.
func (w *worker) halt() {
	w.appendMu.Lock()
	w.removed = true
	w.appendMu.Unlock()
	w.cancel()
	w.o.mu.Lock()
	running := w.running
	w.o.mu.Unlock()
	if running {
		<-w.done
	}
}

func (w *worker) run() {
	defer close(w.done)
	defer w.cancel()
	idle, cancelIdle := context.WithCancel(w.ctx)
	defer cancelIdle()
	defer context.AfterFunc(w.o.closing, cancelIdle)()

	var (
		base     uint64 // every message up to base is final
		inflight []*flight
		sess     *transport.Conn
		failures int // consecutive failures to reach the store or the session
	)
	for {
		inflight = w.reap(inflight)
		closing := w.o.closing.Err() != nil
		if w.ctx.Err() != nil || (closing && len(inflight) == 0) {
			return
		}
		var (
			due     <-chan time.Time // the next attempt's delay, or a retry of the store or the session
			waitFor <-chan struct{}  // the oldest message in flight
		)
		if len(inflight) > 0 {
			waitFor = inflight[0].h.Done()
		}
		if !closing && len(inflight) < w.window(sess) {
			m, err := w.next(idle, &base, inflight)
			switch {
			case err != nil:
				if idle.Err() == nil {
					failures++
					w.log.Error("outbox store unavailable; retrying", "err", err)
					due = w.o.clock.After(w.pol.backoff(failures))
				}
			case m == nil: // nothing to start
			case m.GetState() == switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT:
				// Held: the queue waits for ResolveMessage (which wakes us).
			case m.GetState() != switchboardv1.MessageState_MESSAGE_STATE_QUEUED:
				if err := w.interrupted(m); err != nil {
					failures++
					due = w.o.clock.After(w.pol.backoff(failures))
					break
				}
				continue
			default:
				if wait := m.GetNextAttemptTime().AsTime().Sub(w.o.clock.Now()); m.GetNextAttemptTime() != nil && wait > 0 {
					due = w.o.clock.After(wait)
					break
				}
				if sess == nil || sess.State() != transport.StateOpen {
					if len(inflight) > 0 {
						break // the closed session ends them first
					}
					var err error
					if sess, err = w.o.sessions.WaitOpen(idle, w.id); err != nil || sess.State() != transport.StateOpen {
						// Down and not coming back by itself (yet): wait,
						// without spending the message's attempts.
						if idle.Err() == nil {
							failures++
							w.log.Debug("connection not open; queued messages wait", "err", err)
							due = w.o.clock.After(w.pol.backoff(failures))
						}
						break
					}
				}
				f, err := w.attempt(sess, m)
				if err != nil {
					failures++
					due = w.o.clock.After(w.pol.backoff(failures))
					break
				}
				failures = 0
				if f != nil {
					inflight = append(inflight, f)
				}
				continue
			}
		}
		select {
		case <-w.wakeCh:
		case <-waitFor:
		case <-due:
		case <-idle.Done():
			if len(inflight) == 0 {
				return
			}
			select { // finish the window, unless told to stop at once
			case <-waitFor:
			case <-w.ctx.Done():
				return
			}
		}
	}
}

// window is how many messages may be in flight on sess.
func (w *worker) window(sess *transport.Conn) int {
	if sess != nil && !sess.Pipelines() {
		return 1
	}
	return w.pol.maxInFlight
}

// next returns the first pending message that is not in flight, or nil,
// and advances base past the final ones.
func (w *worker) next(ctx context.Context, base *uint64, inflight []*flight) (*switchboardv1.Message, error) {
	ms, err := w.o.store.Pending(ctx, w.id, *base, len(inflight)+1)
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	*base = max(*base, ms[0].GetSequence()-1)
	for _, m := range ms {
		if !inFlight(inflight, m.GetSequence()) {
			return m, nil
		}
	}
	return nil, nil
}

func inFlight(fs []*flight, seq uint64) bool {
	for _, f := range fs {
		if f.m.GetSequence() == seq {
			return true
		}
	}
	return false
}

// attempt makes one attempt at m on sess: SENDING is durable before the
// first byte is written. It returns the message in flight, or nil when the
// attempt ended at once (its outcome is recorded); an error when the store
// failed.
func (w *worker) attempt(sess *transport.Conn, m *switchboardv1.Message) (*flight, error) {
	now := timestamppb.New(w.o.clock.Now())
	m.State, m.UpdateTime, m.NextAttemptTime = switchboardv1.MessageState_MESSAGE_STATE_SENDING, now, nil
	m.Attempts = append(m.Attempts, &switchboardv1.DeliveryAttempt{StartTime: now})
	if err := w.o.store.Update(w.ctx, m, true); err != nil {
		// Nothing written. The store may hold SENDING or QUEUED now;
		// either way the next look at it decides.
		if w.ctx.Err() == nil {
			w.log.Error("could not record the attempt; not sending", "message_id", m.GetMessageId(), "err", err)
		}
		return nil, err
	}
	h, err := sess.Dispatch(w.ctx, m.GetPayload(), 0)
	if err != nil {
		var se *transport.SendError
		errors.As(err, &se)
		return nil, w.settle(m, outcomeOf(transport.SendResult{}, err), ackOf(se))
	}
	m.State, m.UpdateTime = switchboardv1.MessageState_MESSAGE_STATE_AWAITING_ACK, timestamppb.New(w.o.clock.Now())
	if err := w.o.store.Update(w.ctx, m, false); err != nil {
		w.log.Warn("could not record the write; the message stays SENDING", "message_id", m.GetMessageId(), "err", err)
	}
	return &flight{m: m, h: h}, nil
}

// reap records the outcome of every message in flight that has one and
// returns those still waiting, in order.
func (w *worker) reap(inflight []*flight) []*flight {
	rest := inflight[:0]
	for _, f := range inflight {
		select {
		case <-f.h.Done():
			res, err := f.h.Result()
			var se *transport.SendError
			var ack *transport.PeerAck
			switch {
			case errors.As(err, &se):
				ack = ackOf(se)
			case err == nil && res.Outcome != transport.OutcomeWritten:
				ack = &res.Ack
			}
			// A failure to store it is logged; the message then reads as
			// mid-attempt and is taken as in doubt.
			_ = w.settle(f.m, outcomeOf(res, err), ack)
		default:
			rest = append(rest, f)
		}
	}
	clear(inflight[len(rest):])
	return rest
}

// outcomeOf reads an attempt's outcome from what transport reported.
// ackOf is the untrusted reply a SendError carries, if any.
func ackOf(se *transport.SendError) *transport.PeerAck {
	if se == nil {
		return nil
	}
	return se.Ack
}

func outcomeOf(res transport.SendResult, err error) outcome {
	var se *transport.SendError
	switch {
	case errors.As(err, &se) && se.Written:
		return outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT, err: se.Error()}
	case err != nil:
		return outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_NOT_SENT, err: err.Error(),
			invalid: errors.Is(err, transport.ErrInvalidPayload)}
	case res.Outcome == transport.OutcomeRejected:
		return outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_REJECTED, code: res.Ack.Code}
	}
	return outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_ACCEPTED, code: res.Ack.Code}
}

// interrupted handles a message found mid-attempt that this worker did not
// write: in doubt.
func (w *worker) interrupted(m *switchboardv1.Message) error {
	w.log.Warn("message found mid-attempt (the server stopped, or its outcome was not stored); it may have been written",
		"message_id", m.GetMessageId(), "control_id", m.GetControlId(), "state", stateName(m.GetState()))
	return w.settle(m, outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT,
		err: "interrupted: the attempt was under way when the server stopped; the message may have been written"}, nil)
}

// settle records how m's last attempt ended and what becomes of m.
func (w *worker) settle(m *switchboardv1.Message, o outcome, ack *transport.PeerAck) error {
	now := w.o.clock.Now()
	ts := timestamppb.New(now)
	endAttempt(m, ts, &o, w.pa(ack))
	v := w.pol.decide(len(m.GetAttempts()), o)
	m.State, m.Failure, m.UpdateTime, m.NextAttemptTime = v.state, v.failure, ts, nil
	if v.state == switchboardv1.MessageState_MESSAGE_STATE_QUEUED {
		m.NextAttemptTime = timestamppb.New(now.Add(w.pol.backoff(len(m.GetAttempts()))))
	}
	// The context that survives Close, so an outcome read during shutdown is
	// still stored.
	if err := w.o.store.Update(context.WithoutCancel(w.ctx), m, true); err != nil {
		w.log.Error("could not record the outcome; the message will be taken as in doubt", "message_id", m.GetMessageId(), "err", err)
		return err
	}
	args := []any{"message_id", m.GetMessageId(), "control_id", m.GetControlId(), "attempts", len(m.GetAttempts())}
	switch v.state {
	case switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED:
		w.log.Debug("message delivered", args...)
	case switchboardv1.MessageState_MESSAGE_STATE_QUEUED:
		w.log.Info("attempt failed; retrying", append(args, "result", o.result.String(), "err", o.err, "retry_at", m.GetNextAttemptTime().AsTime())...)
	default:
		w.log.Warn("message "+stateName(v.state), append(args, "failure", v.failure)...)
	}
	return nil
}

func (w *worker) pa(a *transport.PeerAck) *switchboardv1.PeerAck {
	if a == nil {
		return nil
	}
	return w.o.peerAck(a)
}

// endAttempt records o as the end of m's last attempt (one is added when
// none was recorded), and ack as the message's latest acknowledgement.
func endAttempt(m *switchboardv1.Message, now *timestamppb.Timestamp, o *outcome, ack *switchboardv1.PeerAck) {
	if n := len(m.GetAttempts()); n == 0 || m.GetAttempts()[n-1].GetResult() != switchboardv1.AttemptResult_ATTEMPT_RESULT_UNSPECIFIED {
		m.Attempts = append(m.Attempts, &switchboardv1.DeliveryAttempt{StartTime: now})
	}
	a := m.GetAttempts()[len(m.GetAttempts())-1]
	a.EndTime, a.Result, a.Error, a.Ack = now, o.result, o.err, ack
	if ack != nil {
		m.Ack = ack
	}
}
