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

// ListenerConfig configures a listener. Zero values mean the defaults in
// limits.go.
type ListenerConfig struct {
	// ID names the listener in logs, messages and connection info.
	ID string
	// Address is the "host:port" to bind; port 0 picks a free port.
	Address string
	// Conn is the protocol behaviour of accepted connections.
	Conn ConnConfig
	// MaxConnections caps open connections; excess ones are closed at once
	// and counted.
	MaxConnections int
	// MaxConnectionsPerSource caps open connections from one peer IP
	// address, so one misbehaving host cannot take every slot. Zero: half
	// of MaxConnections, but at least 8 (or MaxConnections, if smaller), so
	// small listeners are not limited by it.
	MaxConnectionsPerSource int
	// Sink takes every frame received.
	Sink Sink
	// Logger receives the listener's and its connections' logs; nil
	// discards them.
	Logger *slog.Logger
	// OnOpen and OnClose are called as connections open and close, for the
	// caller's registry. OnClose gets the connection's final snapshot and
	// runs on the connection's goroutine before its Close returns, so it
	// must not wait for that connection.
	OnOpen  func(*Conn)
	OnClose func(*Conn, ConnInfo)
}

// WithDefaults returns cfg with zero values replaced by defaults.
func (cfg ListenerConfig) WithDefaults() ListenerConfig {
	cfg.Conn = cfg.Conn.WithDefaults()
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxConnectionsPerSource <= 0 {
		cfg.MaxConnectionsPerSource = max(cfg.MaxConnections/2, min(cfg.MaxConnections, MinDefaultConnectionsPerSource))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Validate reports whether cfg (after WithDefaults) is usable. Errors wrap
// ErrInvalidConfig.
func (cfg ListenerConfig) Validate() error {
	if err := checkAddress(cfg.Address, true); err != nil {
		return err
	}
	if cfg.MaxConnections > MaxConnectionsLimit || cfg.MaxConnectionsPerSource > MaxConnectionsLimit {
		return fmt.Errorf("%w: at most %d connections", ErrInvalidConfig, MaxConnectionsLimit)
	}
	if cfg.Sink == nil {
		return fmt.Errorf("%w: a listener needs a sink", ErrInvalidConfig)
	}
	return cfg.Conn.Validate()
}

// Listener accepts TCP connections and runs them. Its accept loop and
// connections belong to it; Stop ends them and waits.
type Listener struct {
	cfg  ListenerConfig
	nl   net.Listener
	log  *slog.Logger
	logs samplers

	accepted, rejected, sourceRejected atomic.Int64
	quit                               chan struct{} // closed when Stop begins
	acceptDone                         chan struct{}

	mu       sync.Mutex
	state    ListenerState
	conns    map[*Conn]struct{}
	bySource map[string]int // open connections per peer IP
	closed   Counters       // counters of connections that have closed
	stopped  chan struct{}
}

// Listen binds cfg.Address and starts accepting. An address that cannot be
// bound here is an error wrapping ErrAddrNotBindable and one of
// ErrAddrInUse, ErrAddrNotLocal, ErrPermission or ErrUnresolvable; a bad
// config wraps ErrInvalidConfig.
func Listen(ctx context.Context, cfg ListenerConfig) (*Listener, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{KeepAliveConfig: keepalive(cfg.Conn.Keepalive)}
	if cfg.Conn.Keepalive <= 0 {
		lc.KeepAlive = -1
	}
	nl, err := lc.Listen(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Address, classifyListenError(err))
	}
	l := &Listener{
		cfg:        cfg,
		nl:         nl,
		log:        cfg.Logger.With("listener_id", cfg.ID),
		quit:       make(chan struct{}),
		acceptDone: make(chan struct{}),
		state:      ListenerListening,
		conns:      make(map[*Conn]struct{}),
		bySource:   make(map[string]int),
		stopped:    make(chan struct{}),
	}
	l.log.Info("listener started", "local_addr", nl.Addr().String(),
		"framing", cfg.Conn.Framing.String(), "ack_policy", cfg.Conn.Ack.Name())
	go l.acceptLoop()
	return l, nil
}

// classifyListenError says why an address cannot be bound, so callers need
// not know operating-system errors.
func classifyListenError(err error) error {
	var dnsErr *net.DNSError
	var why error
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		why = ErrAddrInUse
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		why = ErrAddrNotLocal
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		why = ErrPermission
	case errors.As(err, &dnsErr):
		why = ErrUnresolvable
	default:
		return err
	}
	return fmt.Errorf("%w: %w: %w", ErrAddrNotBindable, why, err)
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

// sourceOf returns the peer's IP address, the key of the per-source limit.
func sourceOf(nc net.Conn) string {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, _ := net.SplitHostPort(nc.RemoteAddr().String())
	return host
}

// admit starts a connection, or closes it at once when the listener is
// full, the peer's address has too many connections, or it is stopping.
func (l *Listener) admit(nc net.Conn) {
	src := sourceOf(nc)
	l.mu.Lock()
	var reason RejectReason
	switch {
	case l.state != ListenerListening:
	case len(l.conns) >= l.cfg.MaxConnections:
		reason = RejectMaxConnections
	case l.bySource[src] >= l.cfg.MaxConnectionsPerSource:
		reason = RejectPerSource
	default:
		c := newConn(nc, connParams{
			id:         newConnID(),
			listenerID: l.cfg.ID,
			dir:        Inbound,
			cfg:        l.cfg.Conn,
			sink:       l.cfg.Sink,
			log:        l.cfg.Logger,
			logs:       &l.logs,
			onClose:    func(c *Conn, info ConnInfo) { l.forget(c, src, info) },
		})
		l.conns[c] = struct{}{}
		l.bySource[src]++
		l.mu.Unlock()
		l.accepted.Add(1)
		if l.cfg.OnOpen != nil {
			l.cfg.OnOpen(c)
		}
		c.start()
		return
	}
	l.mu.Unlock()
	if reason != 0 {
		l.reject(nc, reason)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // reset, so the peer learns at once
	}
	_ = nc.Close()
}

// reject counts a turned-away connection and logs it, sampled: a flood of
// reconnecting peers must not flood the log too.
func (l *Listener) reject(nc net.Conn, reason RejectReason) {
	if reason == RejectPerSource {
		l.sourceRejected.Add(1)
	} else {
		l.rejected.Add(1)
	}
	remote := nc.RemoteAddr().String()
	if f := l.cfg.Conn.Observer.ConnRejected; f != nil {
		f(l.cfg.ID, remote, reason)
	}
	if ok, suppressed := l.logs.rejected.allow(); ok {
		l.log.Warn("connection limit reached; closing new connection", "reason", reason.String(),
			"remote_addr", remote, "max_connections", l.cfg.MaxConnections,
			"max_connections_per_source", l.cfg.MaxConnectionsPerSource, "suppressed", suppressed)
	}
}

func (l *Listener) forget(c *Conn, src string, info ConnInfo) {
	if l.cfg.OnClose != nil {
		l.cfg.OnClose(c, info)
	}
	l.mu.Lock()
	delete(l.conns, c)
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
	l.closed.Add(&info.Counters)
	l.mu.Unlock()
}

// Stop stops accepting, drains every connection until deadline (frames being
// received are completed and acknowledged), closes them and waits. It is
// safe to call more than once; later calls wait for the first.
func (l *Listener) Stop(deadline time.Time) {
	l.mu.Lock()
	if l.state != ListenerListening {
		l.mu.Unlock()
		<-l.stopped
		return
	}
	l.state = ListenerDraining
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
	l.state = ListenerStopped
	l.mu.Unlock()
	close(l.stopped)
	l.log.Info("listener stopped", "accepted", l.accepted.Load(), "rejected", l.rejected.Load()+l.sourceRejected.Load())
}

// Close stops the listener without draining.
func (l *Listener) Close() error {
	l.Stop(time.Now())
	return nil
}

// ListenerInfo is a snapshot of a listener.
type ListenerInfo struct {
	ID    string
	Addr  string
	State ListenerState
	// Open is the number of connections open now.
	Open int
	// Accepted counts connections accepted; Rejected those closed at once
	// at MaxConnections, SourceRejected those closed at once at
	// MaxConnectionsPerSource.
	Accepted, Rejected, SourceRejected int64
	// Totals adds up the counters of every connection the listener
	// accepted, open and closed, so they never go down.
	Totals Counters
}

// Info returns a snapshot of the listener.
func (l *Listener) Info() ListenerInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	info := ListenerInfo{
		ID:             l.cfg.ID,
		Addr:           l.nl.Addr().String(),
		State:          l.state,
		Open:           len(l.conns),
		Accepted:       l.accepted.Load(),
		Rejected:       l.rejected.Load(),
		SourceRejected: l.sourceRejected.Load(),
		Totals:         l.closed,
	}
	for c := range l.conns {
		k := c.stats.snapshot()
		info.Totals.Add(&k)
	}
	return info
}
