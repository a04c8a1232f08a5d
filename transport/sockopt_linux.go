package transport

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT: how long written data may stay
// unacknowledged (and, with keepalive, how long probes may go unanswered)
// before the kernel drops the connection, so a peer that vanished without
// a FIN or RST is found within d rather than after the kernel's ~15
// minutes of retransmissions.
func setUserTimeout(nc net.Conn, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}
