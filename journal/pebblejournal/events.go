package pebblejournal

import (
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// events receives Pebble's events for every database a Journal opens. It
// keeps two of Pebble's retry loops from flooding the log and the CPU.
//
// Pebble retries a failed flush at once and for ever (compaction.go:1483,
// "TODO(peter): count consecutive flush errors and backoff"). On a full
// disk that is thousands of attempts a second; while it opens a directory,
// Open waits for that flush (open.go:535) and never returns. So a failed
// flush is logged once, later ones only counted, and each retry waits a
// little longer, up to flushBackoffMax. The wait happens in FlushEnd, which
// Pebble calls from its flush goroutine holding its DB mutex: nothing the
// journal does needs that mutex except DB.Close, which is delayed by at
// most one wait. When the failure is ENOSPC and the journal reserved space
// for this flush (see reserveSpace), the reservation is released instead,
// and the retry finds room.
type events struct {
	logger *slog.Logger

	mu            sync.Mutex
	reserved      *reservation // released for a flush that runs out of space
	flushFailures int          // consecutive failed flushes
	flushErr      error        // the last, so BackgroundError does not log it again
	bgLogged      time.Time    // when a background error was last logged
	bgSuppressed  int          // background errors not logged since
}

const (
	flushBackoffMin = 10 * time.Millisecond
	flushBackoffMax = time.Second
	// bgLogEvery bounds how often other background errors are logged;
	// those in between are counted in the next line.
	bgLogEvery = 10 * time.Second
)

// errEmptyTableText is how Pebble reports, in FlushEnd, a flush that worked
// but wrote nothing (compaction.go:41, unexported).
const errEmptyTableText = "pebble: empty table"

// reserve hands the events a reservation to release if a flush runs out of
// space, or takes it back (nil).
func (e *events) reserve(r *reservation) {
	e.mu.Lock()
	e.reserved = r
	e.mu.Unlock()
}

func (e *events) listener() *pebble.EventListener {
	return &pebble.EventListener{
		FlushEnd:        e.flushEnd,
		BackgroundError: e.backgroundError,
		// Pebble's default turns DataCorruption into Fatalf (process exit);
		// a log is more useful here because the failing read or compaction
		// also returns the error.
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			e.logger.Error("journal: data corruption", "path", info.Path, "err", info.Details)
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			e.logger.Warn("journal: slow disk operation", "path", info.Path, "op", info.OpType.String(), "duration", info.Duration)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			e.logger.Warn("journal: write stall", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			e.logger.Info("journal: write stall ended")
		},
	}
}

func (e *events) flushEnd(info pebble.FlushInfo) {
	if info.Err == nil || info.Err.Error() == errEmptyTableText {
		e.mu.Lock()
		n := e.flushFailures
		e.flushFailures, e.flushErr = 0, nil
		e.mu.Unlock()
		if n > 0 {
			e.logger.Info("journal: flushing to disk works again", "failed_attempts", n)
		}
		return
	}
	e.mu.Lock()
	e.flushFailures++
	n := e.flushFailures
	e.flushErr = info.Err
	r := e.reserved
	if vfs.IsNoSpaceError(info.Err) {
		e.reserved = nil
	} else {
		r = nil
	}
	e.mu.Unlock()
	if r != nil {
		r.release()
		e.logger.Warn("journal: disk full while flushing; released the space reserved for it", "err", info.Err)
		return
	}
	if n == 1 {
		e.logger.Error("journal: flushing to disk failed; retrying with backoff", "err", info.Err)
	}
	time.Sleep(min(flushBackoffMin<<min(n-1, 10), flushBackoffMax))
}

func (e *events) backgroundError(err error) {
	e.mu.Lock()
	if sameError(err, e.flushErr) { // just reported by flushEnd
		e.mu.Unlock()
		return
	}
	now := time.Now()
	if !e.bgLogged.IsZero() && now.Sub(e.bgLogged) < bgLogEvery {
		e.bgSuppressed++
		e.mu.Unlock()
		return
	}
	suppressed := e.bgSuppressed
	e.bgLogged, e.bgSuppressed = now, 0
	e.mu.Unlock()
	e.logger.Error("journal: pebble background error", "err", err, "suppressed", suppressed)
}

// sameError reports whether a and b are the same error value. Comparing
// interfaces whose dynamic type is not comparable would panic.
func sameError(a, b error) bool {
	return a != nil && b != nil && reflect.TypeOf(a) == reflect.TypeOf(b) && reflect.TypeOf(a).Comparable() && a == b
}
