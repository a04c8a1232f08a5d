//go:build unix

package bench

import (
	"math"
	"strings"
	"syscall"
	"testing"
)

// TestRaiseFileLimit: the soft limit goes up to what was asked, never down,
// and asking past the hard limit is an error that names it.
func TestRaiseFileLimit(t *testing.T) {
	orig := fileLimit(t)
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	hard := uint64(orig.Max)
	if hard < 4096 {
		t.Skipf("hard limit on open files is %d; the test needs 4096", hard)
	}

	lowered := orig
	setLimit(&lowered.Cur, 1024)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	if err := raiseFileLimit(2048); err != nil {
		t.Fatalf("raiseFileLimit(2048) = %v", err)
	}
	if got := fileLimit(t); uint64(got.Cur) != 2048 {
		t.Errorf("soft limit after raiseFileLimit(2048) = %d, want 2048", got.Cur)
	}
	if err := raiseFileLimit(100); err != nil {
		t.Fatalf("raiseFileLimit(100) = %v", err)
	}
	if got := fileLimit(t); uint64(got.Cur) != 2048 {
		t.Errorf("soft limit after raiseFileLimit(100) = %d, want 2048 (never lowered)", got.Cur)
	}
	if hard < math.MaxInt64 {
		err := raiseFileLimit(hard + 1)
		if err == nil || !strings.Contains(err.Error(), "hard limit") {
			t.Errorf("raiseFileLimit(hard+1) = %v, want an error naming the hard limit", err)
		}
	}
}

func fileLimit(t *testing.T) syscall.Rlimit {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	return lim
}
