package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// DefaultConnectTimeout bounds Dial when DialConfig gives no timeout.
const DefaultConnectTimeout = 10 * time.Second

// DialConfig configures an outbound connection.
type DialConfig struct {
	ID      string
	Address string
	Conn    ConnConfig
	// ConnectTimeout bounds the TCP connect. Zero: DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Sink takes frames the peer sends on its own initiative.
	Sink   Sink
	Logger *slog.Logger
	// OnClose is called when the connection closes, on its goroutine, before
	// Close returns.
	OnClose func(*Conn)
}

// Dial connects to cfg.Address and starts the connection's read loop. The
// error says why the connect failed (refused, timed out, unknown host) and
// wraps the cause.
func Dial(ctx context.Context, cfg DialConfig) (*Conn, error) {
	cfg.Conn = cfg.Conn.WithDefaults()
	if err := cfg.Conn.Validate(); err != nil {
		return nil, err
	}
	if cfg.Sink == nil {
		return nil, errors.New("connection needs a sink")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	d := net.Dialer{Timeout: cfg.ConnectTimeout, KeepAliveConfig: keepalive(cfg.Conn.Keepalive)}
	if cfg.Conn.Keepalive <= 0 {
		d.KeepAlive = -1
	}
	nc, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Address, err)
	}
	c := newConn(nc, connParams{
		id:      cfg.ID,
		dir:     Outbound,
		cfg:     cfg.Conn,
		sink:    cfg.Sink,
		log:     cfg.Logger,
		onClose: cfg.OnClose,
	})
	c.start()
	return c, nil
}
