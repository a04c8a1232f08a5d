package pebblejournal

import (
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// probeKey is overwritten by every recovery to prove that a synced write
// goes through the reopened database before appends are accepted again.
var probeKey = []byte{prefixInternal, 'p', 'r', 'o', 'b', 'e'}

// recoverLoop owns recovery. After each failure (signalled by fail) it
// tries to recover, with exponential backoff between attempts, until the
// journal is healthy again or Close stops it. Attempts that fail are logged
// at debug level only: the failure was logged once when it began, and the
// recovery is logged once when it succeeds.
func (j *Journal) recoverLoop() {
	defer close(j.recoverDone)
	for {
		select {
		case <-j.failed:
		case <-j.stop:
			return
		}
		wait := j.retryMin
		for attempt := 1; ; attempt++ {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-j.stop:
				t.Stop()
				return
			}
			err := j.tryRecover()
			if err == nil {
				break
			}
			j.logger.Debug("journal: recovery attempt failed", "attempt", attempt, "err", err)
			wait = min(2*wait, j.retryMax)
		}
	}
}

// tryRecover reopens the database once the disk takes synced writes again.
// Pebble's WAL writer stays broken after a failed write or sync (see the
// package documentation), so recovery closes the database and opens it
// again on the same directory, as a restart would, but in-process: replay
// restores every committed record (and perhaps the failed batch, if it
// reached the disk), and numbering resumes after what is really stored.
func (j *Journal) tryRecover() error {
	// Until the disk takes writes again, and has room for the flush that
	// opening it will run, the failed database stays open, so Read keeps
	// serving what was committed before the failure.
	exact := j.replayBytes
	if j.db != nil { // only this goroutine changes j.db while the journal is open
		db := j.db
		exact = func() (uint64, error) { return db.Metrics().WAL.Size, nil }
	}
	r, err := j.reserveForOpen(exact)
	if err != nil {
		return fmt.Errorf("disk check: %w", err)
	}

	j.dbMu.Lock()
	defer j.dbMu.Unlock()
	if j.db != nil {
		j.setView(nil) // no reader holds it: they hold dbMu
		if err := j.db.Close(); err != nil {
			// Expected: Pebble reports the sticky WAL error.
			j.logger.Debug("journal: closing the failed database", "err", err)
		}
		j.mu.Lock()
		j.db = nil
		j.mu.Unlock()
	}
	db, st, err := j.openReserved(r)
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	if err := j.probeDB(db, st.last); err != nil {
		return errors.Join(err, db.Close())
	}

	j.setView(db.NewSnapshot())
	j.mu.Lock()
	j.db = db
	j.adopt(st)
	down := time.Since(j.failedAt)
	j.setHealth(nil)
	j.wake() // the failed batch may have reached the disk: Wait callers see it now
	j.mu.Unlock()
	j.recoveries.Add(1)
	j.logger.Info("journal: recovered; appends are accepted again",
		"first_seq", st.first, "last_seq", st.last, "unavailable_for", down.Round(time.Millisecond))
	return nil
}

// probeDB checks a reopened database before appends may use it: nothing
// acknowledged is missing, and a synced write commits.
func (j *Journal) probeDB(db *pebble.DB, last uint64) error {
	if acked := j.lastSeq.Load(); last < acked {
		// Cannot happen while fsync keeps its promise; refuse rather than
		// hand out acknowledged sequence numbers a second time.
		return fmt.Errorf("the reopened database ends at sequence %d, but %d was acknowledged", last, acked)
	}
	b := db.NewBatch()
	defer b.Close()
	if err := b.Set(probeKey, []byte(time.Now().UTC().Format(time.RFC3339Nano)), nil); err != nil {
		return err
	}
	if err := applyBatch(b, pebble.Sync); err != nil {
		return fmt.Errorf("probe write: %w", err)
	}
	return nil
}
