package outbox

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// The state machine of a message, as the worker runs it:
//
//	QUEUED --(its turn, due, session open)--> SENDING    synced before any byte is written
//	SENDING --(written)-------------------> AWAITING_ACK not waited for: both mean "possibly written"
//	AWAITING_ACK --(positive ACK)---------> ACCEPTED     not waited for (see below)
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
// The writes the worker does not wait for (AWAITING_ACK, ACCEPTED) are
// held back (put) and handed to the store just before its next synced
// write, so they share that write's group commit: a message costs one
// fsync, the one before its first byte is written. Only a message's latest
// state is written, so AWAITING_ACK reaches the store only when its ACK is
// awaited longer than awaitingFlushDelay, or nothing else is in flight.
// The messages starting together in a window are marked SENDING with one
// synced write (the store commits in order), so a window of N costs one
// fsync, not N. What is held back is written when the worker goes idle or
// stops. If the server dies first, an ACCEPTED message comes back
// mid-attempt and is in doubt (resent with the same MSH-10, by default):
// that, never a loss, is the price of not waiting.
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

	// queued counts the connection's pending messages once counted is
	// set (count, at the worker's start); then Enqueue adds to it and the
	// worker and Resolve take final messages off.
	queued  atomic.Int64
	counted atomic.Bool
	recount atomic.Bool // WakeAll: count again
	// stats are the figures Stats reports; inDoubt is set by count, like
	// queued.
	stats workerStats

	// held are messages whose latest state the worker has not handed to
	// the store yet (put); only the worker's goroutine touches it.
	held []*switchboardv1.Message
}

// awaitingFlushDelay is how long an ACK is awaited before the held writes
// (AWAITING_ACK among them) are stored on their own.
const awaitingFlushDelay = 5 * time.Millisecond

// put stores m's new state: with sync, at once and durably, after the
// writes held back; without, held back until the next synced write or
// until the worker goes idle (flush).
func (w *worker) put(ctx context.Context, m *switchboardv1.Message, sync bool) error {
	if !sync {
		if !slices.Contains(w.held, m) {
			w.held = append(w.held, m)
		}
		return nil
	}
	if i := slices.Index(w.held, m); i >= 0 {
		w.held = slices.Delete(w.held, i, i+1)
	}
	if err := w.flush(ctx, false); err != nil {
		return err
	}
	return w.o.store.Update(ctx, m, true)
}

// flush hands the held writes to the store, the last one synced if sync.
// One that fails is logged and dropped: its message then reads as it was
// before (mid-attempt, so in doubt).
func (w *worker) flush(ctx context.Context, sync bool) error {
	held := w.held
	w.held = w.held[:0]
	var first error
	for i, m := range held {
		if err := w.o.store.Update(ctx, m, sync && i == len(held)-1); err != nil {
			w.log.Warn("could not record a message's state; it reads as it was", "message_id", m.GetMessageId(),
				"state", stateName(m.GetState()), "err", err)
			first = cmp.Or(first, err)
		}
	}
	clear(held[len(w.held):])
	return first
}

// count counts the pending messages in the store, with appends and
// resolutions held off so that none is counted twice or missed.
func (w *worker) count() error {
	w.appendMu.Lock()
	defer w.appendMu.Unlock()
	w.o.resolveMu.Lock()
	defer w.o.resolveMu.Unlock()
	var n, doubt int64
	for after := uint64(0); ; {
		ms, err := w.o.store.Pending(w.ctx, w.id, after, 1000)
		if err != nil {
			return err
		}
		if len(ms) == 0 {
			break
		}
		n += int64(len(ms))
		for _, m := range ms {
			if m.GetState() == switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT {
				doubt++
			}
		}
		after = ms[len(ms)-1].GetSequence()
	}
	w.queued.Store(n)
	w.stats.inDoubt.Store(doubt)
	w.counted.Store(true)
	return nil
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
	defer func() { _ = w.flush(context.WithoutCancel(w.ctx), true) }()
	idle, cancelIdle := context.WithCancel(w.ctx)
	defer cancelIdle()
	defer context.AfterFunc(w.o.closing, cancelIdle)()

	for err := w.count(); err != nil; err = w.count() {
		if w.ctx.Err() != nil {
			return
		}
		w.log.Error("outbox store unavailable; cannot count the queue", "err", err)
		select {
		case <-w.o.clock.After(w.pol.backoff(1)):
		case <-w.ctx.Done():
			return
		}
	}
	var (
		base     uint64 // every message up to base is final
		inflight []*flight
		sess     *transport.Conn
		failures int // consecutive failures to reach the store or the session
	)
	for {
		if w.recount.Swap(false) && w.count() != nil {
			w.recount.Store(true)
		}
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
		if room := w.room(sess, len(inflight)); !closing && room > 0 {
			ms, err := w.next(idle, &base, inflight, room)
			var m *switchboardv1.Message
			if len(ms) > 0 {
				m = ms[0]
			}
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
				ms = startable(ms[:min(len(ms), w.window(sess)-len(inflight))], w.o.clock.Now())
				fs, err := w.attempt(sess, ms)
				inflight = append(inflight, fs...)
				if err != nil {
					failures++
					due = w.o.clock.After(w.pol.backoff(failures))
					break
				}
				failures = 0
				continue
			}
		}
		var flushAfter *time.Timer
		if len(w.held) > 0 {
			if len(inflight) == 0 {
				_ = w.flush(context.WithoutCancel(w.ctx), false)
			} else {
				flushAfter = time.NewTimer(awaitingFlushDelay)
			}
		}
		if w.wait(idle, waitFor, due, flushAfter) {
			return
		}
	}
}

