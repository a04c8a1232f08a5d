package pebblejournal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/switchboard-dev/switchboard/journal"
)

var _ journal.Journal = (*Journal)(nil)

// Options configures Open. The zero value is the safe production setting.
type Options struct {
	// NoSync commits without fsync. UNSAFE: power loss or an OS crash can
	// lose records that Append already reported durable, and I/O errors are
	// not reported until Pebble panics. For benchmarks and labs only.
	NoSync bool
	// FS is the filesystem Pebble uses; nil means vfs.Default. Tests use it to
	// inject faults.
	FS vfs.FS
	// MaxBatchRecords caps the records in one group commit; default 4096.
	MaxBatchRecords int
	// MaxBatchBytes caps the encoded bytes in one group commit; default
	// 16 MiB. A single larger record is still committed, alone.
	MaxBatchBytes int
	// Logger receives the Journal's and Pebble's logging; nil discards it.
	Logger *slog.Logger
}

// Stats counts successful group commits since Open.
type Stats struct {
	Commits uint64 // Pebble batch commits (one fsync each unless NoSync)
	Records uint64 // records in those commits
}

// Journal is a durable, ordered log of Records stored in Pebble. It is safe for
// concurrent use.
type Journal struct {
	db      *pebble.DB
	wo      *pebble.WriteOptions
	log     *slog.Logger
	maxRecs int
	maxSize int

	lastSeq atomic.Uint64 // highest committed sequence
	commits atomic.Uint64
	records atomic.Uint64

	mu      sync.Mutex
	work    sync.Cond     // signalled when queue becomes non-empty or the Journal closes
	queue   []*group      // groups waiting to commit, oldest first; the last one is open
	nextSeq uint64        // sequence for the next appended record
	notify  chan struct{} // closed and replaced after every commit, failure and Close
	err     error         // persistent failure; set once
	closed  bool

	stopped   chan struct{} // closed when the committer exits
	closeOnce sync.Once
	closeErr  error

	// dbMu keeps Read from using the DB while Close closes it.
	dbMu     sync.RWMutex
	dbClosed bool
}

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

// Open opens or creates the log in dir.
func Open(dir string, opts Options) (*Journal, error) {
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.MaxBatchRecords <= 0 {
		opts.MaxBatchRecords = 4096
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 16 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := pebble.Open(dir, pebbleOptions(opts.FS, opts.Logger))
	if err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("journal: open %s: the directory is locked by another process (another switchboard using the same data directory?): %w", dir, err)
		}
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	last, err := lastStoredSeq(db)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("journal: open %s: %w", dir, err), db.Close())
	}
	wo := pebble.Sync
	if opts.NoSync {
		wo = pebble.NoSync
		opts.Logger.Warn("journal: NoSync is set; acknowledged records can be lost on power failure")
	}
	l := &Journal{
		db:      db,
		wo:      wo,
		log:     opts.Logger,
		maxRecs: opts.MaxBatchRecords,
		maxSize: opts.MaxBatchBytes,
		nextSeq: last + 1,
		notify:  make(chan struct{}),
		stopped: make(chan struct{}),
	}
	l.work.L = &l.mu
	l.lastSeq.Store(last)
	go l.commitLoop()
	opts.Logger.Info("journal: opened", "dir", dir, "last_seq", last)
	return l, nil
}

// pebbleOptions is shared with the benchmarks so the bare-Pebble baseline
// runs on an identically configured engine.
func pebbleOptions(fs vfs.FS, log *slog.Logger) *pebble.Options {
	return &pebble.Options{
		FS: fs,
		// Pinned rather than FormatNewest so a Pebble upgrade never ratchets
		// the on-disk format by itself. WAL sync chunks let recovery tell a
		// torn WAL tail from corruption.
		FormatMajorVersion: pebble.FormatWALSyncChunks,
		// A large memtable means fewer flushes for a write-heavy log.
		MemTableSize:  64 << 20,
		Logger:        pebbleLogger{log},
		EventListener: eventListener(log),
	}
}

func lastStoredSeq(db *pebble.DB) (uint64, error) {
	it, err := db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixRecord},
		UpperBound: []byte{prefixRecord + 1},
	})
	if err != nil {
		return 0, err
	}
	var last uint64
	if it.Last() {
		seq, ok := keySeq(it.Key())
		if !ok {
			err = fmt.Errorf("unexpected key %x", it.Key())
		}
		last = seq
	}
	return last, errors.Join(err, it.Close())
}

