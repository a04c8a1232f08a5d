package transport

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Sink takes the frames a connection receives. Append must return only once
// the message is durable; its error decides a negative acknowledgement.
// Message.Payload is only valid during the call.
type Sink interface {
	Append(ctx context.Context, m *Message) (seq uint64, err error)
}

// Message is a frame received from a peer, as handed to the Sink.
type Message struct {
	// ListenerID is the listener that accepted the connection; empty for
	// outbound connections.
	ListenerID string
	// ConnectionID is the connection it arrived on.
	ConnectionID string
	// RemoteAddr is the peer's address (behind a trusted proxy, the one
	// its PROXY header gave).
	RemoteAddr string
	// PeerIdentity is the identity of the peer's verified TLS certificate
	// (see TLSInfo); empty without one.
	PeerIdentity string
	// Time is when the frame was received.
	Time time.Time
	// Class is FrameMessage, or FrameAck for an acknowledgement that no
	// Send was waiting for.
	Class FrameClass
	// MessageType and ControlID are MSH-9 and MSH-10 when the payload is
	// HL7, verbatim (they may hold any bytes).
	MessageType string
	ControlID   string
	// SendingApplication and SendingFacility are MSH-3 and MSH-4 when the
	// payload is HL7, verbatim.
	SendingApplication, SendingFacility string
	// Payload is the frame without framing.
	Payload []byte
}

// Conn is one TCP connection, inbound or outbound: a session of a listener
// or of an outbound connection resource. Its read loop runs in a goroutine
// owned by the Conn; Close stops it and waits.
type Conn struct {
	id         string
	listenerID string
	dir        Direction
	nc         net.Conn
	cfg        ConnConfig
	sink       Sink
	recorder   AnswerRecorder // sink, when it implements it
	log        *slog.Logger
	logs       *samplers
	obs        *Observer
	localAddr  string
	remoteAddr string
	openTime   time.Time
	onClose    func(*Conn, ConnInfo)
	tls        *TLSInfo      // nil: plain TCP
	limiter    *rate.Limiter // nil: no message rate limit
	// sniff: the first bytes are checked for a TLS handshake or a PROXY
	// header, which a plain listener's peer must not send (sniff.go).
	sniff bool

	// ctx ends Sink appends and deferred replies when the connection closes.
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by the read loop.
	dec         *Decoder
	in          Frame
	msg         Message
	ackBuf      []byte
	ids         controlIDs
	newID       func() string
	lastFrame   time.Time // when the last frame was dealt with (or the connection opened)
	frameStart  time.Time
	curDeadline time.Time
	sawDraining bool

	// sendSlot admits one Send at a time; blocked Sends queue in the order
	// they reach it (channel senders are woken first in, first out).
	sendSlot chan struct{}
	// Owned by the Send holding sendSlot: one in flight, so reused.
	send      pendingSend
	sendTimer *time.Timer

	wmu  sync.Mutex // serializes writes
	wbuf []byte     // guarded by wmu
	wdl  time.Time  // write deadline in force; guarded by wmu

	mu      sync.Mutex
	pending *pendingSend
	// The messages Dispatch wrote that wait for their acknowledgements, by
	// key (window.go). While winHeld, the window holds sendSlot.
	win        map[string]*InFlight
	winHeld    bool
	winChanged chan struct{} // closed and replaced whenever a message leaves win
	state      ConnState
	closeWhy   CloseReason
	closeErr   error
	closeTime  time.Time

	draining      atomic.Bool
	drainWake     chan struct{} // closed when draining begins
	drainOnce     sync.Once
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
	exp   Expectation
	reply chan []byte // buffered: the read loop never blocks on it
	at    time.Time   // when the reply was read; set before it is sent
}

// connParams are what a listener or Dial knows when it creates a Conn.
type connParams struct {
	id, listenerID string
	dir            Direction
	cfg            ConnConfig
	sink           Sink
	log            *slog.Logger
	logs           *samplers
	tls            *TLSInfo
	sniff          bool
	onClose        func(*Conn, ConnInfo)
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
		logs:       p.logs,
		obs:        p.cfg.Observer,
		localAddr:  nc.LocalAddr().String(),
		remoteAddr: nc.RemoteAddr().String(),
		openTime:   time.Now(),
		onClose:    p.onClose,
		tls:        p.tls,
		sniff:      p.sniff && sniffs(p.cfg.Framing),
		drainWake:  make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		ids:        newControlIDs(),
		sendSlot:   make(chan struct{}, 1),
		send:       pendingSend{reply: make(chan []byte, 1)},
		sendTimer:  stoppedTimer(),
		state:      StateOpen,
		done:       make(chan struct{}),
	}
	c.newID = c.ids.next
	if r := c.cfg.MaxMessagesPerSecond; r > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
	}
	c.recorder, _ = p.sink.(AnswerRecorder)
	c.lastFrame = c.openTime
	c.log = p.log.With("connection_id", c.id, "remote_addr", c.remoteAddr)
	if c.listenerID != "" {
		c.log = c.log.With("listener_id", c.listenerID)
	}
	c.dec = NewDecoder(deadlineReader{c}, c.cfg.Framing)
	c.dec.budget = c.cfg.Budget
	c.lastActivity.Store(c.openTime.UnixNano())
	return c
}

