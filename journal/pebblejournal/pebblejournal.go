package pebblejournal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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
	// FS is the filesystem Pebble uses; nil means vfs.Default. Tests use it
	// to inject faults (pebbletest.FaultFS) or to cut power
	// (vfs.NewCrashableMem).
	FS vfs.FS
	// MaxBatchRecords caps the writes in one group commit (records, and
	// the state store's and outbox's operations); default 4096.
	MaxBatchRecords int
	// MaxBatchBytes caps the encoded bytes in one group commit; default
	// 16 MiB. A single larger write is still committed, alone.
	MaxBatchBytes int
	// Logger receives the Journal's and Pebble's logging; nil discards it.
	Logger *slog.Logger
	// RetryMin and RetryMax bound the wait between attempts to recover
	// after a failure: the first comes RetryMin after it, each later one
	// twice as long after the previous, up to RetryMax. Defaults 100 ms and
	// 5 s.
	RetryMin, RetryMax time.Duration
	// MaxAge is how long journal records and final outbox messages
	// (ACCEPTED or FAILED) are kept: records from when they were committed,
	// messages from when they became final. Zero means DefaultMaxAge;
	// negative keeps them whatever their age.
	MaxAge time.Duration
	// MaxBytes bounds the disk space of journal records and outbox
	// messages, as Pebble estimates it: above it, the oldest records and
	// final messages are deleted until they take less than 90% of it.
	// Pending outbox messages are never deleted. Zero means
	// DefaultMaxBytes; negative sets no bound.
	MaxBytes int64
	// AwaitRetentionFloor holds retention back until SetRetentionFloor is
	// first called, so that a reader's needs, which are known only once
	// its state is loaded (durable consumers), are never deleted by age
	// in the pass that would otherwise run at Open (after a long downtime,
	// everything old). serve sets it.
	AwaitRetentionFloor bool
	// OnCommit, if set, is called once per commit that holds journal
	// records, after its appends were released, with how many records it
	// held and how long the oldest of them waited: from the first write
	// of the group to the end of its commit (the queue and the fsync). It
	// runs on the committer's goroutine, so it must be quick (metrics: an
	// observation or two); nothing is timed when it is nil.
	OnCommit func(records int, d time.Duration)

	// Tests only: clock replaces time.Now for retention's ages;
	// flushDelay, when set, replaces deleteFlushDelay; finalsPerPass,
	// when set, replaces maxFinalsPerPass.
	clock         func() time.Time
	flushDelay    time.Duration
	finalsPerPass int
}

// Retention defaults: enough history for an operator to look back a month,
// and a bound that keeps an unattended server from filling its disk.
const (
	DefaultMaxAge         = 30 * 24 * time.Hour
	DefaultMaxBytes int64 = 10 << 30
)

// Journal is a durable, ordered log of journal.Records stored in Pebble. It
// is safe for concurrent use.
type Journal struct {
	dir      string
	fs       vfs.FS
	lock     *pebble.Lock // held from Open to Close, across reopens
	wo       *pebble.WriteOptions
	logger   *slog.Logger
	events   *events
	maxRecs  int
	maxSize  int
	retryMin time.Duration
	retryMax time.Duration

	now           func() time.Time
	flushDelay    time.Duration // Pebble's FlushDelayDeleteRange
	finalsPerPass int
	maxAge        time.Duration // < 0: no bound
	maxBytes      int64         // < 0: no bound
	markEvery     time.Duration // how often the committer writes a time mark
	onCommit      func(records int, d time.Duration)

	lastSeq  atomic.Uint64 // highest committed sequence
	firstSeq atomic.Uint64 // oldest retained sequence (lastSeq+1 when none)
	// epoch counts failures, so stores know to drop what they cached about
	// the database (sequence counters) when the failed writes may be lost.
	epoch atomic.Uint64

	state     *StateStore
	outbox    *Outbox
	consumers *ConsumerStore
	floor     atomic.Pointer[func() uint64] // SetRetentionFloor's; nil: none
	// floorSet is closed by the first SetRetentionFloor; with awaitFloor
	// (Options.AwaitRetentionFloor) retention waits for it.
	floorSet   chan struct{}
	floorOnce  sync.Once
	awaitFloor bool

	dedup    dedupClaims  // duplicate index claims (dedup.go)
	dedupIDs *dedupFilter // which ids the index may hold (dedupfilter.go)
	answers  *AnswerStore // answers.go

	// Counters for Stats.
	appends, refused, commits, records, failures, recoveries atomic.Uint64

	mu       sync.Mutex
	db       *pebble.DB    // nil while recovery has none open; Append takes batches from it under mu
	work     sync.Cond     // signalled when queue becomes non-empty or the Journal closes
	queue    []*group      // groups waiting to commit, oldest first; the last one is open
	nextSeq  uint64        // sequence for the next appended record
	notify   chan struct{} // closed and replaced after every commit and at Close
	health   error         // the failure that stops appends; nil while healthy
	healthCh chan struct{} // closed and replaced whenever health changes, and at Close
	failedAt time.Time     // when health last turned to a failure
	lastMark int64         // unix nanoseconds of the newest time mark
	closed   bool
	// fillTarget, while the committer waits for the head group to fill
	// (nextGroup), is the number of writes it waits for; 0 otherwise.
	// checkFill signals filled (one slot) when the group gets there.
	fillTarget int
	filled     chan struct{}

	failed      chan struct{} // fail signals recoverLoop (buffered, one slot)
	stop        chan struct{} // closed by Close to stop recoverLoop
	recoverDone chan struct{} // closed when recoverLoop exits
	retainDone  chan struct{} // closed when retainLoop exits
	retainMu    sync.Mutex    // one retention pass at a time; guards retained
	retained    RetentionStats
	stopped     chan struct{} // closed when the committer exits
	closeOnce   sync.Once
	closeErr    error

	// dbMu keeps Read from using the DB while Close or recovery closes it.
	// Taken before mu when both are needed.
	dbMu     sync.RWMutex
	dbClosed bool

	// viewMu guards committed: what the stores read (see view).
	viewMu    sync.Mutex
	committed *committedView
}

