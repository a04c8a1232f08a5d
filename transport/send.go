package transport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// Send writes payload as one frame and waits for the peer's acknowledgement.
// timeout (zero: the connection's AckTimeout) bounds the write and the wait
// together, and so does ctx. Sends on one connection run one at a time, in
// the order they reach the connection. A negative acknowledgement is a
// result, not an error.
//
// Errors are *SendError (Written tells whether the message is in doubt; if
// it is, the connection has been reset so a late acknowledgement can never
// be credited to the next message) or wrap ErrInvalidPayload (nothing
// written).
func (c *Conn) Send(ctx context.Context, payload []byte, timeout time.Duration) (SendResult, error) {
	res, err := c.send1(ctx, payload, timeout, false)
	if f := c.obs.SendDone; f != nil {
		f(c, res, err)
	}
	return res, err
}

// Post writes payload as one frame, in send order like Send, but waits for
// no acknowledgement, whatever the policy: for messages a peer does not
// answer, such as an HL7 application acknowledgement. Its result is
// OutcomeWritten; errors are as Send's.
func (c *Conn) Post(ctx context.Context, payload []byte, timeout time.Duration) (SendResult, error) {
	res, err := c.send1(ctx, payload, timeout, true)
	if f := c.obs.SendDone; f != nil {
		f(c, res, err)
	}
	return res, err
}

func (c *Conn) send1(ctx context.Context, payload []byte, timeout time.Duration, noReply bool) (SendResult, error) {
	exp, err := c.expect(payload)
	if err != nil {
		return SendResult{}, err
	}
	exp.NoReply = exp.NoReply || noReply
	sentID := exp.ControlID
	notSent := func(cause SendCause, err error) (SendResult, error) {
		return SendResult{}, &SendError{Cause: cause, ControlID: sentID, Err: err}
	}
	if timeout <= 0 {
		timeout = c.cfg.AckTimeout
	}
	select {
	case c.sendSlot <- struct{}{}:
	case <-ctx.Done():
		return notSent(ctxCause(ctx, CauseQueueTimeout), ctx.Err())
	case <-c.done:
		return notSent(CauseNotOpen, ErrClosed)
	}
	defer func() { <-c.sendSlot }()

	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	p := &c.send
	p.exp, p.at = exp, time.Time{}
	c.mu.Lock()
	if c.state != StateOpen {
		c.mu.Unlock()
		return notSent(CauseNotOpen, ErrClosed)
	}
	if !exp.NoReply {
		c.pending = p
	}
	c.mu.Unlock()

	n, err := c.writeMessage(ctx, payload, deadline)
	if err != nil {
		c.takePending(p)
		return SendResult{}, c.writeFailed(ctx, n, err, deadline, sentID)
	}
	sent := time.Now()
	if exp.NoReply {
		return SendResult{Outcome: OutcomeWritten, SentControlID: sentID}, nil
	}

	t := c.sendTimer
	t.Reset(time.Until(deadline))
	defer t.Stop()
	var reply []byte
	cause := CauseAckTimeout
	select {
	case reply = <-p.reply:
	case <-t.C:
		err = ErrAckTimeout
	case <-ctx.Done():
		cause, err = ctxCause(ctx, CauseAckTimeout), ctx.Err()
	case <-c.done:
		cause, err = CauseConnectionLost, ErrClosed
	}
	if err != nil {
		if !c.takePending(p) {
			// The reply was delivered while we gave up: it is ours.
			reply, err = <-p.reply, nil
		} else {
			reason := CloseAckTimeout
			switch cause {
			case CauseAckTimeout:
				c.stats.ackTimeouts.Add(1)
			case CauseCancelled:
				reason = CloseSendCancelled
			}
			c.log.Warn("no acknowledgement; message in doubt, resetting connection", "control_id", sentID, "cause", cause.String())
			c.reset(reason, err)
			return SendResult{}, &SendError{Written: true, Cause: cause, ControlID: sentID, Err: err}
		}
	}
	outcome, ack, se := c.matchReply(reply, &p.exp)
	if se != nil {
		c.reset(CloseAckMismatch, se.Err)
		return SendResult{}, se
	}
	return SendResult{Outcome: outcome, Ack: ack, SentControlID: sentID, RoundTrip: max(p.at.Sub(sent), 0)}, nil
}

