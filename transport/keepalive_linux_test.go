package transport

import (
	"net"
	"syscall"
	"testing"
)

// keepaliveOf reads SO_KEEPALIVE and TCP_KEEPIDLE (seconds) of a TCP
// connection (Linux).
func keepaliveOf(t *testing.T, nc net.Conn) (on bool, idle int) {
	t.Helper()
	raw, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ka, ki int
	var serr error
	err = raw.Control(func(fd uintptr) {
		if ka, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); serr != nil {
			return
		}
		ki, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
	})
	if err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return ka != 0, ki
}

// userTimeoutOf reads TCP_USER_TIMEOUT (milliseconds) of a TCP connection.
func userTimeoutOf(t *testing.T, nc net.Conn) int {
	t.Helper()
	raw, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ms int
	var serr error
	err = raw.Control(func(fd uintptr) {
		ms, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, 0x12) // TCP_USER_TIMEOUT
	})
	if err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return ms
}
