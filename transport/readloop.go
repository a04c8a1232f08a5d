package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// run is the read loop: read a frame, hand it on, answer it; repeat.
func (c *Conn) run() {
	defer c.finish()
	for {
		if c.draining.Load() && !c.dec.Ready() && !c.dec.InFrame() {
			c.closeWith(CloseDrained, nil)
			return
		}
		payload, err := c.dec.Next()
		c.syncDecoderStats()
		if err != nil {
			if c.readFailed(err) {
				continue
			}
			return
		}
		if !c.handleFrame(payload) {
			return
		}
		// Both read deadlines restart once a frame is dealt with. Idle time
		// runs from the answer, not the frame's arrival: the peer may wait
		// for the answer before sending more, and a Sink slower than
		// IdleTimeout must not leave the next read a deadline that has
		// already passed. The next frame's timeout starts from the first
		// read made for it: while a pipelining peer keeps a backlog every
		// read ends inside the next frame, and without the reset the
		// deadline would stay at the first frame's start and cut a healthy
		// connection off for a frame timeout.
		c.lastFrame, c.frameStart = time.Now(), time.Time{}
		if c.limiter != nil && !c.waitRate() {
			return
		}
	}
}

var errDrained = errors.New("drained")

// waitRate waits until the message rate limit lets the next frame be read:
// meanwhile nothing is read, so TCP's flow control slows the peer down and
// nothing is lost. Idle time starts again after the wait. It reports
// whether the connection is still open; a drain ends the wait.
func (c *Conn) waitRate() bool {
	r := c.limiter.Reserve()
	if d := r.Delay(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.drainWake:
		case <-c.ctx.Done():
			return false
		}
		c.lastFrame = time.Now()
	}
	return true
}

// readFailed handles an error from the decoder. It reports whether the loop
// should go on reading.
func (c *Conn) readFailed(err error) bool {
	var ne net.Error
	var fe *FrameError
	inFrame := c.dec.InFrame()
	switch {
	case errors.Is(err, errDrained):
		c.closeWith(CloseDrained, nil)
	case errors.As(err, &ne) && ne.Timeout():
		switch {
		case c.draining.Load():
			if !inFrame {
				c.closeWith(CloseDrained, nil)
			} else if time.Now().UnixNano() < c.drainDeadline.Load() {
				return true
			} else {
				c.closeWith(CloseDrainTimeout, nil)
			}
		case inFrame:
			c.framingError(CloseFrameTimeout, fmt.Errorf("frame not completed within %v", c.cfg.FrameTimeout))
		case c.cfg.IdleTimeout > 0:
			c.closeWith(CloseIdleTimeout, nil)
		default:
			return true // a stale deadline; nothing expired
		}
	case errors.Is(err, ErrTLSHandshake), errors.Is(err, ErrProxyHeader):
		// The first bytes of a plain connection (sniff.go).
		c.framingError(CloseFramingError, err)
	case errors.Is(err, io.EOF):
		c.closeWith(ClosePeerClosed, nil)
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.framingError(ClosePeerClosedMidFrame, errors.New("peer closed in the middle of a frame; partial frame dropped"))
	case errors.As(err, &fe):
		switch {
		case errors.Is(fe, ErrFrameTooLarge):
			c.refuse(fe.Partial, tooLargeError{limit: c.cfg.Framing.MaxFrameBytes})
			c.framingError(CloseFrameTooLarge, fe)
		case errors.Is(fe, ErrNoMemory):
			c.refuse(fe.Partial, noMemoryError{})
			c.framingError(CloseMemoryLimit, fe)
		case errors.Is(fe, ErrTooMuchJunk):
			c.framingError(CloseJunkLimit, fe)
		default:
			c.framingError(CloseFramingError, fe)
		}
	case errors.Is(err, syscall.ECONNRESET):
		if inFrame {
			c.framingError(ClosePeerReset, fmt.Errorf("reset in the middle of a frame; partial frame dropped: %w", err))
		} else {
			c.closeWith(ClosePeerReset, err)
		}
	default:
		// Also the error of a read that Close interrupted: closeWith keeps
		// the reason Close gave.
		c.closeWith(CloseReadError, err)
	}
	return false
}