// Open opens or creates the journal in dir.
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
	if opts.RetryMin <= 0 {
		opts.RetryMin = 100 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Second
	}
	opts.RetryMax = max(opts.RetryMax, opts.RetryMin)
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.clock == nil {
		opts.clock = time.Now
	}
	if opts.flushDelay <= 0 {
		opts.flushDelay = deleteFlushDelay
	}
	if opts.finalsPerPass <= 0 {
		opts.finalsPerPass = maxFinalsPerPass
	}
	j := &Journal{
		now:           opts.clock,
		flushDelay:    opts.flushDelay,
		finalsPerPass: opts.finalsPerPass,
		maxAge:        opts.MaxAge,
		maxBytes:      opts.MaxBytes,
		markEvery:     markInterval(opts.MaxAge),
		onCommit:      opts.OnCommit,
		dir:           dir,
		fs:            opts.FS,
		logger:        opts.Logger,
		events:        &events{logger: opts.Logger},
		wo:            pebble.Sync,
		maxRecs:       opts.MaxBatchRecords,
		maxSize:       opts.MaxBatchBytes,
		retryMin:      opts.RetryMin,
		retryMax:      opts.RetryMax,
		notify:        make(chan struct{}),
		healthCh:      make(chan struct{}),
		failed:        make(chan struct{}, 1),
		filled:        make(chan struct{}, 1),
		stop:          make(chan struct{}),
		recoverDone:   make(chan struct{}),
		retainDone:    make(chan struct{}),
		floorSet:      make(chan struct{}),
		awaitFloor:    opts.AwaitRetentionFloor,
		stopped:       make(chan struct{}),
	}
	j.state = &StateStore{j: j}
	j.outbox = newOutbox(j)
	j.consumers = &ConsumerStore{j: j}
	j.answers = &AnswerStore{j: j}
	if opts.NoSync {
		j.wo = pebble.NoSync
		opts.Logger.Warn("journal: NoSync is set; acknowledged records can be lost on power failure")
	}
	if err := opts.FS.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	// The journal holds the directory lock itself, so no other process can
	// take the directory while recovery reopens the database.
	lock, err := pebble.LockDirectory(dir, opts.FS)
	if err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("journal: open %s: the directory is locked by another process (another switchboard using the same data directory?): %w", dir, err)
		}
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	j.lock = lock
	r, err := j.reserveForOpen(j.replayBytes)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("journal: open %s: %w", dir, err), lock.Close())
	}
	db, st, err := j.openReserved(r)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("journal: open %s: %w", dir, err), lock.Close())
	}
	j.dedupIDs = newDedupFilter()
	if err := j.dedupIDs.load(db); err != nil {
		return nil, errors.Join(fmt.Errorf("journal: open %s: %w", dir, err), db.Close(), lock.Close())
	}
	j.db = db
	j.adopt(st)
	j.setView(db.NewSnapshot())
	j.work.L = &j.mu
	go j.commitLoop()
	go j.recoverLoop()
	go j.retainLoop()
	opts.Logger.Info("journal: opened", "dir", dir, "first_seq", st.first, "last_seq", st.last)
	return j, nil
}

// stored is what a database holds that the journal keeps in memory.
type stored struct {
	first, last uint64 // oldest and newest record; last+1 and last when none
	lastMark    int64  // the newest time mark, 0 when none
}

