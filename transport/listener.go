package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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
	// Slots, when set, is shared by many listeners and caps the
	// connections they hold open together (see ConnSlots).
	Slots *ConnSlots
	// AllowedSources, when not empty, are the only peer addresses whose
	// connections are served: any other is reset right after accept,
	// before a byte is read, and counted (SourceDenied). Behind a trusted
	// proxy the address checked is the one its PROXY header gives.
	AllowedSources []netip.Prefix
	// ProxyTrusted are the addresses of load balancers that put a PROXY
	// protocol header (v2, or v1) in front of every connection: from them
	// the header is required (a connection without a valid one is closed
	// and counted) and the peer address it gives is used for
	// AllowedSources, MaxConnectionsPerSource and RemoteAddr. Connections
	// from other addresses must not send one (it is refused as a framing
	// error, so a peer cannot pretend to be someone else).
	ProxyTrusted []netip.Prefix
	// TLS, when set, makes the listener a TLS server (nil: plain TCP). The
	// handshake runs on the connection's goroutine, never in the accept
	// loop, within HandshakeTimeout; a failed one is closed, counted
	// (TLSFailures) and logged, sampled. With ClientAuth set to verify
	// client certificates, the verified one's identity is recorded with
	// every message.
	TLS *tls.Config
	// PeerNames, when not empty, is an allow-list of client certificate
	// names (exact, or "*.suffix" for one DNS label): a peer whose verified
	// certificate matches none, or that presents none, is closed after the
	// handshake and counted (PeerDenied).
	PeerNames []string
	// HandshakeTimeout bounds a new connection's preamble (the PROXY header
	// and the TLS handshake together): connections that send nothing are
	// closed, and hold their slot no longer than this.
	HandshakeTimeout time.Duration
	// Control, when set, is called with the resolved address before the
	// socket is bound (net.ListenConfig.Control), so an address policy can
	// refuse it; its error should wrap ErrAddressForbidden.
	Control func(network, address string, c syscall.RawConn) error
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
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.TLS = tlsMin12(cfg.TLS)
	return cfg
}

// Validate reports whether cfg (after WithDefaults) is usable. Errors wrap
// ErrInvalidConfig.
func (cfg ListenerConfig) Validate() error {
	if err := checkAddress(cfg.Address, true); err != nil {
		return err
	}
	if err := checkTLSConfig(cfg.TLS, true); err != nil {
		return err
	}
	if len(cfg.PeerNames) > 0 && (cfg.TLS == nil || cfg.TLS.ClientAuth == tls.NoClientCert && cfg.TLS.GetConfigForClient == nil) {
		return fmt.Errorf("%w: allowed peer names need TLS with client certificates", ErrInvalidConfig)
	}
	for _, p := range append(cfg.AllowedSources[:len(cfg.AllowedSources):len(cfg.AllowedSources)], cfg.ProxyTrusted...) {
		if !p.IsValid() {
			return fmt.Errorf("%w: invalid address prefix", ErrInvalidConfig)
		}
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
	sourceDenied, tlsFailures          atomic.Int64
	peerDenied, proxyFailures          atomic.Int64
	quit                               chan struct{} // closed when Stop begins
	acceptDone                         chan struct{}

	mu    sync.Mutex
	state ListenerState
	conns map[*Conn]struct{}
	// pre are the connections in their preamble (PROXY header, TLS
	// handshake), counted against the caps like open ones; preWG waits for
	// their goroutines to hand them on or give up.
	pre      map[net.Conn]struct{}
	preWG    sync.WaitGroup
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
	lc := net.ListenConfig{KeepAliveConfig: keepalive(cfg.Conn.Keepalive), Control: cfg.Control}
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
		pre:        make(map[net.Conn]struct{}),
		bySource:   make(map[string]int),
		stopped:    make(chan struct{}),
	}
	l.log.Info("listener started", "local_addr", nl.Addr().String(),
		"framing", cfg.Conn.Framing.String(), "ack_policy", cfg.Conn.Ack.Name(),
		"tls", cfg.TLS != nil, "allowed_sources", len(cfg.AllowedSources), "proxy_trusted", len(cfg.ProxyTrusted))
	go l.acceptLoop()
	return l, nil
}