// wait blocks until there is something to do; it reports whether the
// worker must stop.
func (w *worker) wait(idle context.Context, waitFor <-chan struct{}, due <-chan time.Time, flushAfter *time.Timer) (stop bool) {
	var flushC <-chan time.Time
	if flushAfter != nil {
		defer flushAfter.Stop()
		flushC = flushAfter.C
	}
	select {
	case <-w.wakeCh:
	case <-waitFor:
	case <-due:
	case <-flushC:
		_ = w.flush(context.WithoutCancel(w.ctx), false)
	case <-idle.Done():
		if waitFor == nil { // nothing in flight
			return true
		}
		select { // finish the window, unless told to stop at once
		case <-waitFor:
		case <-w.ctx.Done():
			return true
		}
	}
	return false
}

// room is how many messages may start now with n in flight on sess: the
// free part of the window once at least half of it is free (or nothing is
// in flight), so that messages start in groups that share one synced write
// instead of one at a time as each ACK comes back.
func (w *worker) room(sess *transport.Conn, n int) int {
	free := w.window(sess) - n
	if n > 0 && free < (w.window(sess)+1)/2 {
		return 0
	}
	return max(free, 0)
}

// window is how many messages may be in flight on sess.
func (w *worker) window(sess *transport.Conn) int {
	if sess != nil && !sess.Pipelines() {
		return 1
	}
	return w.pol.maxInFlight
}

// next returns up to room pending messages that are not in flight, in
// order, and advances base past the final ones.
func (w *worker) next(ctx context.Context, base *uint64, inflight []*flight, room int) ([]*switchboardv1.Message, error) {
	ms, err := w.o.store.Pending(ctx, w.id, *base, len(inflight)+len(w.held)+room)
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	*base = max(*base, ms[0].GetSequence()-1)
	rest := ms[:0]
	for _, m := range ms {
		// In flight, or a state held back (the store has an older one).
		if !inFlight(inflight, m.GetSequence()) && !slices.ContainsFunc(w.held, func(h *switchboardv1.Message) bool {
			return h.GetSequence() == m.GetSequence()
		}) {
			rest = append(rest, m)
		}
	}
	return rest, nil
}

// startable returns the run of ms, from the first (which the caller found
// QUEUED and due), that may start now: queued and due.
func startable(ms []*switchboardv1.Message, now time.Time) []*switchboardv1.Message {
	n := 1
	for ; n < len(ms); n++ {
		m := ms[n]
		if m.GetState() != switchboardv1.MessageState_MESSAGE_STATE_QUEUED ||
			(m.GetNextAttemptTime() != nil && m.GetNextAttemptTime().AsTime().After(now)) {
			break
		}
	}
	return ms[:n]
}

func inFlight(fs []*flight, seq uint64) bool {
	for _, f := range fs {
		if f.m.GetSequence() == seq {
			return true
		}
	}
	return false
}

// attempt starts an attempt at each of ms on sess, in order: SENDING is
// durable for all of them (one synced write, the last) before the first
// byte is written. It returns the messages in flight; those whose attempt
// ended at once have their outcome recorded. The error is the store's.
func (w *worker) attempt(sess *transport.Conn, ms []*switchboardv1.Message) ([]*flight, error) {
	now := timestamppb.New(w.o.clock.Now())
	for i, m := range ms {
		m.State, m.UpdateTime, m.NextAttemptTime = switchboardv1.MessageState_MESSAGE_STATE_SENDING, now, nil
		m.Attempts = append(m.Attempts, &switchboardv1.DeliveryAttempt{StartTime: now})
		if err := w.put(w.ctx, m, i == len(ms)-1); err != nil {
			// Nothing written. The store may hold SENDING or QUEUED now;
			// either way the next look at it decides.
			if w.ctx.Err() == nil {
				w.log.Error("could not record the attempt; not sending", "message_id", m.GetMessageId(), "err", err)
			}
			return nil, err
		}
	}
	fs := make([]*flight, 0, len(ms))
	for i, m := range ms {
		h, err := sess.Dispatch(w.ctx, m.GetPayload(), 0)
		if err != nil {
			var se *transport.SendError
			errors.As(err, &se)
			err = w.settle(m, outcomeOf(transport.SendResult{}, err), ackOf(se))
			for _, r := range ms[i+1:] { // never written either
				err = errors.Join(err, w.settle(r, outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_NOT_SENT,
					err: "not written: the message before it in the window could not be"}, nil))
			}
			return fs, err
		}
		m.State, m.UpdateTime = switchboardv1.MessageState_MESSAGE_STATE_AWAITING_ACK, timestamppb.New(w.o.clock.Now())
		_ = w.put(w.ctx, m, false)
		fs = append(fs, &flight{m: m, h: h})
	}
	return fs, nil
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
	if int(o.result) < numResults {
		w.stats.attempts[o.result].Add(1) // it ended, whether or not that is stored
	}
	// The context that survives Close, so an outcome read during shutdown is
	// still stored. ACCEPTED is held back (see the state machine).
	sync := v.state != switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
	if err := w.put(context.WithoutCancel(w.ctx), m, sync); err != nil {
		w.log.Error("could not record the outcome; the message will be taken as in doubt", "message_id", m.GetMessageId(), "err", err)
		return err
	}
	if isFinal(v.state) {
		w.queued.Add(-1)
	}
	switch v.state {
	case switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT:
		w.stats.inDoubt.Add(1)
		w.o.event(EventInDoubt, m)
	case switchboardv1.MessageState_MESSAGE_STATE_FAILED:
		w.stats.failed.Add(1)
		w.o.event(EventFailed, m)
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
