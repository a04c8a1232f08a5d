package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// DialConfig configures an outbound connection. Zero values mean the
// defaults in limits.go.
type DialConfig struct {
	// ID names the connection.
	ID string
	// Address is the peer's "host:port".
	Address string
	// Conn is the connection's protocol behaviour.
	Conn ConnConfig
	// ConnectTimeout bounds the TCP connect and the TLS handshake
	// together.
	ConnectTimeout time.Duration
	// TLS, when set, makes the connection a TLS client (nil: plain TCP):
	// the server's certificate is verified against RootCAs (nil: the
	// system's) for ServerName (empty: the host of Address).
	TLS *tls.Config
	// TLSConfig, when set, is called before every dial for the TLS
	// configuration, and overrides TLS: certificates and CAs rotated on
	// disk are used from the next reconnect on.
	TLSConfig func() *tls.Config
	// PeerNames, when not empty, is an allow-list of server certificate
	// names checked beyond host-name verification (as
	// ListenerConfig.PeerNames): a server that matches none is refused.
	PeerNames []string
	// Control, when set, is called with the resolved address before every
	// connect (net.Dialer.Control), so an address policy sees what a host
	// name resolved to; its error should wrap ErrAddressForbidden.
	Control func(network, address string, c syscall.RawConn) error
	// Sink takes frames the peer sends on its own initiative.
	Sink Sink
	// Logger receives the connection's logs; nil discards them.
	Logger *slog.Logger
	// OnClose is called with the final snapshot when the connection closes,
	// on its goroutine, before Close returns.
	OnClose func(*Conn, ConnInfo)
}

// WithDefaults returns cfg with zero values replaced by defaults.
func (cfg DialConfig) WithDefaults() DialConfig {
	cfg.Conn = cfg.Conn.WithDefaults()
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Validate reports whether cfg (after WithDefaults) is usable. Errors wrap
// ErrInvalidConfig.
func (cfg DialConfig) Validate() error {
	if err := checkAddress(cfg.Address, false); err != nil {
		return err
	}
	if cfg.Sink == nil {
		return fmt.Errorf("%w: a connection needs a sink", ErrInvalidConfig)
	}
	if err := checkTLSConfig(cfg.TLS, false); err != nil {
		return err
	}
	if len(cfg.PeerNames) > 0 && cfg.TLS == nil && cfg.TLSConfig == nil {
		return fmt.Errorf("%w: allowed peer names need TLS", ErrInvalidConfig)
	}
	return cfg.Conn.Validate()
}

// Dial connects to cfg.Address and starts the connection's read loop. A
// failed connect wraps ErrConnectTimeout or ErrConnectFailed, and the cause;
// a bad config wraps ErrInvalidConfig.
func Dial(ctx context.Context, cfg DialConfig) (*Conn, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tcfg := cfg.TLS
	if cfg.TLSConfig != nil {
		tcfg = cfg.TLSConfig()
	}
	if err := checkTLSConfig(tcfg, false); err != nil {
		return nil, err
	}
	// One deadline for the connect and the handshake: a server that
	// accepts and then says nothing must not hold a reconnect loop longer.
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	d := net.Dialer{KeepAliveConfig: keepalive(cfg.Conn.Keepalive), Control: cfg.Control}
	if cfg.Conn.Keepalive <= 0 {
		d.KeepAlive = -1
	}
	nc, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, dialError(cfg.Address, err)
	}
	_ = setUserTimeout(nc, cfg.Conn.UserTimeout)
	var info *TLSInfo
	if tcfg != nil {
		tcfg = tlsMin12(tcfg)
		if tcfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(cfg.Address)
			tcfg = tcfg.Clone()
			tcfg.ServerName = host
		}
		tc := tls.Client(nc, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			why := ErrConnectFailed
			switch {
			case errors.Is(ctx.Err(), context.Canceled):
				return nil, fmt.Errorf("connect to %s: %w", cfg.Address, ctx.Err())
			case ctx.Err() != nil:
				why = ErrConnectTimeout
			}
			return nil, fmt.Errorf("connect to %s: %w: %w: %w", cfg.Address, why, ErrTLSHandshake, err)
		}
		cs := tc.ConnectionState()
		if err := checkPeer(cs, cfg.PeerNames); err != nil {
			_ = tc.Close()
			return nil, fmt.Errorf("connect to %s: %w: %w", cfg.Address, ErrConnectFailed, err)
		}
		info = tlsInfoOf(cs)
		nc = tc
	}
	c := newConn(nc, connParams{
		id:      cfg.ID,
		dir:     Outbound,
		cfg:     cfg.Conn,
		sink:    cfg.Sink,
		log:     cfg.Logger,
		logs:    &samplers{},
		tls:     info,
		onClose: cfg.OnClose,
	})
	c.start()
	return c, nil
}

// dialError classifies a failed connect.
func dialError(addr string, err error) error {
	var ne net.Error
	why := ErrConnectFailed
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("connect to %s: %w", addr, err)
	case errors.Is(err, ErrAddressForbidden):
		return fmt.Errorf("connect to %s: %w", addr, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		why = ErrConnectTimeout
	}
	return fmt.Errorf("connect to %s: %w: %w", addr, why, err)
}