// classifyListenError says why an address cannot be bound, so callers need
// not know operating-system errors.
func classifyListenError(err error) error {
	var dnsErr *net.DNSError
	var why error
	switch {
	case errors.Is(err, ErrAddressForbidden):
		return err
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

// addrOf returns the peer's IP address (IPv4-mapped IPv6 unmapped, so
// IPv4 prefixes match it).
func addrOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// allowed reports whether a peer at a may be served.
func (l *Listener) allowed(a netip.Addr) bool {
	return len(l.cfg.AllowedSources) == 0 || inPrefixes(l.cfg.AllowedSources, a)
}

// admit starts a connection, or resets it at once when its address is not
// allowed, the listener (or the shared slots) is full, the peer's address
// has too many connections, or it is stopping. Nothing is read here: a
// connection that needs a preamble (PROXY header, TLS handshake) gets a
// goroutine of its own for it, already holding its place in the caps.
func (l *Listener) admit(nc net.Conn) {
	peer := addrOf(nc.RemoteAddr())
	proxied := inPrefixes(l.cfg.ProxyTrusted, peer)
	if !proxied && !l.allowed(peer) {
		l.deny(nc, nc.RemoteAddr().String())
		return
	}
	src := peer.String()
	l.mu.Lock()
	var reason RejectReason
	switch {
	case l.state != ListenerListening:
	case len(l.conns)+len(l.pre) >= l.cfg.MaxConnections:
		reason = RejectMaxConnections
	case !proxied && l.bySource[src] >= l.cfg.MaxConnectionsPerSource:
		// Behind a proxy every connection comes from its address: the
		// limit applies to the address its header gives.
		reason = RejectPerSource
	case !l.cfg.Slots.acquire():
		reason = RejectTotalConnections
	default:
		if !proxied {
			l.bySource[src]++
		}
		_ = setUserTimeout(nc, l.cfg.Conn.UserTimeout)
		if !proxied && l.cfg.TLS == nil {
			c := l.newConn(nc, src, nil)
			l.mu.Unlock()
			l.opened(c)
			c.start()
			return
		}
		l.pre[nc] = struct{}{}
		l.preWG.Add(1)
		l.mu.Unlock()
		go l.preamble(nc, src, proxied)
		return
	}
	l.mu.Unlock()
	if reason != 0 {
		l.reject(nc.RemoteAddr().String(), reason)
	}
	resetConn(nc)
}

// newConn makes the Conn of an admitted connection and registers it. l.mu
// must be held.
func (l *Listener) newConn(nc net.Conn, src string, tlsInfo *TLSInfo) *Conn {
	c := newConn(nc, connParams{
		id:         newConnID(),
		listenerID: l.cfg.ID,
		dir:        Inbound,
		cfg:        l.cfg.Conn,
		sink:       l.cfg.Sink,
		log:        l.cfg.Logger,
		logs:       &l.logs,
		tls:        tlsInfo,
		sniff:      l.cfg.TLS == nil,
		onClose:    func(c *Conn, info ConnInfo) { l.forget(c, src, info) },
	})
	l.conns[c] = struct{}{}
	return c
}

func (l *Listener) opened(c *Conn) {
	l.accepted.Add(1)
	if l.cfg.OnOpen != nil {
		l.cfg.OnOpen(c)
	}
}

// resetConn closes nc with a reset (linger 0), so the peer learns at once
// and no TIME_WAIT is left behind.
func resetConn(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}

// deny resets a connection from an address AllowedSources does not hold,
// counts it and logs it, sampled.
func (l *Listener) deny(nc net.Conn, remote string) {
	l.sourceDenied.Add(1)
	if f := l.cfg.Conn.Observer.ConnRejected; f != nil {
		f(l.cfg.ID, remote, RejectSourceDenied)
	}
	if ok, suppressed := l.logs.denied.allow(); ok {
		l.log.Warn("connection from an address not allowed; reset", "remote_addr", remote, "suppressed", suppressed)
	}
	resetConn(nc)
}

// reject counts a turned-away connection and logs it, sampled: a flood of
// reconnecting peers must not flood the log too.
func (l *Listener) reject(remote string, reason RejectReason) {
	if reason == RejectPerSource {
		l.sourceRejected.Add(1)
	} else {
		l.rejected.Add(1)
	}
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
	l.unsource(src)
	l.closed.Add(&info.Counters)
	l.mu.Unlock()
	l.cfg.Slots.release()
}

// unsource gives back a connection's place in the per-source count; src is
// empty for one that never took it. l.mu must be held.
func (l *Listener) unsource(src string) {
	if src == "" {
		return
	}
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
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
	// Connections still in their preamble are not served any more: close
	// them (their goroutines see the listener draining and give up).
	l.mu.Lock()
	for nc := range l.pre {
		_ = nc.Close()
	}
	l.mu.Unlock()
	l.preWG.Wait()

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
	// Open is the number of connections open now, with those still in
	// their preamble (PROXY header, TLS handshake).
	Open int
	// Accepted counts connections accepted (served); Rejected those
	// closed at once at MaxConnections or the shared ConnSlots,
	// SourceRejected those closed at once at MaxConnectionsPerSource.
	Accepted, Rejected, SourceRejected int64
	// SourceDenied counts connections reset because AllowedSources does
	// not hold their address; TLSFailures those whose TLS handshake failed
	// or timed out; PeerDenied those whose client certificate PeerNames
	// refused; ProxyHeaderFailures those from a trusted proxy without a
	// valid PROXY header in time.
	SourceDenied, TLSFailures, PeerDenied, ProxyHeaderFailures int64
	// Totals adds up the counters of every connection the listener
	// accepted, open and closed, so they never go down.
	Totals Counters
}

// Info returns a snapshot of the listener.
func (l *Listener) Info() ListenerInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	info := ListenerInfo{
		ID:                  l.cfg.ID,
		Addr:                l.nl.Addr().String(),
		State:               l.state,
		Open:                len(l.conns) + len(l.pre),
		Accepted:            l.accepted.Load(),
		Rejected:            l.rejected.Load(),
		SourceRejected:      l.sourceRejected.Load(),
		SourceDenied:        l.sourceDenied.Load(),
		TLSFailures:         l.tlsFailures.Load(),
		PeerDenied:          l.peerDenied.Load(),
		ProxyHeaderFailures: l.proxyFailures.Load(),
		Totals:              l.closed,
	}
	for c := range l.conns {
		k := c.stats.snapshot()
		info.Totals.Add(&k)
	}
	return info
}