// framingError counts a framing violation and closes the connection for it.
func (c *Conn) framingError(reason CloseReason, err error) {
	c.stats.framingErrors.Add(1)
	if f := c.obs.FramingError; f != nil {
		f(c, err)
	}
	c.closeWith(reason, err)
}

// tooLargeError is ErrFrameTooLarge with the limit, worded for the peer.
type tooLargeError struct{ limit int }

func (e tooLargeError) Error() string {
	return fmt.Sprintf("message exceeds the %d-byte frame limit", e.limit)
}

func (e tooLargeError) Is(target error) bool { return target == ErrFrameTooLarge }

// noMemoryError is ErrNoMemory worded for the peer.
type noMemoryError struct{}

func (noMemoryError) Error() string {
	return "the receiver has no memory left for messages right now, resend later"
}

func (noMemoryError) Is(target error) bool { return target == ErrNoMemory }

// refuse answers a frame that will not be stored negatively, when the
// policy can say so from the part of it that was read.
func (c *Conn) refuse(partial []byte, why error) {
	in := &c.in
	*in = Frame{Payload: partial, Time: time.Now(), StoreErr: why, NewControlID: c.newID, ConnectionID: c.id, PeerIdentity: c.PeerIdentity()}
	in.Header, in.HeaderErr = hl7.ParseHeader(partial)
	r := c.cfg.Ack.Reply(c.ctx, c.ackBuf[:0], in)
	if r.Payload != nil && c.writeFrame(r.Payload, time.Now().Add(c.cfg.WriteTimeout)) == nil {
		c.ackSent(r.Code)
	}
}

// handleFrame deals with one received frame. It reports whether the
// connection stays open.
func (c *Conn) handleFrame(payload []byte) bool {
	now := time.Now()
	c.stats.framesIn.Add(1)
	c.stats.bytesIn.Add(int64(len(payload)))
	in := &c.in
	*in = Frame{Payload: payload, Time: now, NewControlID: c.newID, ConnectionID: c.id, PeerIdentity: c.PeerIdentity()}
	in.Header, in.HeaderErr = hl7.ParseHeader(payload)

	exp, waiting, windowed := c.pendingExpectation()
	if windowed {
		if handled, open := c.windowReply(in, payload, now); handled {
			c.observeFrame(in, FrameReply)
			return open
		}
	}
	var class FrameClass
	if waiting {
		class = c.cfg.Ack.Classify(in, &exp)
		if class == FrameReply && c.deliverReply(payload, now) {
			c.observeFrame(in, class)
			return true
		}
	}
	if !waiting || class == FrameReply { // nobody waits (any more)
		class = c.cfg.Ack.Classify(in, nil)
	}
	switch class {
	case FrameIgnored:
		c.stats.unsolicitedAcks.Add(1)
		c.log.Debug("acknowledgement with no send waiting; ignored", "bytes", len(payload))
		c.observeFrame(in, class)
		return true
	case FrameAck:
		c.stats.unsolicitedAcks.Add(1)
	}

	// One Message per connection, reused: it escapes to the Sink.
	m := &c.msg
	*m = Message{
		ListenerID:   c.listenerID,
		ConnectionID: c.id,
		RemoteAddr:   c.remoteAddr,
		PeerIdentity: c.PeerIdentity(),
		Time:         now,
		Class:        class,
		Payload:      payload,
	}
	if in.HeaderErr == nil {
		m.MessageType, m.ControlID = in.Header.MessageType, in.Header.ControlID
		m.SendingApplication, m.SendingFacility = in.Header.SendingApplication, in.Header.SendingFacility
	}
	seq, err := c.sink.Append(c.ctx, m)
	var dup *DuplicateError
	if err != nil && errors.As(err, &dup) {
		c.stats.duplicates.Add(1)
		if f := c.obs.Duplicate; f != nil {
			f(c, in)
		}
		seq, err = dup.Seq, nil
	}
	if err != nil {
		if c.ctx.Err() != nil {
			// Closing: the frame may or may not be stored; say nothing.
			return false
		}
		c.stats.journalErrors.Add(1)
		in.StoreErr = err
	}
	in.Seq = seq
	c.observeFrame(in, class)
	if class == FrameAck {
		return true // an acknowledgement is never answered
	}
	if dup != nil && dup.Reply != nil {
		// The first answer, byte for byte (copied: the write buffer is
		// reused for the next answer).
		// It is recorded already: no AnswerRecorder call.
		return c.answer(in, Reply{Payload: append(c.ackBuf[:0], dup.Reply...), Code: dup.Code}, false)
	}
	return c.answer(in, c.cfg.Ack.Reply(c.ctx, c.ackBuf[:0], in), true)
}

