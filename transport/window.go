package transport

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// Pipelining. Dispatch writes a message and returns without waiting for its
// acknowledgement, so that several messages can be in flight at once (a
// window). That is only sound when every acknowledgement names the message
// it answers: with a Correlating policy (HL7: MSA-2 is the sent MSH-10) each
// reply is matched to its message by that key, in any order. Under any
// other policy the window holds one message, as Send does.
//
// A reply that matches none of the messages in flight, an unreadable one, a
// timeout or a failed write resets the connection, and every message still
// in flight then ends in doubt: nothing read after that point could be
// credited to the right message.
//
// While the window holds a message it holds the connection's send slot, so
// a Send waits for the window to empty (Sends and Dispatches never share
// the connection's acknowledgements), and Drain lets the window's
// acknowledgements arrive before it closes the connection.

// Correlating is implemented by acknowledgement policies whose replies name
// the message they acknowledge, so several sent messages may wait for
// theirs at once (Dispatch).
type Correlating interface {
	AckPolicy
	// AckKey returns the key of the message a received frame acknowledges,
	// and whether the frame names one. A sent message's key is its
	// Expectation.ControlID.
	AckKey(in *Frame) (string, bool)
}

// AckKey reads MSA-2.
func (hl7Policy) AckKey(in *Frame) (string, bool) {
	if in.HeaderErr != nil {
		return "", false
	}
	a, err := hl7.ParseAck(in.Payload)
	if err != nil {
		return "", false
	}
	return a.ControlID, true
}

// InFlight is a message written by Dispatch whose acknowledgement may still
// be on its way.
type InFlight struct {
	exp      Expectation
	key      string      // its key in the window
	deadline time.Time   // the acknowledgement must arrive before it
	sent     time.Time   // when its write ended; guarded by Conn.mu
	timer    *time.Timer // guarded by Conn.mu
	done     chan struct{}
	// The outcome, set by whoever took the message from the window, before
	// done is closed.
	res SendResult
	err error
}

// Done is closed once the message's outcome is known: its acknowledgement
// arrived, or it ended in doubt.
func (f *InFlight) Done() <-chan struct{} { return f.done }

// Result waits for Done and returns the outcome, as Send would have: a
// negative acknowledgement is a result; an error is a *SendError, always
// Written (the message is in doubt).
func (f *InFlight) Result() (SendResult, error) {
	<-f.done
	return f.res, f.err
}

// ControlID is the sent message's HL7 MSH-10, when it has one.
func (f *InFlight) ControlID() string { return f.exp.ControlID }

// Pipelines reports whether the connection's policy matches each
// acknowledgement to its message, so that Dispatch can keep more than one
// message in flight.
func (c *Conn) Pipelines() bool {
	_, ok := c.cfg.Ack.(Correlating)
	return ok
}

// Dispatch writes payload as one frame and returns once it is written,
// without waiting for the acknowledgement: Done and Result on the returned
// InFlight give it. timeout (zero: the connection's AckTimeout) bounds the
// write and the wait for the acknowledgement together; ctx bounds Dispatch
// itself (waiting for room in the window and the write), not the wait for
// the acknowledgement.
//
// Under a Correlating policy any number of messages may be in flight (the
// caller bounds the window), except that a message waits for an earlier one
// with the same key to be answered; under other policies, and while a Send
// is in flight, Dispatch waits for the connection to have nothing in
// flight.
//
// Errors are as for Send: a *SendError (Written when the message is in
// doubt; the connection has then been reset) or one wrapping
// ErrInvalidPayload (nothing written).
func (c *Conn) Dispatch(ctx context.Context, payload []byte, timeout time.Duration) (*InFlight, error) {
	f, err := c.dispatch(ctx, payload, timeout)
	if err != nil {
		if fn := c.obs.SendDone; fn != nil {
			fn(c, SendResult{}, err)
		}
		return nil, err
	}
	return f, nil
}