// matchReply reads the reply to a message sent with exp and counts its
// code. A reply that cannot be trusted (another message's, unreadable) is
// counted, logged and returned as the in-doubt error; the caller resets the
// connection.
func (c *Conn) matchReply(reply []byte, exp *Expectation) (Outcome, PeerAck, *SendError) {
	outcome, ack, err := c.cfg.Ack.Match(reply, exp)
	if ack.Code != 0 {
		c.stats.acksReceived[ack.Code].Add(1)
	}
	if err == nil {
		return outcome, ack, nil
	}
	c.stats.ackMismatches.Add(1)
	cause := CauseAckUnreadable
	if errors.Is(err, ErrAckMismatch) {
		cause = CauseAckMismatch
	}
	c.log.Warn("reply cannot be trusted; message in doubt, resetting connection",
		"control_id", exp.ControlID, "ack_control_id", ack.ControlID, "cause", cause.String())
	return 0, ack, &SendError{Written: true, Cause: cause, ControlID: exp.ControlID, Ack: &ack, Err: err}
}

// writeMessage writes a message's frame before deadline. The deadline is
// the one in force for this write: a Send's own deadline bounds its write
// too, so a peer that stops reading cannot hold it for WriteTimeout. A call
// with no deadline can still be cancelled in the middle of a blocked write;
// only those pay for the context callback.
func (c *Conn) writeMessage(ctx context.Context, payload []byte, deadline time.Time) (int64, error) {
	var stop func() bool
	var interrupted chan struct{}
	if _, ok := ctx.Deadline(); !ok && ctx.Done() != nil {
		interrupted = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			_ = c.nc.SetWriteDeadline(time.Now())
			close(interrupted)
		})
	}
	n, err := c.writeFrameN(payload, deadline, true)
	if stop != nil && !stop() {
		// The cancel came as the write ended: its "now" deadline must not
		// outlive this write and fail the next acknowledgement.
		<-interrupted
		c.wmu.Lock()
		c.wdl = time.Time{}
		c.wmu.Unlock()
	}
	return n, err
}

// writeFailed resets the connection after the write of a message failed
// (n bytes of it went out) and returns the error that reports it: in doubt
// when any byte was written.
func (c *Conn) writeFailed(ctx context.Context, n int64, err error, deadline time.Time, sentID string) *SendError {
	cause, reason := CauseWriteFailed, CloseSendWriteFailed
	switch {
	case ctx.Err() != nil:
		cause, err = ctxCause(ctx, CauseAckTimeout), ctx.Err()
	case !time.Now().Before(deadline):
		cause, err = CauseAckTimeout, fmt.Errorf("%w: the write did not finish in time: %w", ErrAckTimeout, err)
	}
	if n > 0 {
		c.log.Warn("send failed while writing; message in doubt, resetting connection", "control_id", sentID, "bytes", n, "err", err)
	}
	c.reset(reason, err)
	return &SendError{Written: n > 0, Cause: cause, ControlID: sentID, Err: err}
}

// ctxCause says why ctx ended: cancelled by the caller, or its deadline
// (reported as ifDeadline).
func ctxCause(ctx context.Context, ifDeadline SendCause) SendCause {
	if errors.Is(ctx.Err(), context.Canceled) {
		return CauseCancelled
	}
	return ifDeadline
}

// takePending removes p if it is still waiting. It reports false when the
// read loop already delivered a reply to it.
func (c *Conn) takePending(p *pendingSend) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == p {
		c.pending = nil
		return true
	}
	return false
}

// expect validates a payload before anything is written and asks the
// policy what its acknowledgement must match.
func (c *Conn) expect(payload []byte) (Expectation, error) { return c.cfg.Expect(payload) }

// Expect checks a payload before it is sent on a connection with this
// config (after WithDefaults), so a message can be refused before it is
// queued, and says what its acknowledgement must match. Errors wrap
// ErrInvalidPayload.
func (cfg ConnConfig) Expect(payload []byte) (Expectation, error) {
	if len(payload) == 0 {
		return Expectation{}, fmt.Errorf("%w: empty", ErrInvalidPayload)
	}
	if len(payload) > MaxFrameBytesLimit {
		return Expectation{}, fmt.Errorf("%w: larger than %d bytes", ErrInvalidPayload, MaxFrameBytesLimit)
	}
	if err := cfg.Framing.CheckPayload(payload); err != nil {
		return Expectation{}, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	h, herr := hl7.ParseHeader(payload)
	return cfg.Ack.Expect(payload, &h, herr)
}
