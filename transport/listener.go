package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultMaxConnections is the connection limit of a listener whose config
// gives none.
const DefaultMaxConnections = 1024

// ListenerConfig configures a listener.
type ListenerConfig struct {
	ID      string
	Address string
	// Conn is the protocol behaviour of accepted connections.
	Conn ConnConfig
	// MaxConnections caps open connections; excess ones are closed at once
	// and counted. Zero: DefaultMaxConnections.
	MaxConnections int
	// Sink takes every frame received.
	Sink   Sink
	Logger *slog.Logger
	// OnOpen and OnClose are called as connections open and close, for the
	// caller's registry. OnClose runs on the connection's goroutine before
	// its Close returns, so it must not wait for that connection.
	OnOpen, OnClose func(*Conn)
}

// ListenerState is a listener's lifecycle state.
type ListenerState int

// Listener states.
const (
	Listening ListenerState = iota + 1
	Draining
	Stopped
)

// Listener accepts TCP connections and runs them. Its accept loop and
// connections belong to it; Stop ends them and waits.
type Listener struct {
	cfg ListenerConfig
	nl  net.Listener
	log *slog.Logger

	accepted, rejected atomic.Uint64
	quit               chan struct{} // closed when Stop begins
	acceptDone         chan struct{}

	mu      sync.Mutex
	state   ListenerState
	conns   map[*Conn]struct{}
	stopped chan struct{}
}

// Listen binds cfg.Address and starts accepting. The returned error wraps
// ErrAddrInUse when the address is taken.
func Listen(ctx context.Context, cfg ListenerConfig) (*Listener, error) {
	cfg.Conn = cfg.Conn.WithDefaults()
	if err := cfg.Conn.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.Sink == nil {
		return nil, errors.New("listener needs a sink")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	lc := net.ListenConfig{KeepAliveConfig: keepalive(cfg.Conn.Keepalive)}
	if cfg.Conn.Keepalive <= 0 {
		lc.KeepAlive = -1
	}
	nl, err := lc.Listen(ctx, "tcp", cfg.Address)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Address, ErrAddrInUse)
		}
		return nil, fmt.Errorf("listen on %s: %w", cfg.Address, err)
	}
	l := &Listener{
		cfg:        cfg,
		nl:         nl,
		log:        cfg.Logger.With("listener_id", cfg.ID),
		quit:       make(chan struct{}),
		acceptDone: make(chan struct{}),
		state:      Listening,
		conns:      make(map[*Conn]struct{}),
		stopped:    make(chan struct{}),
	}
	l.log.Info("listener started", "local_addr", nl.Addr().String(),
		"framing", cfg.Conn.Framing.String(), "ack_policy", cfg.Conn.Ack.String())
	go l.acceptLoop()
	return l, nil
}

func keepalive(period time.Duration) net.KeepAliveConfig {
	if period <= 0 {
		return net.KeepAliveConfig{Enable: false}
	}
	return net.KeepAliveConfig{Enable: true, Idle: period, Interval: period, Count: 3}
}

// Addr returns the bound address.
func (l *Listener) Addr() net.Addr { return l.nl.Addr() }

// ID returns the listener's id.
func (l *Listener) ID() string { return l.cfg.ID }

func (l *Listener) acceptLoop() {
	defer close(l.acceptDone)
	var delay time.Duration
	for {
		nc, err := l.nl.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as a busy
			// server should, rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-l.quit:
				return
			}
		}
		delay = 0
		l.admit(nc)
	}
}

// admit starts a connection, or closes it at once when the listener is full
// or stopping.
func (l *Listener) admit(nc net.Conn) {
	l.mu.Lock()
	if l.state != Listening || len(l.conns) >= l.cfg.MaxConnections {
		full := l.state == Listening
		l.mu.Unlock()
		if full {
			l.rejected.Add(1)
			l.log.Warn("connection limit reached; closing new connection",
				"remote_addr", nc.RemoteAddr().String(), "max_connections", l.cfg.MaxConnections)
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // reset, so the peer learns at once
		}
		_ = nc.Close()
		return
	}
	c := newConn(nc, connParams{
		id:         NewID("c-"),
		listenerID: l.cfg.ID,
		dir:        Inbound,
		cfg:        l.cfg.Conn,
		sink:       l.cfg.Sink,
		log:        l.cfg.Logger,
		onClose:    l.forget,
	})
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	l.accepted.Add(1)
	if l.cfg.OnOpen != nil {
		l.cfg.OnOpen(c)
	}
	c.start()
}

func (l *Listener) forget(c *Conn) {
	if l.cfg.OnClose != nil {
		l.cfg.OnClose(c)
	}
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// Stop stops accepting, drains every connection until deadline (frames being
// received are completed and acknowledged), closes them and waits. It is
// safe to call more than once; later calls wait for the first.
func (l *Listener) Stop(deadline time.Time) {
	l.mu.Lock()
	if l.state != Listening {
		l.mu.Unlock()
		<-l.stopped
		return
	}
	l.state = Draining
	l.mu.Unlock()
	close(l.quit)
	_ = l.nl.Close()
	<-l.acceptDone

	l.mu.Lock()
	conns := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.Drain(deadline) })
	}
	wg.Wait()

	l.mu.Lock()
	l.state = Stopped
	l.mu.Unlock()
	close(l.stopped)
	l.log.Info("listener stopped", "accepted", l.accepted.Load(), "rejected", l.rejected.Load())
}

// Close stops the listener without draining.
func (l *Listener) Close() error {
	l.Stop(time.Now())
	return nil
}

// ListenerInfo is a snapshot of a listener.
type ListenerInfo struct {
	ID       string
	Addr     string
	State    ListenerState
	Active   int
	Accepted uint64
	Rejected uint64
}

// Info returns a snapshot of the listener.
func (l *Listener) Info() ListenerInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return ListenerInfo{
		ID:       l.cfg.ID,
		Addr:     l.nl.Addr().String(),
		State:    l.state,
		Active:   len(l.conns),
		Accepted: l.accepted.Load(),
		Rejected: l.rejected.Load(),
	}
}
