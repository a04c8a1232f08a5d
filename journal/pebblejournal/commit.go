package pebblejournal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/switchboard-dev/switchboard/journal"
)

// group is one Pebble batch and the writes in it: journal records and the
// other stores' operations (desired state, outbox), committed together by
// one fsync. All waiters of a group share its done channel, so an Append
// allocates nothing of its own.
type group struct {
	db    *pebble.DB // the database the batch is for
	batch *pebble.Batch
	base  uint64 // sequence of the first record, when n > 0
	n     int    // journal records
	ops   int    // writes of every kind, records included (MaxBatchRecords)
	size  int    // encoded bytes
	// settled holds the stores' follow-ups, run once the group has
	// committed (nil) or failed, outside j.mu and before done is closed.
	settled []func(error)
	// claims are the duplicate index claims its writes hold (dedup.go),
	// released when it settles, before done is closed.
	claims []*dedupClaim
	done   chan struct{}
	err    error     // valid after done is closed
	opened time.Time // when its first write came; only with Options.OnCommit
}

// opKind says what an op does.
type opKind uint8

const (
	opSet opKind = iota
	opDelete
	opDeleteRange
)

// An op is one write a store hands to the committer. Keys and values are
// copied into the batch, so the op's slices may be reused once submit
// returns.
type op struct {
	kind opKind
	key  []byte
	val  []byte // opSet: the value; opDeleteRange: the end key (exclusive)
}

func (o op) size() int { return len(o.key) + len(o.val) }

// Append stores r and returns its sequence number, which it also sets in
// r.Seq. A nil error means r is durable (unless Options.NoSync). r is not
// retained: Append copies it before waiting for the commit.
//
// If ctx is done first, Append returns ctx.Err() without waiting, but the
// record may still be committed and become visible to readers; the caller
// must then not acknowledge it (the sender's retransmission will be a
// duplicate). While the journal is unavailable (see Health), Append fails at
// once with the failure, without touching Pebble.
//
// With r.DedupID set, Append first reads the id's index entry (dedup.go)
// and returns the first record's sequence with a *journal.DuplicateError
// when it is younger than r.DedupWindow; otherwise the new entry is
// committed in r's batch.
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

	if r.DedupID != "" {
		return j.appendDedup(ctx, r, size) // dedup.go
	}
	return j.append(ctx, r, size, nil)
}

// append queues r, with the index entry of the claim d it holds (nil: r
// has no DedupID), and waits for its commit. d is released when the group
// settles, or at once when r is refused.
func (j *Journal) append(ctx context.Context, r *journal.Record, size int, d *dedupClaim) (uint64, error) {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		if d != nil {
			releaseClaims([]*dedupClaim{d})
		}
		return 0, journal.ErrClosed
	}
	if err := j.health; err != nil {
		j.mu.Unlock()
		if d != nil {
			releaseClaims([]*dedupClaim{d})
		}
		j.refused.Add(1)
		return 0, err
	}
	if !j.wo.Sync {
		return j.appendNoSync(r, size, d)
	}
	g := j.openGroup(size + d.size())
	seq := j.nextSeq
	if g.n == 0 {
		g.base = seq
	}
	// Encoding under the lock writes straight into the batch, in sequence
	// order, and means r is not touched after Append returns.
	j.encodeRecord(g.batch, r, seq, size)
	j.nextSeq++
	g.n++
	g.ops++
	g.size += size
	if d != nil {
		// The index entry rides with its record: the same batch, not an op
		// of its own (which would make the committer take a view).
		d.encode(g.batch, seq)
		g.size += d.size()
		g.claims = append(g.claims, d)
	}
	j.checkFill()
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

func (j *Journal) encodeRecord(b *pebble.Batch, r *journal.Record, seq uint64, size int) {
	op := b.SetDeferred(keyLen, size)
	recordKey(op.Key[:0], seq)
	journal.AppendRecord(op.Value[:0], r)
	_ = op.Finish() // only indexed batches can fail here; ours is not indexed
}

