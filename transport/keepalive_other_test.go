//go:build !linux

package transport

import (
	"net"
	"testing"
)

// keepaliveOf skips the test: it reads the keepalive socket options with
// Linux's option names (keepalive_linux_test.go).
func keepaliveOf(t *testing.T, _ net.Conn) (on bool, idle int) {
	t.Helper()
	t.Skip("reads TCP keepalive socket options only on Linux")
	return false, 0
}

func userTimeoutOf(t *testing.T, _ net.Conn) int {
	t.Helper()
	t.Skip("TCP_USER_TIMEOUT is Linux's")
	return 0
}