// adopt takes over what a freshly opened database holds. j.mu must be held
// once the journal is running.
func (j *Journal) adopt(st stored) {
	j.nextSeq = st.last + 1
	j.lastSeq.Store(st.last)
	j.firstSeq.Store(st.first)
	j.lastMark = st.lastMark
}

// openReserved opens the Pebble database in j.dir, with space r reserved
// for the flush of its WAL (see reserveForOpen), and returns it with what
// it holds.
func (j *Journal) openReserved(r *reservation) (*pebble.DB, stored, error) {
	j.events.reserve(r)
	db, err := pebble.Open(j.dir, j.pebbleOptions())
	j.events.reserve(nil)
	r.release()
	if err != nil {
		return nil, stored{}, err
	}
	st, err := readStored(db)
	if err != nil {
		return nil, stored{}, errors.Join(err, db.Close())
	}
	return db, st, nil
}

// readStored finds the oldest and newest record and the newest time mark:
// three seeks, however much the database holds. Retention deletes records
// with range deletions, which the iterator skips without visiting what they
// cover.
func readStored(db *pebble.DB) (stored, error) {
	var st stored
	for _, first := range []bool{false, true} {
		err := firstLast(db, []byte{prefixRecord}, first, func(k, _ []byte) error {
			seq, ok := keySeq(k)
			if !ok {
				return fmt.Errorf("unexpected key %x", k)
			}
			if first {
				st.first = seq
			} else {
				st.last = seq
			}
			return nil
		})
		if err != nil {
			return stored{}, err
		}
	}
	if st.first == 0 { // no record
		st.first = st.last + 1
	}
	err := firstLast(db, []byte{prefixMark}, false, func(k, _ []byte) error {
		if len(k) != keyLen {
			return fmt.Errorf("unexpected key %x", k)
		}
		st.lastMark = int64(binary.BigEndian.Uint64(k[1:]))
		return nil
	})
	return st, err
}

// firstLast calls fn with the first (or, if !first, the last) key under
// prefix and its value, if there is one.
func firstLast(db *pebble.DB, prefix []byte, first bool, fn func(k, v []byte) error) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	ok := it.Last()
	if first {
		ok = it.First()
	}
	if ok {
		var v []byte
		if v, err = it.ValueAndErr(); err == nil {
			err = fn(it.Key(), v)
		}
	}
	return errors.Join(err, it.Close())
}

// pebbleOptions is the configuration of every database the journal opens.
func (j *Journal) pebbleOptions() *pebble.Options {
	po := pebbleOptions(j.fs, j.events)
	po.Lock = j.lock
	po.FlushDelayDeleteRange = j.flushDelay
	return po
}

// pebbleOptions is shared with the benchmarks so the bare-Pebble baseline
// runs on an identically configured engine.
func pebbleOptions(fs vfs.FS, ev *events) *pebble.Options {
	return &pebble.Options{
		FS: fs,
		// Pinned rather than FormatNewest so a Pebble upgrade never ratchets
		// the on-disk format by itself. WAL sync chunks let recovery tell a
		// torn WAL tail from corruption.
		FormatMajorVersion: pebble.FormatWALSyncChunks,
		// MemTableSize stays at Pebble's default (4 MiB). A 64 MiB memtable
		// (fewer flushes) was slower for every synced commit, 0.7-0.8x the
		// minimal durable server at 8 and 64 connections against 0.95x
		// with the default, even after 15 s of warm-up load
		// (docs/performance.md). The likely cause, not proven: each
		// memtable has a WAL file of its own, preallocated to its size,
		// and until Pebble can recycle an obsolete one every fdatasync on
		// a fresh file also commits filesystem metadata (ext4's
		// unwritten-extent conversion was busy during the slow runs).
		// More, smaller flushes are cheap for sequential keys.
		// Retention deletes with range deletions, and their space comes back
		// only once they are flushed (then compactions drop the files they
		// cover whole); without this a quiet journal might wait for hours
		// for its memtable to fill.
		FlushDelayDeleteRange: deleteFlushDelay,
		Logger:                pebbleLogger{ev.logger},
		EventListener:         ev.listener(),
	}
}

// LastSeq returns the highest committed sequence number, 0 when empty.
func (j *Journal) LastSeq(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	j.mu.Lock()
	closed := j.closed
	j.mu.Unlock()
	if closed {
		return 0, journal.ErrClosed
	}
	return j.lastSeq.Load(), nil
}

// FirstSeq returns the oldest retained sequence number: 1 until retention
// deletes records, LastSeq+1 while the journal holds none.
func (j *Journal) FirstSeq(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	j.mu.Lock()
	closed := j.closed
	j.mu.Unlock()
	if closed {
		return 0, journal.ErrClosed
	}
	return j.firstSeq.Load(), nil
}