// A write is what a store hands to the committer: operations to commit
// together, in the next group.
type write struct {
	ops []op
	// settled, if not nil, runs once the group has committed (nil) or
	// failed, before the group's waiters are released. It runs outside
	// j.mu, so it may take a store's lock.
	settled func(error)
	// epoch, unless anyEpoch, is the j.epoch in which the caller read what
	// the ops were computed from; after a failure since, submit refuses
	// them with errEpoch, since what was read may no longer hold.
	epoch uint64
	// first, if not 0, is the oldest record left once the ops commit
	// (retention): firstSeq is raised before the group is applied, so no
	// reader ever finds a deleted record where firstSeq says one is.
	first uint64
	// claims, if any, are released once the group settles (dedup.go).
	claims []*dedupClaim
}

// anyEpoch: a write that holds whatever failures came before.
const anyEpoch = ^uint64(0)

// errEpoch is submit's error for a write computed before a failure and a
// recovery: what it was computed from may have changed, so the caller must
// read again.
var errEpoch = errors.New("journal: the store failed and recovered meanwhile")

// submit adds w to the next group commit, all its ops or none, and returns
// that group. A caller that needs durability waits for the group's done
// channel and then reads its err; one that does not (an unsynced outbox
// update) returns at once, and the ops become durable with the group's
// fsync, which it never waits for.
//
// While the journal is unavailable submit fails at once with the failure
// (wrapping journal.ErrUnavailable), as Append does; after Close with
// journal.ErrClosed.
func (j *Journal) submit(w write) (*group, error) {
	size := 0
	for _, o := range w.ops {
		size += o.size()
	}
	if size > maxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", journal.ErrInvalidRecord, size, maxRecordBytes)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil, journal.ErrClosed
	}
	if err := j.health; err != nil {
		return nil, err
	}
	if w.epoch != anyEpoch && w.epoch != j.epoch.Load() {
		return nil, errEpoch
	}
	// Even without sync (Options.NoSync) these go through the committer,
	// unlike records: settled may take the lock a caller holds.
	g := j.openGroup(size)
	for _, o := range w.ops {
		switch o.kind {
		case opSet:
			_ = g.batch.Set(o.key, o.val, nil) // errors only on indexed or closed batches
		case opDelete:
			_ = g.batch.Delete(o.key, nil)
		case opDeleteRange:
			_ = g.batch.DeleteRange(o.key, o.val, nil)
		}
	}
	g.ops += len(w.ops)
	g.size += size
	if w.settled != nil {
		g.settled = append(g.settled, w.settled)
	}
	g.claims = append(g.claims, w.claims...)
	if w.first > j.firstSeq.Load() {
		// Under j.mu, so before the committer can take the group.
		j.firstSeq.Store(w.first)
	}
	j.checkFill()
	return g, nil
}