// Append stores r and returns its sequence number, which it also sets in
// r.Seq. A nil error means r is durable (unless Options.NoSync). r is not
// retained: Append copies it before waiting for the commit.
//
// If ctx is done first, Append returns ctx.Err() without waiting, but the
// record may still be committed and become visible to readers; the caller
// must then not acknowledge it (the sender's retransmission will be a
// duplicate). After a commit failure Append returns that failure (see Err).
func (l *Journal) Append(ctx context.Context, r *journal.Record) (uint64, error) {
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

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, journal.ErrClosed
	}
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		return 0, err
	}
	if !l.wo.Sync {
		return l.appendNoSync(r, size)
	}
	g := l.openGroup(size)
	seq := l.nextSeq
	// Encoding under the lock writes straight into the batch, in sequence
	// order, and means r is not touched after Append returns.
	op := g.batch.SetDeferred(keyLen, size)
	recordKey(op.Key[:0], seq)
	journal.AppendRecord(op.Value[:0], r)
	_ = op.Finish() // only indexed batches can fail here; ours is not indexed
	l.nextSeq++
	g.n++
	g.size += size
	l.mu.Unlock()

	select {
	case <-g.done:
		if g.err != nil {
			return 0, g.err
		}
		r.Seq = seq
		return seq, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// openGroup returns the group the next record of the given size joins,
// starting a new one when the open group is full. l.mu must be held.
func (l *Journal) openGroup(size int) *group {
	if n := len(l.queue); n > 0 {
		g := l.queue[n-1]
		if g.n < l.maxRecs && g.size+size <= l.maxSize {
			return g
		}
	}
	g := &group{batch: l.db.NewBatch(), base: l.nextSeq, done: make(chan struct{})}
	l.queue = append(l.queue, g)
	if len(l.queue) == 1 {
		l.work.Signal()
	}
	return g
}

// appendNoSync commits r at once under l.mu (which it releases). Without
// fsync there is nothing to share, so handing records to the committer
// would only add two goroutine switches; the lock keeps commits in
// sequence order.
func (l *Journal) appendNoSync(r *journal.Record, size int) (uint64, error) {
	defer l.mu.Unlock()
	seq := l.nextSeq
	b := l.db.NewBatch()
	op := b.SetDeferred(keyLen, size)
	recordKey(op.Key[:0], seq)
	journal.AppendRecord(op.Value[:0], r)
	_ = op.Finish()
	err := applyBatch(b, l.wo)
	_ = b.Close()
	if err != nil {
		err = fmt.Errorf("journal: commit: %w", err)
		l.log.Error("journal: commit failed; the log no longer accepts appends", "err", err, "seq", seq)
		l.err = err
		l.wake()
		return 0, err
	}
	l.nextSeq++
	l.lastSeq.Store(seq)
	l.commits.Add(1)
	l.records.Add(1)
	l.wake()
	r.Seq = seq
	return seq, nil
}

// commitLoop is the single committer. It commits the oldest group as soon as
// the previous commit returns; appends arriving meanwhile join the next
// group. (Writing the next group to the WAL while the previous fsync runs,
// with Pebble's ApplyNoSyncWait, was tried: faster for the storage engine
// alone at 8 writers, slower in the server, where the smaller groups it
// makes cost more CPU than the disk idle time it saves.)
func (l *Journal) commitLoop() {
	defer close(l.stopped)
	var g *group
	for {
		if g == nil {
			l.mu.Lock()
			for len(l.queue) == 0 && !l.closed {
				l.work.Wait()
			}
			g = l.popGroup()
			l.mu.Unlock()
			if g == nil { // closed; Close failed whatever was queued
				return
			}
		}
		err := applyBatch(g.batch, l.wo)
		// Publish this group and take the next in one critical section:
		// released appenders race for l.mu, and the next fsync should not
		// wait behind them.
		l.mu.Lock()
		l.settle(g, err)
		next := l.popGroup()
		l.mu.Unlock()
		g.finish(nil)
		g = next
	}
}

// settle makes a committed group visible, or fails it (and the log) when
// err is set. l.mu must be held; the caller then releases g's appenders.
func (l *Journal) settle(g *group, err error) {
	if err != nil {
		l.fail(g, err)
		return
	}
	l.lastSeq.Store(g.base + uint64(g.n) - 1)
	l.commits.Add(1)
	l.records.Add(uint64(g.n))
	l.wake()
}

// popGroup removes and returns the oldest queued group, or nil. l.mu must be
// held.
func (l *Journal) popGroup() *group {
	if len(l.queue) == 0 {
		return nil
	}
	g := l.queue[0]
	l.queue = append(l.queue[:0], l.queue[1:]...)
	return g
}

// fail records a commit failure of g and fails everything queued behind it.
// l.mu must be held.
func (l *Journal) fail(g *group, err error) {
	err = fmt.Errorf("journal: commit: %w", err)
	l.log.Error("journal: commit failed; the log no longer accepts appends",
		"err", err, "first_seq", g.base, "records", g.n)
	if l.err == nil {
		l.err = err
	}
	g.err = err
	for _, q := range l.queue {
		q.finish(err)
	}
	l.queue = nil
	// The failed sequences are free again; only a restart can use them,
	// since nothing is committed after a failure.
	l.nextSeq = l.lastSeq.Load() + 1
	l.wake()
}

// finish releases the group's appenders. A nil err leaves g.err as is.
func (g *group) finish(err error) {
	if err != nil {
		g.err = err
	}
	close(g.done)
	_ = g.batch.Close() // returns it to Pebble's pool; the error is always nil
}

// wake releases Wait callers. l.mu must be held.
func (l *Journal) wake() {
	close(l.notify)
	l.notify = make(chan struct{})
}

// LastSeq returns the highest committed sequence number, 0 when empty.
func (l *Journal) LastSeq() uint64 { return l.lastSeq.Load() }

// Err returns the persistent failure that stopped the Journal accepting
// appends, or nil while it is healthy. It stays nil after Close.
func (l *Journal) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Stats returns commit counters, for metrics and tests.
func (l *Journal) Stats() Stats {
	return Stats{Commits: l.commits.Load(), Records: l.records.Load()}
}

// Read returns committed records with Seq >= from, in sequence order: at most
// maxRecords (treated as 1 when not positive), stopping before the total
// payload size would exceed maxBytes, but always at least one record when
// one is available, however large. It returns no records when from >
// LastSeq(). Payloads are copies the caller owns.
func (l *Journal) Read(from uint64, maxRecords, maxBytes int) ([]journal.Record, error) {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbClosed {
		return nil, journal.ErrClosed
	}
	last := l.lastSeq.Load()
	from = max(from, 1)
	if from > last {
		return nil, nil
	}
	maxRecords = max(maxRecords, 1)
	it, err := l.db.NewIter(&pebble.IterOptions{
		LowerBound: recordKey(nil, from),
		UpperBound: recordKey(nil, last+1), // hides records of failed commits
	})
	if err != nil {
		return nil, fmt.Errorf("journal: read: %w", err)
	}
	var (
		out   []journal.Record
		bytes int
		want  = from
	)
	for ok := it.First(); ok && len(out) < maxRecords; ok = it.Next() {
		// Keys are dense, so a missing one means corruption; say so rather
		// than silently skipping a message.
		if seq, _ := keySeq(it.Key()); seq != want {
			err = fmt.Errorf("record %d missing (found key %x)", want, it.Key())
			break
		}
		var v []byte
		if v, err = it.ValueAndErr(); err != nil {
			break
		}
		var r journal.Record
		if r, err = journal.DecodeRecord(want, v); err != nil {
			err = fmt.Errorf("record %d: %w", want, err)
			break
		}
		if len(out) > 0 && bytes+len(r.Payload) > maxBytes {
			break
		}
		bytes += len(r.Payload)
		out = append(out, r)
		want++
	}
	if err = errors.Join(err, it.Close()); err != nil {
		return nil, fmt.Errorf("journal: read: %w", err)
	}
	return out, nil
}

// Wait blocks until LastSeq() > after and returns nil. It returns ctx.Err()
// when ctx is done first, journal.ErrClosed when the Journal is closed, and the failure
// when the Journal fails (see Err), since no more records will arrive then.
func (l *Journal) Wait(ctx context.Context, after uint64) error {
	for {
		// Take the channel before checking LastSeq: a commit that lands in
		// between closes this channel, so no wakeup is missed.
		l.mu.Lock()
		ch, closed, err := l.notify, l.closed, l.err
		l.mu.Unlock()
		switch {
		case l.lastSeq.Load() > after:
			return nil
		case closed:
			return journal.ErrClosed
		case err != nil:
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close fails queued appends with journal.ErrClosed, lets an in-flight commit finish
// (its appenders get its result), stops the committer and closes Pebble.
// Later calls return the first call's result.
func (l *Journal) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}

func (l *Journal) close() error {
	l.mu.Lock()
	l.closed = true
	for _, g := range l.queue {
		g.finish(journal.ErrClosed)
	}
	l.queue = nil
	l.wake()
	l.work.Broadcast()
	l.mu.Unlock()
	<-l.stopped

	l.dbMu.Lock()
	defer l.dbMu.Unlock()
	l.dbClosed = true
	if err := l.db.Close(); err != nil {
		// Expected after a commit failure: Pebble reports its sticky WAL error.
		return fmt.Errorf("journal: close: %w", err)
	}
	l.log.Info("journal: closed", "last_seq", l.lastSeq.Load())
	return nil
}
