package pebblejournal

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/switchboard-dev/switchboard/journal"
)

// group is one Pebble batch and the appends in it. All appenders of a group
// share its done channel, so an Append allocates nothing of its own.
type group struct {
	batch *pebble.Batch
	base  uint64 // sequence of the first record
	n     int    // records
	size  int    // encoded bytes
	done  chan struct{}
	err   error // valid after done is closed
}

// Append stores r and returns its sequence number, which it also sets in
// r.Seq. A nil error means r is durable (unless Options.NoSync). r is not
// retained: Append copies it before waiting for the commit.
//
// If ctx is done first, Append returns ctx.Err() without waiting, but the
// record may still be committed and become visible to readers; the caller
// must then not acknowledge it (the sender's retransmission will be a
// duplicate). While the journal is unavailable (see Health), Append fails at
// once with the failure, without touching Pebble.
func (j *Journal) Append(ctx context.Context, r *journal.Record) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if r.Kind == journal.KindUnspecified {
		return 0, fmt.Errorf("%w: no kind", journal.ErrInvalidRecord)
	}
	size := journal.RecordLen(r)
	if size > maxRecordBytes {
		return 0, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", journal.ErrInvalidRecord, size, maxRecordBytes)
	}

	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return 0, journal.ErrClosed
	}
	if err := j.health; err != nil {
		j.mu.Unlock()
		j.refused.Add(1)
		return 0, err
	}
	if !j.wo.Sync {
		return j.appendNoSync(r, size)
	}
	g := j.openGroup(size)
	seq := j.nextSeq
	// Encoding under the lock writes straight into the batch, in sequence
	// order, and means r is not touched after Append returns.
	op := g.batch.SetDeferred(keyLen, size)
	recordKey(op.Key[:0], seq)
	journal.AppendRecord(op.Value[:0], r)
	_ = op.Finish() // only indexed batches can fail here; ours is not indexed
	j.nextSeq++
	g.n++
	g.size += size
	j.mu.Unlock()

	select {
	case <-g.done:
		if g.err != nil {
			if g.err != journal.ErrClosed {
				j.refused.Add(1)
			}
			return 0, g.err
		}
		j.appends.Add(1)
		r.Seq = seq
		return seq, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// openGroup returns the group the next record of the given size joins,
// starting a new one when the open group is full. j.mu must be held.
func (j *Journal) openGroup(size int) *group {
	if n := len(j.queue); n > 0 {
		g := j.queue[n-1]
		if g.n < j.maxRecs && g.size+size <= j.maxSize {
			return g
		}
	}
	g := &group{batch: j.db.NewBatch(), base: j.nextSeq, done: make(chan struct{})}
	j.queue = append(j.queue, g)
	if len(j.queue) == 1 {
		j.work.Signal()
	}
	return g
}

// appendNoSync commits r at once under j.mu (which it releases). Without
// fsync there is nothing to share, so handing records to the committer
// would only add two goroutine switches; the lock keeps commits in
// sequence order.
func (j *Journal) appendNoSync(r *journal.Record, size int) (uint64, error) {
	defer j.mu.Unlock()
	seq := j.nextSeq
	b := j.db.NewBatch()
	op := b.SetDeferred(keyLen, size)
	recordKey(op.Key[:0], seq)
	journal.AppendRecord(op.Value[:0], r)
	_ = op.Finish()
	err := applyBatch(b, j.wo)
	_ = b.Close()
	if err != nil {
		err = j.fail(err, seq, 1)
		j.refused.Add(1)
		return 0, err
	}
	j.nextSeq++
	j.lastSeq.Store(seq)
	j.commits.Add(1)
	j.records.Add(1)
	j.appends.Add(1)
	j.wake()
	r.Seq = seq
	return seq, nil
}

// commitLoop is the single committer. It commits the oldest group as soon as
// the previous commit returns; appends arriving meanwhile join the next
// group. (Writing the next group to the WAL while the previous fsync runs,
// with Pebble's ApplyNoSyncWait, was tried: faster for the storage engine
// alone at 8 writers, slower in the server, where the smaller groups it
// makes cost more CPU than the disk idle time it saves.)
func (j *Journal) commitLoop() {
	defer close(j.stopped)
	var g *group
	for {
		if g == nil {
			j.mu.Lock()
			for len(j.queue) == 0 && !j.closed {
				j.work.Wait()
			}
			g = j.popGroup()
			j.mu.Unlock()
			if g == nil { // closed; Close failed whatever was queued
				return
			}
		}
		err := applyBatch(g.batch, j.wo)
		// Publish this group and take the next in one critical section:
		// released appenders race for j.mu, and the next fsync should not
		// wait behind them.
		j.mu.Lock()
		j.settle(g, err)
		next := j.popGroup()
		j.mu.Unlock()
		g.finish(nil)
		g = next
	}
}

// settle makes a committed group visible, or fails it (and everything
// queued behind it) when err is set. j.mu must be held; the caller then
// releases g's appenders.
func (j *Journal) settle(g *group, err error) {
	if err != nil {
		g.err = j.fail(err, g.base, g.n)
		for _, q := range j.queue {
			q.finish(g.err)
		}
		j.queue = nil
		return
	}
	j.lastSeq.Store(g.base + uint64(g.n) - 1)
	j.commits.Add(1)
	j.records.Add(uint64(g.n))
	j.wake()
}

// popGroup removes and returns the oldest queued group, or nil. j.mu must be
// held.
func (j *Journal) popGroup() *group {
	if len(j.queue) == 0 {
		return nil
	}
	g := j.queue[0]
	j.queue = append(j.queue[:0], j.queue[1:]...)
	return g
}

// fail makes the journal unavailable after a commit of the records
// [first, first+n) failed with cause, hands over to recoverLoop, and returns
// the error appends now get. It logs once per failure, not once per refused
// append. j.mu must be held.
func (j *Journal) fail(cause error, first uint64, n int) error {
	err := fmt.Errorf("%w: commit: %w", journal.ErrUnavailable, cause)
	j.logger.Error("journal: commit failed; appends are refused until the journal recovers",
		"err", cause, "first_seq", first, "records", n)
	j.failures.Add(1)
	j.failedAt = time.Now()
	j.setHealth(err)
	select {
	case j.failed <- struct{}{}:
	default:
	}
	// The failed sequences are free again: nothing is committed after a
	// failure, and numbering resumes after whatever the disk really holds.
	j.nextSeq = j.lastSeq.Load() + 1
	return err
}

// finish releases the group's appenders. A nil err leaves g.err as is.
func (g *group) finish(err error) {
	if err != nil {
		g.err = err
	}
	close(g.done)
	_ = g.batch.Close() // returns it to Pebble's pool; the error is always nil
}

// wake releases Wait callers. j.mu must be held.
func (j *Journal) wake() {
	close(j.notify)
	j.notify = make(chan struct{})
}