func (c *Conn) dispatch(ctx context.Context, payload []byte, timeout time.Duration) (*InFlight, error) {
	exp, err := c.expect(payload)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = c.cfg.AckTimeout
	}
	f := &InFlight{exp: exp, done: make(chan struct{})}
	if c.Pipelines() {
		f.key = exp.ControlID
	}
	if cause, err := c.join(ctx, f); err != nil {
		return nil, &SendError{Cause: cause, ControlID: exp.ControlID, Err: err}
	}
	f.deadline = time.Now().Add(timeout)
	deadline := f.deadline
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	n, err := c.writeMessage(ctx, payload, deadline)
	if err != nil {
		c.mu.Lock()
		mine := c.winTake(f)
		c.mu.Unlock()
		se := c.writeFailed(ctx, n, err, deadline, exp.ControlID)
		if !mine {
			// Its outcome was decided meanwhile (the reply came as the
			// write reported its error, or the connection closed) and
			// stands.
			return f, nil
		}
		return nil, se
	}
	c.mu.Lock()
	f.sent = time.Now()
	if exp.NoReply {
		if c.winTake(f) {
			f.res = SendResult{Outcome: OutcomeWritten, SentControlID: exp.ControlID}
			c.mu.Unlock()
			c.complete(f)
			return f, nil
		}
	} else if c.win[f.key] == f {
		f.timer = time.AfterFunc(time.Until(f.deadline), func() { c.expire(f) })
	}
	c.mu.Unlock()
	return f, nil
}

// join waits until f may enter the window and puts it there. The first
// message of a window takes the send slot.
func (c *Conn) join(ctx context.Context, f *InFlight) (SendCause, error) {
	for {
		c.mu.Lock()
		if c.state != StateOpen {
			c.mu.Unlock()
			return CauseNotOpen, ErrClosed
		}
		if c.winHeld {
			if c.win[f.key] == nil {
				c.win[f.key] = f
				c.mu.Unlock()
				return 0, nil
			}
			changed := c.winChanged
			c.mu.Unlock()
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return ctxCause(ctx, CauseQueueTimeout), ctx.Err()
			case <-c.done:
				return CauseNotOpen, ErrClosed
			}
		}
		c.mu.Unlock()
		select {
		case c.sendSlot <- struct{}{}:
		case <-ctx.Done():
			return ctxCause(ctx, CauseQueueTimeout), ctx.Err()
		case <-c.done:
			return CauseNotOpen, ErrClosed
		}
		// Holding the slot, no window can be open: it would hold the slot.
		c.mu.Lock()
		if c.state != StateOpen {
			c.mu.Unlock()
			<-c.sendSlot
			return CauseNotOpen, ErrClosed
		}
		if c.win == nil {
			c.win = make(map[string]*InFlight)
			c.winChanged = make(chan struct{})
		}
		c.winHeld = true
		c.win[f.key] = f
		c.mu.Unlock()
		return 0, nil
	}
}

// winTake removes f from the window, giving the send slot back when the
// window empties. It reports false when f had already left (another path
// decided its outcome). c.mu must be held.
func (c *Conn) winTake(f *InFlight) bool {
	if c.win[f.key] != f {
		return false
	}
	delete(c.win, f.key)
	if f.timer != nil {
		f.timer.Stop()
	}
	close(c.winChanged)
	c.winChanged = make(chan struct{})
	if len(c.win) == 0 {
		c.winHeld = false
		<-c.sendSlot
	}
	return true
}

// complete publishes the outcome of f, which the caller took from the
// window.
func (c *Conn) complete(f *InFlight) {
	close(f.done)
	if fn := c.obs.SendDone; fn != nil {
		res, err := f.Result()
		fn(c, res, err)
	}
}

// expire ends f in doubt when its acknowledgement did not come in time, and
// resets the connection (the timer's goroutine).
func (c *Conn) expire(f *InFlight) {
	c.mu.Lock()
	// Once the connection is closed, its read loop ends every message
	// still waiting (connection lost): one timeout resets it, not several.
	// Closing and taking f happen together, so no other message is let in
	// meanwhile and the read loop cannot end f first.
	if c.win[f.key] != f || !c.markClosed(CloseAckTimeout, ErrAckTimeout) {
		c.mu.Unlock()
		return
	}
	c.winTake(f)
	c.stats.ackTimeouts.Add(1) // before the close snapshot
	c.mu.Unlock()
	c.shut()
	c.log.Warn("no acknowledgement; message in doubt, resetting connection", "control_id", f.exp.ControlID, "cause", CauseAckTimeout.String())
	f.err = &SendError{Written: true, Cause: CauseAckTimeout, ControlID: f.exp.ControlID, Err: ErrAckTimeout}
	c.complete(f)
}

