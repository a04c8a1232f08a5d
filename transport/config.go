package transport

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"
)

// ErrInvalidConfig wraps every configuration error, so callers can tell a
// bad request from an outage.
var ErrInvalidConfig = errors.New("invalid configuration")

// ConnConfig is the protocol behaviour of a connection. Zero values mean the
// defaults in limits.go.
type ConnConfig struct {
	// Framing is how frames are delimited on the wire. Zero Kind: MLLP.
	Framing Framing
	// Ack is the acknowledgement policy. Nil: HL7Ack().
	Ack AckPolicy
	// AckTimeout bounds a Send (its write and the wait for the
	// acknowledgement) when the caller gives no timeout.
	AckTimeout time.Duration
	// IdleTimeout closes a connection that completes no frame for this long;
	// bytes outside frames do not count as activity. Zero: never.
	IdleTimeout time.Duration
	// FrameTimeout bounds how long a started frame may take to complete.
	FrameTimeout time.Duration
	// WriteTimeout bounds one write of an acknowledgement.
	WriteTimeout time.Duration
	// Keepalive is the TCP keepalive period. Negative: off.
	Keepalive time.Duration
	// UserTimeout is TCP_USER_TIMEOUT (Linux only; elsewhere ignored).
	// Negative: off (the kernel's default).
	UserTimeout time.Duration
	// MaxMessagesPerSecond bounds how fast frames are read from the peer
	// (a token bucket with a burst of one second's worth, at least 1).
	// When it is empty the read loop waits before reading the next frame:
	// back-pressure through TCP, so nothing is refused or lost and a fast
	// peer simply sends slower. Zero: unlimited.
	MaxMessagesPerSecond float64
	// Budget, when set, is shared by many connections and bounds the memory
	// they hold together for frames being received (see MemoryBudget).
	Budget *MemoryBudget
	// Observer receives the connection's events; nil: none.
	Observer *Observer
}

// WithDefaults returns c with zero values replaced by defaults.
func (c ConnConfig) WithDefaults() ConnConfig {
	c.Framing = c.Framing.WithDefaults()
	if c.Ack == nil {
		c.Ack = HL7Ack()
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
	if c.Keepalive == 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.UserTimeout == 0 {
		c.UserTimeout = DefaultUserTimeout
	}
	if c.Observer == nil {
		c.Observer = &Observer{}
	}
	return c
}

// Validate reports whether c (after WithDefaults) is usable. Errors wrap
// ErrInvalidConfig.
func (c ConnConfig) Validate() error {
	if err := c.Framing.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := c.Ack.Validate(c.Framing); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.IdleTimeout < 0 {
		return fmt.Errorf("%w: the idle timeout must not be negative", ErrInvalidConfig)
	}
	if c.MaxMessagesPerSecond < 0 || math.IsNaN(c.MaxMessagesPerSecond) || math.IsInf(c.MaxMessagesPerSecond, 0) {
		return fmt.Errorf("%w: the message rate must be a positive number (or zero: unlimited)", ErrInvalidConfig)
	}
	return nil
}

// checkAddress rejects an address that is not host:port with a numeric
// port, so a typo is a configuration error rather than looking like an
// outage. Port 0 (any free port) only makes sense for listening.
func checkAddress(addr string, listen bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: address %q: %w", ErrInvalidConfig, addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	switch {
	case err != nil:
		return fmt.Errorf("%w: address %q: the port must be a number from 0 to 65535", ErrInvalidConfig, addr)
	case p == 0 && !listen:
		return fmt.Errorf("%w: address %q: port 0 can only be listened on", ErrInvalidConfig, addr)
	}
	return nil
}

func keepalive(period time.Duration) net.KeepAliveConfig {
	if period <= 0 {
		return net.KeepAliveConfig{Enable: false}
	}
	return net.KeepAliveConfig{Enable: true, Idle: period, Interval: period, Count: 3}
}
