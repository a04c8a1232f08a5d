package transport

import "time"

// Defaults and limits: the one place they are written. A zero value in a
// config struct of this package means "the default" (negative turns an
// optional feature off where the field says so). The API's validation rules
// and comments state the same numbers; service tests check that the two
// agree.
const (
	// DefaultMaxFrameBytes is the payload size limit when
	// Framing.MaxFrameBytes is 0.
	DefaultMaxFrameBytes = 4 << 20
	// MaxFrameBytesLimit is the largest accepted Framing.MaxFrameBytes, and
	// the largest payload Send takes.
	MaxFrameBytesLimit = 64 << 20
	// DefaultMaxJunkBytes is how many bytes outside frames in a row a
	// lenient connection may send before it is closed, when
	// Framing.MaxJunkBytes is 0.
	DefaultMaxJunkBytes = 64 << 10
	// MaxMarkerBytes bounds Framing.Start, End and Delimiter; longer markers
	// are almost certainly configuration mistakes.
	MaxMarkerBytes = 16

	// DefaultAckTimeout bounds a Send (write plus acknowledgement) when
	// neither the call nor ConnConfig.AckTimeout gives a timeout.
	DefaultAckTimeout = 10 * time.Second
	// DefaultFrameTimeout bounds how long a started frame may take to
	// complete.
	DefaultFrameTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds one write of an acknowledgement, so a peer
	// that stops reading cannot block the read loop forever.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultKeepalive is the TCP keepalive period.
	DefaultKeepalive = 30 * time.Second
	// DefaultConnectTimeout bounds Dial (the TCP connect and the TLS
	// handshake together).
	DefaultConnectTimeout = 10 * time.Second
	// DefaultHandshakeTimeout bounds an accepted connection's preamble
	// (PROXY header and TLS handshake), so silent connections give their
	// slot back.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultUserTimeout is TCP_USER_TIMEOUT on Linux: written data that
	// the peer has not acknowledged for this long, or keepalive probes
	// unanswered for this long, drop the connection. With the default
	// keepalive (30 s idle, then a probe every 30 s) a half-open peer is
	// found within 90 s whether or not data is in flight, instead of the
	// kernel's ~15 minutes of retransmissions. Other systems: keepalive
	// alone (Keepalive + 3 probes: 2 minutes).
	DefaultUserTimeout = 60 * time.Second
	// DefaultDrainTimeout is how long stopping a listener or shutting down
	// lets in-flight frames finish when the caller gives no deadline.
	DefaultDrainTimeout = 10 * time.Second

	// DefaultMaxConnections caps a listener's open connections.
	DefaultMaxConnections = 1024
	// MaxConnectionsLimit is the largest accepted MaxConnections.
	MaxConnectionsLimit = 1_000_000
	// MinDefaultConnectionsPerSource is the least the default
	// MaxConnectionsPerSource (half of MaxConnections) may be, so small
	// listeners are not limited by it.
	MinDefaultConnectionsPerSource = 8
)
