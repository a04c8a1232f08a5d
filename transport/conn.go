package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// Defaults for ConnConfig's zero values.
const (
	DefaultAckTimeout   = 10 * time.Second
	DefaultFrameTimeout = 30 * time.Second
	DefaultWriteTimeout = 30 * time.Second
)

// Sink takes the frames a connection receives. Append must return only once
// the message is durable; its error decides a negative acknowledgement.
// Message.Payload is only valid during the call.
type Sink interface {
	Append(ctx context.Context, m *Message) (seq uint64, err error)
}

// Message is a frame received from a peer.
type Message struct {
	ListenerID   string
	ConnectionID string
	RemoteAddr   string
	Time         time.Time
	// MessageType and ControlID are MSH-9 and MSH-10 when the payload is HL7.
	MessageType string
	ControlID   string
	Payload     []byte
}

// ConnConfig is the protocol behaviour of a connection.
type ConnConfig struct {
	Framing Framing
	Ack     AckPolicy
	// AckTimeout is how long Send waits for an acknowledgement when the
	// caller gives no timeout. Zero: DefaultAckTimeout.
	AckTimeout time.Duration
	// IdleTimeout closes a connection that sends nothing for this long.
	// Zero: never.
	IdleTimeout time.Duration
	// FrameTimeout bounds how long a started frame may take to complete.
	// Zero: DefaultFrameTimeout.
	FrameTimeout time.Duration
	// WriteTimeout bounds a single write (a peer that stops reading cannot
	// block us forever). Zero: DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Keepalive is the TCP keepalive period. Zero: off.
	Keepalive time.Duration
}

// WithDefaults returns c with zero values replaced by defaults.
func (c ConnConfig) WithDefaults() ConnConfig {
	if c.Framing.Kind == 0 {
		c.Framing.Kind = FramingMLLP
	}
	c.Framing = c.Framing.WithDefaults()
	if c.Ack.Kind == 0 {
		c.Ack.Kind = AckHL7
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = DefaultFrameTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	return c
}

// Validate reports whether c (after WithDefaults) is usable.
func (c ConnConfig) Validate() error {
	if err := c.Framing.Validate(); err != nil {
		return err
	}
	if err := c.Ack.Validate(c.Framing); err != nil {
		return err
	}
	if c.IdleTimeout < 0 || c.Keepalive < 0 {
		return errors.New("timeouts must not be negative")
	}
	return nil
}

// Direction says who opened a connection.
type Direction int

// Directions.
const (
	Inbound Direction = iota + 1
	Outbound
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// ConnState is a connection's lifecycle state.
type ConnState int

// Connection states.
const (
	StateOpen ConnState = iota + 1
	StateDraining
	StateClosed
)

// Conn is one TCP connection, inbound or outbound. Its read loop runs in a
// goroutine owned by the Conn; Close stops it and waits.
type Conn struct {
	id         string
	listenerID string
	dir        Direction
	nc         net.Conn
	cfg        ConnConfig
	sink       Sink
	log        *slog.Logger
	localAddr  string
	remoteAddr string
	openTime   time.Time
	onClose    func(*Conn)

	// ctx ends Sink appends when the connection closes.
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by the read loop.
	dec         *Decoder
	msg         Message
	ackBuf      []byte
	ids         controlIDs
	frameStart  time.Time
	curDeadline time.Time
	sawDraining bool

	// sendSlot admits one Send at a time; blocked Sends queue in arrival
	// order (channel senders are woken first in, first out).
	sendSlot chan struct{}
	// Owned by the Send holding sendSlot: one in flight, so reused.
	send      pendingSend
	sendTimer *time.Timer

	wmu  sync.Mutex // serializes writes
	wbuf []byte     // guarded by wmu
	wdl  time.Time  // write deadline in force; guarded by wmu

	mu          sync.Mutex
	pending     *pendingSend
	state       ConnState
	closeReason string

	draining      atomic.Bool
	drainDeadline atomic.Int64 // unix nanos
	lastActivity  atomic.Int64 // unix nanos
	done          chan struct{}
	stats         connStats
}

// stoppedTimer returns a timer that has not started.
func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

type pendingSend struct {
	controlID string
	reply     chan []byte // buffered: the read loop never blocks on it
	at        time.Time   // when the reply was read; set before it is sent
}

type connStats struct {
	framesIn, bytesIn, framesOut, bytesOut atomic.Uint64
	acksSent, acksReceived                 [numAckCodes]atomic.Uint64
	junk, discarded, missingTrailers       atomic.Int64
	framingErrors, journalErrors           atomic.Uint64
	invalidMessages, sendTimeouts          atomic.Uint64
	ackMismatches, unsolicitedAcks         atomic.Uint64
}

// connParams are what a listener or Dial knows when it creates a Conn.
type connParams struct {
	id, listenerID string
	dir            Direction
	cfg            ConnConfig
	sink           Sink
	log            *slog.Logger
	onClose        func(*Conn)
}

func newConn(nc net.Conn, p connParams) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		id:         p.id,
		listenerID: p.listenerID,
		dir:        p.dir,
		nc:         nc,
		cfg:        p.cfg,
		sink:       p.sink,
		localAddr:  nc.LocalAddr().String(),
		remoteAddr: nc.RemoteAddr().String(),
		openTime:   time.Now(),
		onClose:    p.onClose,
		ctx:        ctx,
		cancel:     cancel,
		ids:        newControlIDs(),
		sendSlot:   make(chan struct{}, 1),
		send:       pendingSend{reply: make(chan []byte, 1)},
		sendTimer:  stoppedTimer(),
		state:      StateOpen,
		done:       make(chan struct{}),
	}
	c.log = p.log.With("connection_id", c.id, "remote_addr", c.remoteAddr)
	if c.listenerID != "" {
		c.log = c.log.With("listener_id", c.listenerID)
	}
	c.dec = NewDecoder(deadlineReader{c}, c.cfg.Framing)
	c.lastActivity.Store(c.openTime.UnixNano())
	return c
}