func (c *Conn) observeFrame(in *Frame, class FrameClass) {
	if f := c.obs.FrameReceived; f != nil {
		f(c, in, class)
	}
}

// answer writes the reply the policy decided for a received message and,
// if record, tells the AnswerRecorder. It reports whether the connection
// stays open.
func (c *Conn) answer(in *Frame, r Reply, record bool) bool {
	if r.Invalid {
		c.stats.invalidMessages.Add(1)
	}
	var code AckCode
	if r.Payload != nil {
		c.ackBuf = r.Payload[:0]
		if err := c.writeFrame(r.Payload, time.Now().Add(c.cfg.WriteTimeout)); err != nil {
			if record {
				c.recordAnswer(in, r, false)
			}
			c.closeWith(CloseAckWriteFailed, err)
			c.frameAnswered(in, 0, err)
			return false
		}
		c.ackSent(r.Code)
		code = r.Code
	}
	if record {
		c.recordAnswer(in, r, r.Payload != nil)
	}
	c.frameAnswered(in, code, nil)
	switch {
	case r.Negative != "" || in.StoreErr != nil:
		// Sampled: a failing journal refuses every frame, and garbage can
		// arrive as fast as a peer can send it. Both are counted.
		if ok, suppressed := c.logs.negative.allow(); ok {
			c.log.Warn("frame answered negatively", "control_id", c.msg.ControlID, "ack_code", r.Code.String(),
				"reason", r.Negative, "err", in.StoreErr, "bytes", len(in.Payload), "suppressed", suppressed)
		}
	case c.log.Enabled(context.Background(), slog.LevelDebug): // the arguments would allocate
		c.log.Debug("frame stored", "seq", in.Seq, "control_id", c.msg.ControlID, "bytes", len(in.Payload))
	}
	if r.Close {
		c.closeWith(CloseNotStored, in.StoreErr)
		return false
	}
	return true
}

// recordAnswer tells the Sink's AnswerRecorder what a stored message was
// answered.
func (c *Conn) recordAnswer(in *Frame, r Reply, written bool) {
	if c.recorder != nil && in.StoreErr == nil && in.Seq != 0 {
		c.recorder.Answered(&c.msg, in.Seq, r, written)
	}
}

func (c *Conn) frameAnswered(in *Frame, code AckCode, err error) {
	if f := c.obs.FrameAnswered; f != nil {
		f(c, in, code, err)
	}
}

func (c *Conn) ackSent(code AckCode) {
	c.stats.acksSent[code].Add(1)
	if f := c.obs.AckSent; f != nil {
		f(c, code)
	}
}

// pendingExpectation returns a copy of what the Send in flight expects, if
// one waits for its acknowledgement. A copy, because the Send may give up
// and the next one reuse its slot while the frame is being classified.
// windowed reports that dispatched messages wait instead (window.go).
func (c *Conn) pendingExpectation() (exp Expectation, waiting, windowed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		return Expectation{}, false, len(c.win) > 0
	}
	return c.pending.exp, true, false
}

// deliverReply hands an acknowledgement to the Send waiting for it.
func (c *Conn) deliverReply(payload []byte, at time.Time) bool {
	c.mu.Lock()
	p := c.pending
	c.pending = nil
	c.mu.Unlock()
	if p == nil {
		return false
	}
	p.at = at
	p.reply <- bytes.Clone(payload)
	return true
}

func (c *Conn) syncDecoderStats() {
	s := c.dec.Stats()
	c.stats.junk.Store(s.JunkBytes)
	c.stats.discarded.Store(s.DiscardedPartials)
	c.stats.missingTrailers.Store(s.MissingTrailers)
}