// Health returns nil while appends work, else the failure that stops them,
// and a channel closed at the next change. See journal.Journal.
func (j *Journal) Health() (error, <-chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return journal.ErrClosed, nil
	}
	return j.health, j.healthCh
}

// setHealth records a change of health and wakes Health watchers. After
// Close there are none: Close closed the channel for good. j.mu must be
// held.
func (j *Journal) setHealth(err error) {
	j.health = err
	if j.closed {
		return
	}
	close(j.healthCh)
	j.healthCh = make(chan struct{})
}

// Stats returns counters since Open. Commits counts every group commit,
// including those that held only the stores' writes; Appends, Refused and
// Records count journal records only.
func (j *Journal) Stats() journal.Stats {
	return journal.Stats{
		Appends:    j.appends.Load(),
		Refused:    j.refused.Load(),
		Commits:    j.commits.Load(),
		Records:    j.records.Load(),
		Failures:   j.failures.Load(),
		Recoveries: j.recoveries.Load(),
	}
}

// DiskBytes is the disk space the database takes now, as Pebble counts
// it (write-ahead log, tables and their obsolete files not yet deleted);
// 0 while recovery has no database open, or after Close.
func (j *Journal) DiskBytes() uint64 {
	j.dbMu.RLock()
	defer j.dbMu.RUnlock()
	if j.dbClosed || j.db == nil {
		return 0
	}
	return j.db.Metrics().DiskSpaceUsage()
}

// Read returns committed records with Seq >= from; see journal.Journal.
// Payloads are copies the caller owns.
func (j *Journal) Read(ctx context.Context, from uint64, maxRecords, maxBytes int) ([]journal.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	j.dbMu.RLock()
	defer j.dbMu.RUnlock()
	if j.dbClosed {
		return nil, journal.ErrClosed
	}
	if j.db == nil {
		// Recovery closed the failed database and could not open it again
		// yet; the cause is in Health.
		return nil, fmt.Errorf("%w: read: no database open while the journal recovers", journal.ErrUnavailable)
	}
	last := j.lastSeq.Load()
	if from == 0 {
		from = j.firstSeq.Load()
	}
	if from > last {
		return nil, nil
	}
	maxRecords = max(maxRecords, 1)
	it, err := j.db.NewIter(&pebble.IterOptions{
		LowerBound: recordKey(nil, from),
		UpperBound: recordKey(nil, last+1), // hides records of failed commits
	})
	if err != nil {
		return nil, fmt.Errorf("journal: read: %w", err)
	}
	// Checked after the iterator took its view of the database: retention
	// raises firstSeq before it deletes, so a view that lacks a record
	// below from is always caught here, never taken for corruption.
	if first := j.firstSeq.Load(); from < first {
		return nil, errors.Join(&journal.NotRetainedError{From: from, First: first}, it.Close())
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

// Wait blocks until LastSeq > after and returns nil. It returns ctx.Err()
// when ctx is done first and journal.ErrClosed when the Journal closes. A
// commit failure does not end it: records arrive again once the journal
// recovers.
func (j *Journal) Wait(ctx context.Context, after uint64) error {
	for {
		// Take the channel before checking LastSeq: a commit that lands in
		// between closes this channel, so no wakeup is missed.
		j.mu.Lock()
		ch, closed := j.notify, j.closed
		j.mu.Unlock()
		switch {
		case closed:
			return journal.ErrClosed
		case j.lastSeq.Load() > after:
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close fails queued appends with journal.ErrClosed, lets an in-flight
// commit finish (its appenders get its result), stops the committer and
// closes Pebble. Later calls return the first call's result.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() { j.closeErr = j.close() })
	return j.closeErr
}

func (j *Journal) close() error {
	j.mu.Lock()
	j.closed = true
	queued := j.queue
	j.queue = nil
	j.wake()
	close(j.healthCh)
	j.work.Broadcast()
	j.signalFill()
	j.mu.Unlock()
	finishAll(queued, journal.ErrClosed) // outside j.mu: their follow-ups take the stores' locks
	close(j.stop)
	<-j.recoverDone
	<-j.retainDone
	<-j.stopped

	j.dbMu.Lock()
	defer j.dbMu.Unlock()
	j.dbClosed = true
	j.setView(nil) // no reader holds it: they hold dbMu
	var err error
	if j.db != nil {
		if err = j.db.Close(); err != nil {
			// Expected after a commit failure: Pebble reports its sticky
			// WAL error.
			err = fmt.Errorf("journal: close: %w", err)
		}
	}
	if lerr := j.lock.Close(); lerr != nil && err == nil {
		err = fmt.Errorf("journal: close: unlock: %w", lerr)
	}
	if err == nil {
		j.logger.Info("journal: closed", "last_seq", j.lastSeq.Load())
	}
	return err
}