// wait waits for g to settle and returns its error, or ctx's if ctx ends
// first (the writes may then still commit).
func wait(ctx context.Context, g *group) error {
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// openGroup returns the group the next write of the given size joins,
// starting a new one when the open group is full. j.mu must be held.
func (j *Journal) openGroup(size int) *group {
	if n := len(j.queue); n > 0 {
		g := j.queue[n-1]
		if g.ops < j.maxRecs && g.size+size <= j.maxSize {
			return g
		}
	}
	g := &group{db: j.db, batch: j.db.NewBatch(), done: make(chan struct{})}
	if j.onCommit != nil {
		g.opened = time.Now()
	}
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
//
// (The stores' writes still go through the committer, so without sync
// there are two committers. That is no worse than NoSync is anyway: Pebble
// reports no WAL failure of an unsynced commit, it panics later; see the
// package documentation.)
func (j *Journal) appendNoSync(r *journal.Record, size int, d *dedupClaim) (uint64, error) {
	seq := j.nextSeq
	g := &group{batch: j.db.NewBatch(), base: seq, n: 1, ops: 1, size: size + d.size()}
	if j.onCommit != nil {
		g.opened = time.Now()
	}
	defer g.batch.Close()
	if d != nil {
		// Released after the commit (deferred calls run last first), and
		// after j.mu is released.
		defer releaseClaims([]*dedupClaim{d})
	}
	j.encodeRecord(g.batch, r, seq, size)
	if d != nil {
		d.encode(g.batch, seq)
	}
	j.markGroup(g)
	if err := applyBatch(g.batch, j.wo); err != nil {
		failed := j.settle(g, err) // the stores' queued groups
		j.mu.Unlock()
		finishAll(failed, g.err)
		j.refused.Add(1)
		return 0, g.err
	}
	j.nextSeq++
	j.settle(g, nil)
	j.mu.Unlock()
	j.appends.Add(1)
	if j.onCommit != nil {
		j.onCommit(1, time.Since(g.opened))
	}
	r.Seq = seq
	return seq, nil
}

// commitLoop is the single committer. It commits the oldest group as soon as
// the previous commit returns, or, under load, after waiting briefly for it
// to fill (nextGroup); writes arriving meanwhile join the next group.
// (Writing the next group to the WAL while the previous fsync runs, with
// Pebble's ApplyNoSyncWait, was tried: faster for the storage engine alone
// at 8 writers, slower in the server, where the smaller groups it makes
// cost more CPU than the disk idle time it saves. It would also commit
// again on a WAL whose sync may just have failed, which Pebble answers with
// a panic that cannot be recovered; see the package doc.)
func (j *Journal) commitLoop() {
	defer close(j.stopped)
	var (
		fill  groupFill
		timer = time.NewTimer(time.Hour)
	)
	timer.Stop()
	g := j.nextGroup(0, time.Time{}, timer)
	for g != nil {
		start := time.Now()
		err := applyBatch(g.batch, j.wo)
		if err == nil && g.ops > g.n {
			// The stores read a snapshot taken after their writes committed
			// (see view), before their waiters and follow-ups see the group
			// done. Records need none: Read stops at lastSeq.
			j.setView(g.db.NewSnapshot())
		}
		end := time.Now()
		target, deadline := fill.next(g.ops, end, end.Sub(start))
		// Publish this group and, when it is ready, take the next in one
		// critical section: released waiters race for j.mu, and the next
		// fsync should not wait behind them.
		j.mu.Lock()
		failed := j.settle(g, err)
		var next *group
		if j.headReady(target) {
			next = j.popGroup()
		}
		j.mu.Unlock()
		g.finish(nil)
		finishAll(failed, g.err)
		if j.onCommit != nil && g.err == nil && g.n > 0 {
			j.onCommit(g.n, time.Since(g.opened))
		}
		if next == nil {
			next = j.nextGroup(target, deadline, timer)
		}
		g = next
	}
}

// groupFill decides how long the committer waits for a group to fill.
//
// MLLP peers send one message and wait for its ACK, so under load the same
// appenders come back right after their group commits. Committing at once
// whatever is queued then settles into groups of very unequal size (at 64
// connections, a third of the fsyncs carried one record while the others
// carried 30 to 64), and every fsync costs the same disk time and, on a
// virtual machine, 100-200 µs of CPU. Like PostgreSQL's commit_delay with
// commit_siblings, the committer waits, but only under load and never
// longer than one commit takes: for the head group to hold the mean size
// of the last two groups, when that is at least minFill writes, and at most
// until the previous commit's duration (capped at maxFillWait) has passed
// since it ended. One appender alone, or a light load, never waits.
type groupFill struct{ prev int }

const (
	minFill     = 4
	maxFillWait = time.Millisecond
)

// next records a commit of ops writes that took took and ended at end, and
// returns the next group's target (0: none) and the time to stop waiting.
func (f *groupFill) next(ops int, end time.Time, took time.Duration) (int, time.Time) {
	target := (f.prev + ops) / 2
	f.prev = ops
	if target < minFill {
		return 0, time.Time{}
	}
	return target, end.Add(min(took, maxFillWait))
}

// headReady reports whether the oldest queued group should be committed now
// rather than waited for: it exists and is full or holds target writes.
// j.mu must be held.
func (j *Journal) headReady(target int) bool {
	return len(j.queue) > 1 || len(j.queue) == 1 && j.queue[0].ops >= target
}

// nextGroup waits for a group to commit and takes it out of the queue: the
// first write's, then, with a target, until the group holds target writes,
// a later group opens (it is full), or deadline passes. It returns nil once
// the journal is closed (Close failed whatever was queued).
func (j *Journal) nextGroup(target int, deadline time.Time, timer *time.Timer) *group {
	j.mu.Lock()
	defer j.mu.Unlock()
	for !j.closed {
		if len(j.queue) == 0 {
			j.work.Wait()
			continue
		}
		wait := time.Until(deadline)
		if target == 0 || wait <= 0 || j.headReady(target) {
			break
		}
		j.fillTarget = target
		j.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-j.filled:
			timer.Stop()
		case <-timer.C:
		}
		j.mu.Lock()
		j.fillTarget = 0
	}
	return j.popGroup()
}

// checkFill wakes the committer when the group it waits for has filled.
// j.mu must be held.
func (j *Journal) checkFill() {
	if j.fillTarget > 0 && j.headReady(j.fillTarget) {
		j.signalFill()
	}
}

// signalFill wakes the committer from nextGroup's wait. j.mu must be held.
func (j *Journal) signalFill() {
	j.fillTarget = 0
	select {
	case j.filled <- struct{}{}:
	default:
	}
}

// settle makes a committed group visible, or fails it when err is set, and
// then also every group queued behind it, which it returns: the caller
// releases g and them once it has released j.mu. j.mu must be held.
func (j *Journal) settle(g *group, err error) (failed []*group) {
	if err != nil {
		first := g.base
		if g.n == 0 {
			first = j.nextSeq
		}
		g.err = j.fail(err, first, g.n)
		failed = j.queue
		j.queue = nil
		return failed
	}
	if g.n > 0 {
		j.lastSeq.Store(g.base + uint64(g.n) - 1)
		j.records.Add(uint64(g.n))
		j.wake()
	}
	j.commits.Add(1)
	return nil
}

// popGroup removes and returns the oldest queued group, or nil, with its
// time mark added. j.mu must be held.
func (j *Journal) popGroup() *group {
	if len(j.queue) == 0 {
		return nil
	}
	g := j.queue[0]
	j.queue = append(j.queue[:0], j.queue[1:]...)
	j.markGroup(g)
	return g
}

// markGroup adds a time mark to a group of records that is about to be
// committed, when the last mark is markEvery old. Every record before the
// group's first was committed before now, so retention by age can delete
// the records before a mark once the mark is old enough, without reading a
// record. Marks never go back in time, even when the clock does, so their
// sequences grow with their keys. j.mu must be held; the group must be out
// of the queue (nothing else writes to its batch).
func (j *Journal) markGroup(g *group) {
	if g.n == 0 {
		return
	}
	now := max(j.now().UnixNano(), j.lastMark)
	if j.lastMark != 0 && now-j.lastMark < int64(j.markEvery) {
		return
	}
	j.lastMark = now
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], g.base)
	_ = g.batch.Set(markKey(now), v[:], nil)
	g.size += keyLen + 8
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
	j.epoch.Add(1)
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

// finish runs g's follow-ups and releases its waiters. A nil err leaves
// g.err as is.
func (g *group) finish(err error) {
	if err != nil {
		g.err = err
	}
	for _, fn := range g.settled {
		fn(g.err)
	}
	releaseClaims(g.claims)
	close(g.done)
	_ = g.batch.Close() // returns it to Pebble's pool; the error is always nil
}

// finishAll fails every group in gs with err.
func finishAll(gs []*group, err error) {
	for _, g := range gs {
		g.finish(err)
	}
}

// wake releases Wait callers. j.mu must be held.
func (j *Journal) wake() {
	close(j.notify)
	j.notify = make(chan struct{})
}