// windowReply handles a frame received while dispatched messages wait. It
// reports whether the frame was an acknowledgement (handled) and, if so,
// whether the connection stays open. Other frames are the peer's own
// messages and go the usual way.
func (c *Conn) windowReply(in *Frame, payload []byte, now time.Time) (handled, open bool) {
	key, keyed := "", false
	corr, correlating := c.cfg.Ack.(Correlating)
	if correlating {
		key, keyed = corr.AckKey(in)
	}
	c.mu.Lock()
	var f *InFlight
	if !correlating || keyed {
		f = c.win[key]
	}
	var exp Expectation
	switch {
	case f != nil:
		exp = f.exp
	case len(c.win) == 0: // the last one timed out meanwhile
		c.mu.Unlock()
		return false, true
	default:
		for _, g := range c.win {
			exp = g.exp
			break
		}
	}
	c.mu.Unlock()
	if c.cfg.Ack.Classify(in, &exp) != FrameReply {
		return false, true
	}
	reply := bytes.Clone(payload)
	if f == nil {
		c.unmatched(reply, &exp)
		return true, false
	}
	c.mu.Lock()
	mine := c.winTake(f)
	sent := f.sent // zero when the reply beat Dispatch to recording the write's end
	c.mu.Unlock()
	if !mine { // it timed out as the reply came: the connection is being reset
		c.closeWith(CloseAckTimeout, ErrAckTimeout)
		return true, false
	}
	var rtt time.Duration
	if !sent.IsZero() {
		rtt = max(now.Sub(sent), 0)
	}
	outcome, ack, se := c.matchReply(reply, &f.exp)
	if se != nil { // the others in flight end when the connection has closed
		c.closeWith(CloseAckMismatch, se.Err)
		f.err = se
		c.complete(f)
		return true, false
	}
	f.res = SendResult{Outcome: outcome, Ack: ack, SentControlID: f.exp.ControlID, RoundTrip: rtt}
	c.complete(f)
	return true, true
}

// unmatched handles an acknowledgement that names none of the messages in
// flight: it cannot be credited to any of them, so all are in doubt and the
// connection is reset. exp is one of theirs, to read what it says.
func (c *Conn) unmatched(reply []byte, exp *Expectation) {
	_, ack, _ := c.cfg.Ack.Match(reply, exp)
	c.stats.ackMismatches.Add(1)
	err := fmt.Errorf("%w: it matches no message in flight", ErrAckMismatch)
	c.closeWith(CloseAckMismatch, err)
	n := c.failWindow(func(f *InFlight) error {
		a := ack
		return &SendError{Written: true, Cause: CauseAckMismatch, ControlID: f.exp.ControlID, Ack: &a, Err: err}
	})
	c.log.Warn("acknowledgement matches no message in flight; they are in doubt, resetting connection",
		"ack_control_id", ack.ControlID, "in_flight", n)
}

// failWindow ends every message still in the window with the error errOf
// returns for it, and reports how many there were.
func (c *Conn) failWindow(errOf func(*InFlight) error) int {
	c.mu.Lock()
	fs := make([]*InFlight, 0, len(c.win))
	for _, f := range c.win {
		fs = append(fs, f)
	}
	for _, f := range fs {
		c.winTake(f)
	}
	c.mu.Unlock()
	for _, f := range fs {
		f.err = errOf(f)
		c.complete(f)
	}
	return len(fs)
}

// windowClosed ends the messages still in flight when the connection has
// closed: written, so in doubt.
func (c *Conn) windowClosed() {
	c.mu.Lock()
	why := c.closeWhy
	c.mu.Unlock()
	err := fmt.Errorf("%w (%s)", ErrClosed, why)
	n := c.failWindow(func(f *InFlight) error {
		return &SendError{Written: true, Cause: CauseConnectionLost, ControlID: f.exp.ControlID, Err: err}
	})
	if n > 0 {
		c.log.Warn("connection closed with messages in flight; they are in doubt", "in_flight", n, "reason", why.String())
	}
}
