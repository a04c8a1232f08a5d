//go:build !linux

package transport

import (
	"net"
	"time"
)

// setUserTimeout is a no-op off Linux: TCP_USER_TIMEOUT is Linux's; there
// keepalive alone finds half-open peers.
func setUserTimeout(net.Conn, time.Duration) error { return nil }