// start runs the read loop. The goroutine belongs to c: Close stops it.
func (c *Conn) start() {
	c.log.Info("connection opened", "direction", c.dir.String(), "local_addr", c.localAddr)
	go c.run()
}

// ID returns the connection's id.
func (c *Conn) ID() string { return c.id }

// State returns the connection's lifecycle state. It is StateClosed before
// the OnClose hook runs.
func (c *Conn) State() ConnState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Done is closed once the connection is closed and its goroutine ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Close closes the connection at once and waits for its goroutine. A Send in
// flight fails with ErrClosed (in doubt if its message was written).
func (c *Conn) Close() error {
	c.closeWith("closed locally")
	<-c.done
	return nil
}

// Drain lets the frame being received (if any) complete and be acknowledged,
// then closes the connection; at deadline it closes it regardless. It
// returns once the connection is closed.
func (c *Conn) Drain(deadline time.Time) {
	c.mu.Lock()
	if c.state == StateOpen {
		c.state = StateDraining
	}
	c.mu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	// A Send in flight keeps the read loop going until its acknowledgement
	// arrives; queued Sends see the draining state and fail unsent. Taking
	// the slot (never given back) waits for that.
	select {
	case c.sendSlot <- struct{}{}:
	case <-c.done:
		return
	case <-t.C:
		c.closeWith("drain timeout")
		<-c.done
		return
	}
	c.drainDeadline.Store(deadline.UnixNano())
	c.draining.Store(true)
	// Wake a read blocked waiting for the next frame.
	_ = c.nc.SetReadDeadline(time.Now())
	select {
	case <-c.done:
	case <-t.C:
		c.closeWith("drain timeout")
		<-c.done
	}
}

// closeWith starts closing the connection (idempotent, does not wait).
func (c *Conn) closeWith(reason string) {
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return
	}
	c.state = StateClosed
	c.closeReason = reason
	c.mu.Unlock()
	c.cancel()
	_ = c.nc.Close()
}

// reset closes the connection because its stream can no longer be trusted
// and waits until it is gone, so the caller's error is final: nothing more
// is read from it.
func (c *Conn) reset(reason string) {
	c.closeWith(reason)
	<-c.done
}