// start runs the read loop. The goroutine belongs to c: Close stops it.
func (c *Conn) start() {
	c.opened()
	go c.run()
}

// startHere runs the read loop on the calling goroutine, which becomes
// c's: a listener's connection that had a preamble keeps the goroutine
// that ran it.
func (c *Conn) startHere() {
	c.opened()
	c.run()
}

func (c *Conn) opened() {
	if c.tls != nil {
		c.log.Debug("connection opened", "direction", c.dir.String(), "local_addr", c.localAddr,
			"tls_version", c.tls.Version, "peer_identity", c.tls.PeerIdentity)
	} else {
		c.log.Debug("connection opened", "direction", c.dir.String(), "local_addr", c.localAddr)
	}
	if f := c.obs.ConnOpened; f != nil {
		f(c)
	}
}

// TLS describes the connection's TLS session; nil for plain TCP. Never
// modify it.
func (c *Conn) TLS() *TLSInfo { return c.tls }

// PeerIdentity is the identity of the peer's verified certificate; empty
// without one.
func (c *Conn) PeerIdentity() string {
	if c.tls == nil {
		return ""
	}
	return c.tls.PeerIdentity
}

// ID returns the connection's id.
func (c *Conn) ID() string { return c.id }

// ListenerID returns the id of the listener that accepted the connection;
// empty for outbound connections.
func (c *Conn) ListenerID() string { return c.listenerID }

// Direction says who opened the connection.
func (c *Conn) Direction() Direction { return c.dir }

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
// flight fails (in doubt if its message was written).
func (c *Conn) Close() error {
	c.closeWith(CloseLocal, nil)
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
	// arrives, and Sends still queued must fail unsent rather than start.
	// Taking the send slot does both: it waits for the Send in flight, and
	// it is never given back, so no other Send can start after it.
	select {
	case c.sendSlot <- struct{}{}:
	case <-c.done:
		return
	case <-t.C:
		c.closeWith(CloseDrainTimeout, nil)
		<-c.done
		return
	}
	c.drainDeadline.Store(deadline.UnixNano())
	c.draining.Store(true)
	c.drainOnce.Do(func() { close(c.drainWake) })
	// Wake a read blocked waiting for the next frame.
	_ = c.nc.SetReadDeadline(time.Now())
	select {
	case <-c.done:
	case <-t.C:
		c.closeWith(CloseDrainTimeout, nil)
		<-c.done
	}
}

// closeWith starts closing the connection (idempotent, does not wait). The
// first reason given is the one kept.
func (c *Conn) closeWith(reason CloseReason, err error) {
	c.mu.Lock()
	first := c.markClosed(reason, err)
	c.mu.Unlock()
	if first {
		c.shut()
	}
}

// markClosed records that the connection is closed, for reason, unless it
// already was; then the caller must call shut (without c.mu). c.mu must be
// held.
func (c *Conn) markClosed(reason CloseReason, err error) bool {
	if c.state == StateClosed {
		return false
	}
	c.state = StateClosed
	c.closeWhy, c.closeErr, c.closeTime = reason, err, time.Now()
	return true
}

// shut ends what a closed connection must not go on doing: Sink appends,
// deferred replies and the socket.
func (c *Conn) shut() {
	c.cancel()
	_ = c.nc.Close()
}

// reset closes the connection because its stream can no longer be trusted
// and waits until it is gone, so the caller's error is final: nothing more
// is read from it.
func (c *Conn) reset(reason CloseReason, err error) {
	c.closeWith(reason, err)
	<-c.done
}

func (c *Conn) finish() {
	c.closeWith(CloseReadError, nil) // keeps the reason already set, if any
	c.windowClosed()
	c.dec.Release()
	info := c.Info()
	if c.closeWhy.normal() {
		c.log.Debug("connection closed", "reason", info.CloseReason.String(),
			"frames_in", info.Counters.FramesIn, "frames_out", info.Counters.FramesOut)
	} else if ok, suppressed := c.logs.closed.allow(); ok {
		c.log.Info("connection closed", "reason", info.CloseReason.String(), "err", info.CloseErr,
			"frames_in", info.Counters.FramesIn, "frames_out", info.Counters.FramesOut, "suppressed", suppressed)
	}
	if f := c.obs.ConnClosed; f != nil {
		f(c, info)
	}
	if c.onClose != nil {
		c.onClose(c, info)
	}
	close(c.done)
}
