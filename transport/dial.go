package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	// ConnectTimeout bounds the TCP connect.
	ConnectTimeout time.Duration
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
	d := net.Dialer{Timeout: cfg.ConnectTimeout, KeepAliveConfig: keepalive(cfg.Conn.Keepalive)}
	if cfg.Conn.Keepalive <= 0 {
		d.KeepAlive = -1
	}
	nc, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		var ne net.Error
		why := ErrConnectFailed
		switch {
		case errors.Is(err, context.Canceled):
			return nil, fmt.Errorf("connect to %s: %w", cfg.Address, err)
		case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
			why = ErrConnectTimeout
		}
		return nil, fmt.Errorf("connect to %s: %w: %w", cfg.Address, why, err)
	}
	c := newConn(nc, connParams{
		id:      cfg.ID,
		dir:     Outbound,
		cfg:     cfg.Conn,
		sink:    cfg.Sink,
		log:     cfg.Logger,
		logs:    &samplers{},
		onClose: cfg.OnClose,
	})
	c.start()
	return c, nil
}