// run is the read loop: read a frame, hand it on, answer it; repeat.
func (c *Conn) run() {
	defer c.finish()
	for {
		if c.draining.Load() && !c.dec.Ready() && !c.dec.InFrame() {
			c.closeWith("drained")
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
	}
}

func (c *Conn) finish() {
	c.closeWith("read loop ended")
	c.mu.Lock()
	reason := c.closeReason
	c.mu.Unlock()
	c.log.Info("connection closed", "reason", reason,
		"frames_in", c.stats.framesIn.Load(), "frames_out", c.stats.framesOut.Load())
	if c.onClose != nil {
		c.onClose(c)
	}
	close(c.done)
}

var errDrained = errors.New("drained")

// readFailed handles an error from the decoder. It reports whether the loop
// should go on reading.
func (c *Conn) readFailed(err error) bool {
	var ne net.Error
	var fe *FrameError
	switch {
	case errors.Is(err, errDrained):
		c.closeWith("drained")
	case errors.As(err, &ne) && ne.Timeout():
		switch {
		case c.draining.Load():
			if c.dec.InFrame() && time.Now().UnixNano() < c.drainDeadline.Load() {
				return true
			}
			c.closeWith("drained")
		case c.dec.InFrame():
			c.stats.framingErrors.Add(1)
			c.log.Warn("frame not completed in time, closing", "frame_timeout", c.cfg.FrameTimeout)
			c.closeWith("frame timeout")
		case c.cfg.IdleTimeout > 0:
			c.closeWith("idle timeout")
		default:
			return true // a stale deadline; nothing expired
		}
	case errors.Is(err, io.EOF):
		c.closeWith("peer closed")
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.stats.framingErrors.Add(1)
		c.log.Warn("peer closed in the middle of a frame; partial frame dropped")
		c.closeWith("peer closed mid-frame")
	case errors.As(err, &fe):
		c.stats.framingErrors.Add(1)
		if errors.Is(fe, ErrFrameTooLarge) {
			c.log.Warn("frame too large, closing", "max_frame_bytes", c.cfg.Framing.MaxFrameBytes)
			c.refuse(fe.Partial, tooLargeError{limit: c.cfg.Framing.MaxFrameBytes})
		} else {
			c.log.Warn("framing violation, closing", "err", fe.Err)
		}
		c.closeWith("framing violation")
	default:
		c.mu.Lock()
		closing := c.state == StateClosed
		c.mu.Unlock()
		if !closing {
			c.log.Info("read failed", "err", err)
		}
		c.closeWith("read failed")
	}
	return false
}

// tooLargeError is ErrFrameTooLarge with the limit, worded for the peer.
type tooLargeError struct{ limit int }

func (e tooLargeError) Error() string {
	return fmt.Sprintf("message exceeds the %d-byte frame limit", e.limit)
}

func (e tooLargeError) Is(target error) bool { return target == ErrFrameTooLarge }

// refuse answers a frame that will not be stored (too large) negatively,
// when the policy can say so.
func (c *Conn) refuse(partial []byte, why error) {
	in := inbound{payload: partial, storeErr: why}
	if c.cfg.Ack.Kind == AckHL7 {
		in.header, in.headerErr = hl7.ParseHeader(partial)
	}
	a := c.cfg.Ack.answer(c.ackBuf[:0], &in, time.Now(), c.ids.next)
	if a.payload != nil && c.writeFrame(a.payload, time.Now().Add(c.cfg.WriteTimeout)) == nil {
		c.stats.acksSent[a.code].Add(1)
	}
}

// handleFrame deals with one received frame. It reports whether the
// connection stays open.
func (c *Conn) handleFrame(payload []byte) bool {
	now := time.Now()
	c.stats.framesIn.Add(1)
	c.stats.bytesIn.Add(uint64(len(payload)))
	isReply := c.cfg.Ack.isReply(payload)
	if isReply {
		if c.deliverReply(payload, now) {
			return true
		}
		c.stats.unsolicitedAcks.Add(1)
		if c.cfg.Ack.Kind != AckHL7 {
			c.log.Debug("acknowledgement with no send waiting; ignored", "bytes", len(payload))
			return true
		}
		// An HL7 acknowledgement nobody waits for is still a message (an
		// application ACK, say): journal it, but never answer it.
	}
	in := inbound{payload: payload}
	if c.cfg.Ack.Kind == AckHL7 || hasHL7Prefix(payload) {
		in.header, in.headerErr = hl7.ParseHeader(payload)
	}
	// One Message per connection, reused: it escapes to the Sink.
	m := &c.msg
	*m = Message{
		ListenerID:   c.listenerID,
		ConnectionID: c.id,
		RemoteAddr:   c.remoteAddr,
		Time:         now,
		Payload:      payload,
	}
	if in.headerErr == nil {
		m.MessageType, m.ControlID = in.header.MessageType, in.header.ControlID
	}
	seq, err := c.sink.Append(c.ctx, m)
	if err != nil {
		if c.ctx.Err() != nil {
			// Closing: the frame may or may not be stored; say nothing.
			return false
		}
		c.stats.journalErrors.Add(1)
		c.log.Error("frame not stored; answering negatively", "control_id", m.ControlID, "bytes", len(payload), "err", err)
		in.storeErr = err
	}
	if c.cfg.Ack.Kind == AckHL7 && (in.headerErr != nil || (in.header.Segment == "MSH" && in.header.ControlID == "")) {
		c.stats.invalidMessages.Add(1)
	}
	if isReply {
		return true
	}
	a := c.cfg.Ack.answer(c.ackBuf[:0], &in, time.Now(), c.ids.next)
	if a.payload != nil {
		c.ackBuf = a.payload[:0]
		if err := c.writeFrame(a.payload, time.Now().Add(c.cfg.WriteTimeout)); err != nil {
			c.log.Warn("writing acknowledgement failed", "control_id", m.ControlID, "err", err)
			c.closeWith("write failed")
			return false
		}
		c.stats.acksSent[a.code].Add(1)
	}
	if a.text != "" {
		c.log.Warn("negative acknowledgement", "control_id", m.ControlID, "ack_code", a.code.String(), "reason", a.text)
	} else if c.log.Enabled(c.ctx, slog.LevelDebug) { // the arguments would allocate
		c.log.Debug("frame stored", "seq", seq, "control_id", m.ControlID, "bytes", len(payload))
	}
	if a.close {
		c.closeWith("frame not stored")
		return false
	}
	return true
}

// hasHL7Prefix reports whether a payload starts like an HL7 message, so its
// type and control id are worth reading whatever the policy.
func hasHL7Prefix(p []byte) bool {
	return bytes.HasPrefix(p, []byte("MSH")) || bytes.HasPrefix(p, []byte("FHS")) || bytes.HasPrefix(p, []byte("BHS"))
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

// writeFrame writes one framed payload before deadline.
func (c *Conn) writeFrame(payload []byte, deadline time.Time) error {
	_, err := c.writeFrameN(payload, deadline)
	return err
}

// smallFrame is the size up to which a frame is copied into one buffer and
// written with one call; larger payloads go out with writev, uncopied.
const smallFrame = 16 << 10

func (c *Conn) writeFrameN(payload []byte, deadline time.Time) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Moving the deadline costs a timer update per write; a deadline in
	// force that still leaves half of WriteTimeout is good enough, unless
	// the caller needs an earlier one.
	if deadline.Before(c.wdl) || time.Until(c.wdl) < c.cfg.WriteTimeout/2 {
		if err := c.nc.SetWriteDeadline(deadline); err != nil {
			return 0, err
		}
		c.wdl = deadline
	}
	var n int64
	var err error
	if len(payload) <= smallFrame {
		c.wbuf = c.cfg.Framing.AppendFrame(c.wbuf[:0], payload)
		var k int
		k, err = c.nc.Write(c.wbuf)
		n = int64(k)
	} else {
		bufs := c.cfg.Framing.Envelope(payload)
		n, err = bufs.WriteTo(c.nc)
	}
	if err != nil {
		return n, err
	}
	c.stats.framesOut.Add(1)
	c.stats.bytesOut.Add(uint64(len(payload)))
	c.lastActivity.Store(time.Now().UnixNano())
	return n, nil
}

func (c *Conn) syncDecoderStats() {
	s := c.dec.Stats()
	c.stats.junk.Store(s.JunkBytes)
	c.stats.discarded.Store(s.DiscardedPartials)
	c.stats.missingTrailers.Store(s.MissingTrailers)
}

// deadlineReader applies the idle, frame-completion and drain deadlines to
// every read the decoder makes.
type deadlineReader struct{ c *Conn }

func (r deadlineReader) Read(p []byte) (int, error) { return r.c.read(p) }

func (c *Conn) read(p []byte) (int, error) {
	for {
		draining := c.draining.Load()
		inFrame := c.dec.InFrame()
		if draining && !inFrame {
			return 0, errDrained
		}
		var dl time.Time
		if inFrame || draining || c.cfg.IdleTimeout > 0 {
			dl = c.readDeadline(inFrame, draining)
		} else {
			c.frameStart = time.Time{} // no deadline to compute: spare the clock read
		}
		if !dl.Equal(c.curDeadline) || draining != c.sawDraining {
			if err := c.nc.SetReadDeadline(dl); err != nil {
				return 0, err
			}
			c.curDeadline, c.sawDraining = dl, draining
		}
		if !draining && c.draining.Load() {
			// Drain began while we set our deadline and may have been
			// overwritten: recompute so its wake-up is not lost.
			continue
		}
		n, err := c.nc.Read(p)
		if n > 0 {
			c.lastActivity.Store(time.Now().UnixNano())
		}
		return n, err
	}
}

func (c *Conn) readDeadline(inFrame, draining bool) time.Time {
	now := time.Now()
	var dl time.Time
	if inFrame {
		if c.frameStart.IsZero() {
			c.frameStart = now
		}
		dl = c.frameStart.Add(c.cfg.FrameTimeout)
	} else {
		c.frameStart = time.Time{}
		if idle := c.cfg.IdleTimeout; idle > 0 {
			dl = now.Add(idle)
			// Moving a deadline costs a timer update per read; an idle
			// timeout does not need better than a quarter (at most a
			// second) of precision, so keep a recent enough one.
			slack := min(idle/4, time.Second)
			if cur := c.curDeadline; !c.sawDraining && cur.After(now) && dl.Sub(cur) < slack && dl.After(cur) {
				dl = cur
			}
		}
	}
	if draining {
		if dd := time.Unix(0, c.drainDeadline.Load()); dl.IsZero() || dd.Before(dl) {
			dl = dd
		}
	}
	return dl
}

// Send writes payload as one frame and waits for the peer's acknowledgement
// for at most timeout (zero: the connection's AckTimeout) and ctx. Sends on
// one connection run one at a time in arrival order. A negative
// acknowledgement is a result, not an error. Errors are *SendError (its
// Written field tells whether the message is in doubt) or wrap
// ErrInvalidPayload (nothing written).
func (c *Conn) Send(ctx context.Context, payload []byte, timeout time.Duration) (SendResult, error) {
	sentID, err := c.checkSend(payload)
	if err != nil {
		return SendResult{}, err
	}
	if timeout <= 0 {
		timeout = c.cfg.AckTimeout
	}
	select {
	case c.sendSlot <- struct{}{}:
	case <-ctx.Done():
		return SendResult{}, &SendError{ControlID: sentID, Err: ctx.Err()}
	case <-c.done:
		return SendResult{}, &SendError{ControlID: sentID, Err: ErrClosed}
	}
	defer func() { <-c.sendSlot }()

	expectReply := c.cfg.Ack.Kind != AckNone
	p := &c.send
	p.controlID, p.at = sentID, time.Time{}
	c.mu.Lock()
	if c.state != StateOpen {
		c.mu.Unlock()
		return SendResult{}, &SendError{ControlID: sentID, Err: ErrClosed}
	}
	if expectReply {
		c.pending = p
	}
	c.mu.Unlock()

	deadline := time.Now().Add(c.cfg.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// The write is bounded by the call's deadline (or WriteTimeout); a
	// call cancelled without a deadline still waits for a blocked write up
	// to WriteTimeout, which spares every Send a context callback.
	n, err := c.writeFrameN(payload, deadline)
	if err != nil {
		c.takePending(p)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		c.log.Warn("send failed while writing", "control_id", sentID, "err", err)
		c.reset("send write failed")
		return SendResult{}, &SendError{Written: n > 0, ControlID: sentID, Err: err}
	}
	sent := time.Now()
	if !expectReply {
		return SendResult{Outcome: OutcomeNoneExpected, SentControlID: sentID}, nil
	}

	t := c.sendTimer
	t.Reset(timeout)
	defer t.Stop()
	var reply []byte
	select {
	case reply = <-p.reply:
	case <-t.C:
		err = ErrAckTimeout
	case <-ctx.Done():
		err = ctx.Err()
	case <-c.done:
		err = ErrClosed
	}
	if err != nil {
		if !c.takePending(p) {
			// The reply was delivered while we gave up: it is ours.
			reply, err = <-p.reply, nil
		} else {
			if errors.Is(err, ErrAckTimeout) || errors.Is(err, context.DeadlineExceeded) {
				c.stats.sendTimeouts.Add(1)
			}
			c.log.Warn("no acknowledgement; message in doubt, resetting connection", "control_id", sentID, "err", err)
			c.reset("acknowledgement not received (message in doubt)")
			return SendResult{}, &SendError{Written: true, ControlID: sentID, Err: err}
		}
	}
	res, code, known := c.cfg.Ack.interpret(reply, sentID)
	res.RoundTrip = max(p.at.Sub(sent), 0)
	if known {
		c.stats.acksReceived[code].Add(1)
	}
	if res.Reset {
		c.stats.ackMismatches.Add(1)
		c.log.Warn("acknowledgement does not match the sent message; resetting connection",
			"control_id", sentID, "ack_control_id", res.AckControlID, "outcome", res.Outcome.String())
		c.reset("acknowledgement mismatch")
	}
	return res, nil
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

// checkSend validates a payload before anything is written and returns its
// HL7 control id.
func (c *Conn) checkSend(payload []byte) (string, error) {
	if len(payload) == 0 {
		return "", fmt.Errorf("%w: empty", ErrInvalidPayload)
	}
	if len(payload) > MaxFrameBytesLimit {
		return "", fmt.Errorf("%w: larger than %d bytes", ErrInvalidPayload, MaxFrameBytesLimit)
	}
	if err := c.cfg.Framing.checkPayload(payload); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	if c.cfg.Ack.Kind != AckHL7 {
		if hasHL7Prefix(payload) {
			h, err := hl7.ParseHeader(payload)
			if err == nil {
				return h.ControlID, nil
			}
		}
		return "", nil
	}
	h, err := hl7.ParseHeader(payload)
	if err != nil {
		return "", fmt.Errorf("%w: the HL7 policy needs an HL7 message to match the acknowledgement to: %w", ErrInvalidPayload, err)
	}
	if h.ControlID == "" {
		return "", fmt.Errorf("%w: MSH-10 (message control id) is empty; the acknowledgement could not be matched to it", ErrInvalidPayload)
	}
	return h.ControlID, nil
}

// checkPayload reports whether payload can be framed without the peer
// reading it differently: the markers that end (or, for MLLP and start-end,
// start) a frame must not occur in it, nor be formed by its tail and the
// trailing marker.
func (f Framing) checkPayload(payload []byte) error {
	switch f.Kind {
	case FramingMLLP:
		if i := bytes.IndexByte(payload, 0x1C); i >= 0 {
			return fmt.Errorf("byte 0x1C at offset %d would end the MLLP frame early", i)
		}
		if i := bytes.IndexByte(payload, 0x0B); i >= 0 {
			return fmt.Errorf("byte 0x0B at offset %d would start a new MLLP frame", i)
		}
	case FramingDelimiter:
		if i := markerAt(payload, f.Delimiter); i >= 0 {
			return fmt.Errorf("the delimiter would be read at offset %d", i)
		}
	case FramingStartEnd:
		if i := bytes.Index(payload, f.Start); i >= 0 {
			return fmt.Errorf("the start sequence occurs at offset %d", i)
		}
		if i := markerAt(payload, f.End); i >= 0 {
			return fmt.Errorf("the end sequence would be read at offset %d", i)
		}
	}
	return nil
}

// markerAt returns where a decoder would first find marker in payload
// followed by marker, if that is before the end of payload, else -1.
func markerAt(payload, marker []byte) int {
	if i := bytes.Index(payload, marker); i >= 0 {
		return i
	}
	// Only the last len(marker)-1 bytes can combine with the marker.
	tail := payload[max(0, len(payload)-len(marker)+1):]
	joined := append(bytes.Clone(tail), marker...)
	if i := bytes.Index(joined, marker); i < len(tail) {
		return len(payload) - len(tail) + i
	}
	return -1
}

// ConnInfo is a snapshot of a connection.
type ConnInfo struct {
	ID           string
	ListenerID   string
	Direction    Direction
	LocalAddr    string
	RemoteAddr   string
	State        ConnState
	OpenTime     time.Time
	LastActivity time.Time
	Counters     Counters
}

// Counters count what happened on a connection.
type Counters struct {
	FramesIn, BytesIn, FramesOut, BytesOut uint64
	// AcksSent and AcksReceived are keyed by code: AA AE AR CA CE CR, ACK
	// and NAK (single byte), FIXED_ACK and FIXED_NAK.
	AcksSent, AcksReceived                        map[string]uint64
	JunkBytes, DiscardedPartials, MissingTrailers uint64
	FramingErrors, JournalErrors, InvalidMessages uint64
	SendTimeouts, AckMismatches, UnsolicitedAcks  uint64
}

// Info returns a snapshot of the connection.
func (c *Conn) Info() ConnInfo {
	c.mu.Lock()
	state := c.state
	c.mu.Unlock()
	s := &c.stats
	info := ConnInfo{
		ID:           c.id,
		ListenerID:   c.listenerID,
		Direction:    c.dir,
		LocalAddr:    c.localAddr,
		RemoteAddr:   c.remoteAddr,
		State:        state,
		OpenTime:     c.openTime,
		LastActivity: time.Unix(0, c.lastActivity.Load()),
		Counters: Counters{
			FramesIn: s.framesIn.Load(), BytesIn: s.bytesIn.Load(),
			FramesOut: s.framesOut.Load(), BytesOut: s.bytesOut.Load(),
			AcksSent: map[string]uint64{}, AcksReceived: map[string]uint64{},
			JunkBytes: uint64(s.junk.Load()), DiscardedPartials: uint64(s.discarded.Load()),
			MissingTrailers: uint64(s.missingTrailers.Load()),
			FramingErrors:   s.framingErrors.Load(), JournalErrors: s.journalErrors.Load(),
			InvalidMessages: s.invalidMessages.Load(), SendTimeouts: s.sendTimeouts.Load(),
			AckMismatches: s.ackMismatches.Load(), UnsolicitedAcks: s.unsolicitedAcks.Load(),
		},
	}
	for i := range numAckCodes {
		if n := s.acksSent[i].Load(); n > 0 {
			info.Counters.AcksSent[i.String()] = n
		}
		if n := s.acksReceived[i].Load(); n > 0 {
			info.Counters.AcksReceived[i.String()] = n
		}
	}
	return info
}

// controlIDs makes the MSH-10 of the acknowledgements a connection sends:
// a random prefix per connection and a counter, at most 20 characters (the
// HL7 v2.5 length of MSH-10).
type controlIDs struct {
	prefix string
	n      uint64
	buf    []byte
}

func newControlIDs() controlIDs {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return controlIDs{prefix: "SB" + base32.StdEncoding.EncodeToString(b[:])}
}

func (g *controlIDs) next() string {
	g.n++
	g.buf = strconv.AppendUint(append(g.buf[:0], g.prefix...), g.n, 36)
	return string(g.buf)
}

// NewID returns a random identifier with the given prefix, for connections
// and listeners whose caller chose none.
func NewID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}
