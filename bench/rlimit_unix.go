//go:build unix

package bench

import (
	"fmt"
	"syscall"
)

// raiseFileLimit raises the soft limit on open files to at least n, within
// the hard limit, so an idle-connection run can hold every socket.
func raiseFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	// The fields are uint64 on most systems and int64 on FreeBSD and
	// DragonFly; both hold non-negative values, so compare as uint64.
	if uint64(lim.Cur) >= n {
		return nil
	}
	if uint64(lim.Max) < n {
		return fmt.Errorf("need %d open files, the hard limit is %d", n, lim.Max)
	}
	setLimit(&lim.Cur, n)
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// setLimit stores n in a limit field of either type.
func setLimit[T int64 | uint64](field *T, n uint64) { *field = T(n) }
