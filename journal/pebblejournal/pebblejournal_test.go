package pebblejournal

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal/pebbletest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend runs the conformance suite on real Pebble in temporary
// directories, each under a FaultFS the suite can break.
type backend struct {
	mu  sync.Mutex
	fss map[string]*pebbletest.FaultFS
}

func (b *backend) NewStore(t *testing.T) string {
	dir := t.TempDir()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fss[dir] = &pebbletest.FaultFS{FS: vfs.Default}
	return dir
}

func (b *backend) fs(dir string) *pebbletest.FaultFS {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fss[dir]
}

func (b *backend) Open(t *testing.T, dir string) (journal.Journal, error) {
	return Open(dir, Options{FS: b.fs(dir), RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond})
}

// Forget deletes records as retention does: one range deletion committed
// through the group commit, firstSeq raised before it applies.
func (b *backend) Forget(t *testing.T, jj journal.Journal, seq uint64) {
	j := jj.(*Journal)
	if err := j.forgetBefore(seq); err != nil {
		t.Fatalf("deleting records before %d: %v", seq, err)
	}
}

func (b *backend) Break(t *testing.T, dir string)  { b.fs(dir).FailSyncs.Store(true) }
func (b *backend) Repair(t *testing.T, dir string) { b.fs(dir).FailSyncs.Store(false) }

func TestConformance(t *testing.T) {
	journaltest.Run(t, &backend{fss: map[string]*pebbletest.FaultFS{}})
}

var (
	testRecord = journaltest.Message
	sameRecord = journaltest.CheckRecord
	readAll    = journaltest.ReadAll
	mustAppend = journaltest.MustAppend
	lastSeq    = journaltest.LastSeq
)

func openJournal(t *testing.T, dir string, opts Options) *Journal {
	t.Helper()
	j, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

// TestGroupCommit: concurrent appenders share fsyncs.
func TestGroupCommit(t *testing.T) {
	const writers, perWriter = 64, 50
	j := openJournal(t, t.TempDir(), Options{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if _, err := j.Append(context.Background(), testRecord(w*perWriter+i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := j.Stats()
	t.Logf("%d records in %d commits", st.Records, st.Commits)
	if st.Records != writers*perWriter || st.Commits >= st.Records {
		t.Fatalf("Stats = %+v: want %d records in fewer commits", st, writers*perWriter)
	}
}

// TestOnCommit: the hook hears of every commit holding records, once, with
// its record count; DiskBytes reports the database's size.
func TestOnCommit(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		const writers, perWriter = 16, 20
		var calls, records atomic.Int64
		j, err := Open(t.TempDir(), Options{NoSync: noSync, OnCommit: func(n int, d time.Duration) {
			calls.Add(1)
			records.Add(int64(n))
			if n < 1 || d < 0 {
				t.Errorf("OnCommit(%d, %v)", n, d)
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					if _, err := j.Append(context.Background(), testRecord(w*perWriter+i)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if n := j.DiskBytes(); n == 0 {
			t.Errorf("DiskBytes = 0 with %d records", writers*perWriter)
		}
		st := j.Stats()
		if err := j.Close(); err != nil { // the committer has returned: every call was made
			t.Fatal(err)
		}
		if records.Load() != writers*perWriter || calls.Load() > int64(st.Commits) || calls.Load() < 1 {
			t.Errorf("noSync %v: OnCommit got %d records in %d calls; want %d records in at most %d calls",
				noSync, records.Load(), calls.Load(), writers*perWriter, st.Commits)
		}
		if n := j.DiskBytes(); n != 0 {
			t.Errorf("DiskBytes after Close = %d; want 0", n)
		}
	}
}

func TestNoSync(t *testing.T) {
	dir := t.TempDir()
	// Two records fit under MaxBatchBytes, so every commit holds at most two.
	size := journal.RecordLen(testRecord(10))
	j, err := Open(dir, Options{NoSync: true, MaxBatchRecords: 3, MaxBatchBytes: 2*size + 2})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := j.Append(context.Background(), testRecord(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if st := j.Stats(); st.Records != 20 || st.Commits < 10 {
		t.Fatalf("Stats = %+v; want 20 records in at least 10 commits", st)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean Close writes the WAL out, so the records survive it.
	j = openJournal(t, dir, Options{})
	if got := len(readAll(t, j, 1)); got != 20 || lastSeq(t, j) != 20 {
		t.Fatalf("after reopen: %d records, LastSeq %d; want 20", got, lastSeq(t, j))
	}
}

// countingHandler counts log records by level and keeps their text, to
// check what the journal logs and how often.
type countingHandler struct {
	mu     sync.Mutex
	counts map[slog.Level]int
	text   bytes.Buffer
	inner  slog.Handler
}

func newCountingHandler() *countingHandler {
	h := &countingHandler{counts: map[slog.Level]int{}}
	h.inner = slog.NewTextHandler(&h.text, &slog.HandlerOptions{Level: slog.LevelDebug})
	return h
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[r.Level]++
	return h.inner.Handle(ctx, r)
}

// lines returns how many records were logged at level or above.
func (h *countingHandler) lines(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for l, c := range h.counts {
		if l >= level {
			n += c
		}
	}
	return n
}

func (h *countingHandler) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.text.String()
}

// TestRecovery (F9): a WAL write or sync failure, or a full disk, makes the
// journal unavailable: the failing batch and every later Append fail fast,
// nothing is acknowledged that was not committed, committed records stay
// readable, and the failure is logged once however many appends are
// refused (F7). Once the disk works again the journal recovers in-process,
// without a restart: numbering continues after what the disk holds, every
// acknowledged record is there, and the recovery is logged once.
func TestRecovery(t *testing.T) {
	faults := map[string]func(fs *pebbletest.FaultFS, on bool){
		"sync":  func(fs *pebbletest.FaultFS, on bool) { fs.FailSyncs.Store(on) },
		"write": func(fs *pebbletest.FaultFS, on bool) { fs.FailWrites.Store(on) },
		"full":  func(fs *pebbletest.FaultFS, on bool) { fs.Full.Store(on) },
	}
	for mode, fault := range faults {
		t.Run(mode, func(t *testing.T) {
			fs := &pebbletest.FaultFS{FS: vfs.Default}
			logs := newCountingHandler()
			j := openJournal(t, t.TempDir(), Options{FS: fs, Logger: slog.New(logs), RetryMin: time.Millisecond, RetryMax: 20 * time.Millisecond})

			var durable sync.Map // seq -> record index, for every Append that returned nil
			var next atomic.Int64
			appendSome := func(writers, each int) (failures []error) {
				var mu sync.Mutex
				var wg sync.WaitGroup
				for range writers {
					wg.Go(func() {
						for range each {
							i := int(next.Add(1))
							seq, err := j.Append(context.Background(), testRecord(i))
							if err != nil {
								mu.Lock()
								failures = append(failures, err)
								mu.Unlock()
								continue
							}
							durable.Store(seq, i)
						}
					})
				}
				wg.Wait()
				return failures
			}

			if errs := appendSome(8, 20); len(errs) > 0 {
				t.Fatalf("healthy appends failed: %v", errs)
			}
			before := lastSeq(t, j)
			if err, _ := j.Health(); before != 160 || err != nil {
				t.Fatalf("LastSeq = %d, Health = %v; want 160, nil", before, err)
			}
			quiet := logs.lines(slog.LevelWarn)

			_, changed := j.Health()
			fault(fs, true)
			errs := appendSome(8, 50)
			if len(errs) == 0 {
				t.Fatal("no Append failed while the disk was failing")
			}
			for _, err := range errs {
				if !errors.Is(err, journal.ErrUnavailable) {
					t.Fatalf("Append error = %v; want it wrapped with ErrUnavailable", err)
				}
			}
			if got := lastSeq(t, j); got != before {
				t.Fatalf("LastSeq moved from %d to %d across a failed commit", before, got)
			}
			select {
			case <-changed:
			default:
				t.Fatal("the failure did not signal Health watchers")
			}
			herr, changed := j.Health()
			if herr == nil {
				t.Fatal("Health is nil while the disk fails")
			}
			if got := readAll(t, j, 1); uint64(len(got)) != before {
				t.Fatalf("read %d committed records while failing, want %d", len(got), before)
			}
			st := j.Stats()
			if st.Refused != uint64(len(errs)) || st.Failures != 1 || st.Appends != 160 {
				t.Fatalf("Stats = %+v; want %d refused, 1 failure, 160 appends", st, len(errs))
			}
			if n := logs.lines(slog.LevelWarn) - quiet; n != 1 {
				t.Errorf("%d warnings and errors logged for one failure and %d refused appends, want 1:\n%s", n, len(errs), logs)
			}

			start := time.Now()
			fault(fs, false)
			journaltest.WaitHealthy(t, j)
			select {
			case <-changed:
			default:
				t.Fatal("the recovery did not signal Health watchers")
			}
			took := time.Since(start).Round(time.Millisecond)

			// Every record reported durable is there, sequences are gap-free,
			// and appends continue after the last stored one.
			last := lastSeq(t, j)
			t.Logf("%s: %d durable, %d refused (%d ERROR/WARN lines), healthy %v after the disk recovered, LastSeq %d",
				mode, before, len(errs), logs.lines(slog.LevelWarn)-quiet, took, last)
			if last < before {
				t.Fatalf("LastSeq after recovery = %d, want >= %d", last, before)
			}
			seq := mustAppend(t, j, testRecord(0))
			if seq != last+1 {
				t.Fatalf("Append after recovery got seq %d, want %d", seq, last+1)
			}
			recs := readAll(t, j, 1)
			if uint64(len(recs)) != seq {
				t.Fatalf("read %d records after recovery, want %d", len(recs), seq)
			}
			durable.Range(func(k, v any) bool {
				seq, i := k.(uint64), v.(int)
				want := testRecord(i)
				want.Seq = seq
				sameRecord(t, &recs[seq-1], want)
				return true
			})
			if st := j.Stats(); st.Recoveries != 1 {
				t.Fatalf("Stats after recovery = %+v, want 1 recovery", st)
			}
			if n := logs.lines(slog.LevelWarn) - quiet; n != 1 {
				t.Errorf("%d warnings and errors logged for one failure and its recovery, want 1:\n%s", n, logs)
			}
			if !strings.Contains(logs.String(), "journal: recovered") {
				t.Errorf("the recovery was not logged:\n%s", logs)
			}
			if strings.Contains(logs.String(), journaltest.PHIMarker) {
				t.Fatal("payload bytes reached the logger")
			}

			// The recovered journal survives a restart like any other.
			if err := j.Close(); err != nil {
				t.Fatalf("Close after recovery: %v", err)
			}
			j2 := openJournal(t, j.dir, Options{})
			if got := lastSeq(t, j2); got != seq {
				t.Fatalf("LastSeq after restart = %d, want %d", got, seq)
			}
		})
	}
}

// TestCloseWhileFailed: Close works while the journal is unavailable and
// recovery keeps failing, and leaves no goroutine behind (goleak).
func TestCloseWhileFailed(t *testing.T) {
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j, err := Open(t.TempDir(), Options{FS: fs, RetryMin: time.Millisecond, RetryMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, j, testRecord(1))
	fs.FailSyncs.Store(true)
	if _, err := j.Append(context.Background(), testRecord(2)); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Append on a failing disk = %v, want ErrUnavailable", err)
	}
	waitFor(t, func() bool { return j.Stats().Refused >= 1 })
	_ = j.Close() // Pebble may report the sticky WAL error
	if _, err := j.Append(context.Background(), testRecord(3)); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

func TestCloseWithBlockedAppenders(t *testing.T) {
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j := openJournal(t, t.TempDir(), Options{FS: fs})
	mustAppend(t, j, testRecord(0))

	entered, release := fs.HoldSyncs()
	defer release()
	inflight := make(chan error, 1)
	go func() {
		_, err := j.Append(context.Background(), testRecord(1))
		inflight <- err
	}()
	<-entered // the committer is now inside the fsync of record 2

	const queued = 10
	queuedErrs := make(chan error, queued)
	for i := range queued {
		go func() {
			_, err := j.Append(context.Background(), testRecord(2+i))
			queuedErrs <- err
		}()
	}
	waitFor(t, func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return len(j.queue) == 1 && j.queue[0].n == queued
	})

	closed := make(chan error, 1)
	go func() { closed <- j.Close() }()
	// Queued appends fail at once, even though the fsync is still held.
	for range queued {
		if err := <-queuedErrs; !errors.Is(err, journal.ErrClosed) {
			t.Fatalf("queued Append = %v, want ErrClosed", err)
		}
	}
	release()
	if err := <-inflight; err != nil {
		t.Fatalf("in-flight Append = %v, want success", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := j.lastSeq.Load(); got != 2 {
		t.Fatalf("LastSeq = %d, want 2", got)
	}
}

// TestAppendCancelledDuringCommit: an Append whose context ends while its
// fsync runs returns at once, and, as documented, the record may still be
// committed: the caller must not acknowledge it.
func TestAppendCancelledDuringCommit(t *testing.T) {
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j := openJournal(t, t.TempDir(), Options{FS: fs})

	entered, release := fs.HoldSyncs()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := j.Append(ctx, testRecord(1))
		errc <- err
	}()
	<-entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append cancelled during fsync = %v, want context.Canceled", err)
	}
	release()
	if err := j.Wait(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if got := lastSeq(t, j); got != 1 {
		t.Fatalf("LastSeq = %d, want 1", got)
	}
}

// waitFor polls cond; used only to observe internal queue state in tests.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReadReportsDamage(t *testing.T) {
	j := openJournal(t, t.TempDir(), Options{})
	for i := range 3 {
		mustAppend(t, j, testRecord(i))
	}
	ctx := context.Background()
	// Damage the store behind the Journal's back: Read must refuse rather
	// than skip a message or return garbage.
	if err := j.db.Delete(recordKey(nil, 2), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Read(ctx, 1, 10, 1<<20); err == nil || !strings.Contains(err.Error(), "record 2 missing") {
		t.Fatalf("Read over a missing record = %v, want a 'missing' error", err)
	}
	if err := j.db.Set(recordKey(nil, 3), []byte{2, 0x80}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Read(ctx, 3, 10, 1<<20); !errors.Is(err, journal.ErrMalformedRecord) {
		t.Fatalf("Read of a malformed value = %v, want ErrMalformedRecord", err)
	}
}

func TestRecordKeyOrder(t *testing.T) {
	seqs := []uint64{1, 2, 255, 256, 1 << 32, 1<<64 - 1}
	for i := 1; i < len(seqs); i++ {
		a, b := recordKey(nil, seqs[i-1]), recordKey(nil, seqs[i])
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("key(%d) >= key(%d)", seqs[i-1], seqs[i])
		}
		if got, ok := keySeq(b); !ok || got != seqs[i] {
			t.Errorf("keySeq(key(%d)) = %d, %v", seqs[i], got, ok)
		}
	}
	if _, ok := keySeq([]byte{0x02, 0, 0, 0, 0, 0, 0, 0, 1}); ok {
		t.Error("keySeq accepted a foreign prefix")
	}
}

// TestOpensVersion1Directory opens a data directory written by Switchboard
// before record kinds (format version 1, made by journal/record.go at
// 8a692d1: two records flushed to an sstable, two only in the WAL). Every
// record reads back as a message with no instance id, and new records are
// appended after them.
func TestOpensVersion1Directory(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/v1-datadir")); err != nil {
		t.Fatal(err)
	}
	want := []journal.Record{
		{Time: time.Date(2025, 3, 1, 12, 30, 45, 123456789, time.UTC), ListenerID: "adt", ConnectionID: "c-1", RemoteAddr: "10.0.0.7:40001", MessageType: "ADT^A01^ADT_A01", ControlID: "MSG0001", Payload: []byte("MSH|^~\\&|LAB|HOSP|EHR|HOSP|20250301123045||ADT^A01^ADT_A01|MSG0001|P|2.5\r")},
		{Time: time.Date(2025, 3, 1, 12, 30, 46, 0, time.UTC), ListenerID: "adt", ConnectionID: "c-1", RemoteAddr: "10.0.0.7:40001", MessageType: "ORU^R01", ControlID: "MSG0002", Payload: []byte{0x0b, 0x00, 0xff, 0xfe, 0xc3, 0x28, 0x1c, 0x0d}},
		{},
		{Time: time.Unix(0, 1).UTC(), ListenerID: "lab", ConnectionID: "c-2", RemoteAddr: "[2001:db8::1]:2575", ControlID: "\xe9t\xe9", Payload: []byte("MSH|^~\\&|\r")},
	}
	for i := range want {
		want[i].Seq, want[i].Kind = uint64(i+1), journal.KindMessage
	}
	check := func(j *Journal) {
		t.Helper()
		got := readAll(t, j, 1)
		if len(got) < len(want) {
			t.Fatalf("read %d records from the version 1 directory, want at least %d", len(got), len(want))
		}
		for i := range want {
			sameRecord(t, &got[i], &want[i])
		}
	}

	j, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(j)
	next := testRecord(9)
	next.InstanceID = "sb-1"
	if seq := mustAppend(t, j, next); seq != uint64(len(want)+1) {
		t.Fatalf("first new record got seq %d, want %d", seq, len(want)+1)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openJournal(t, dir, Options{})
	check(j)
	got := readAll(t, j, uint64(len(want)+1))
	if len(got) != 1 {
		t.Fatalf("after reopen: %d new records, want 1", len(got))
	}
	sameRecord(t, &got[0], next)
}

// openAndClose opens dir in the background, closes the journal if that
// worked, and sends Open's (or else Close's) error.
func openAndClose(dir string, opts Options) <-chan error {
	done := make(chan error, 1)
	go func() {
		j, err := Open(dir, opts)
		if err == nil {
			err = j.Close()
		}
		done <- err
	}()
	return done
}

// TestOpenOnFullDisk (F2): opening a directory whose WAL holds records that
// must be flushed, on a full disk, returns a clear error in bounded time
// and with bounded logging (before: Pebble retried the flush thousands of
// times a second, logging each, and Open never returned). Once space is
// freed, Open succeeds and every record is there.
func TestOpenOnFullDisk(t *testing.T) {
	dir := closedWithWAL(t, 200)
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	fs.Full.Store(true)
	logs := newCountingHandler()
	start := time.Now()
	opened := openAndClose(dir, Options{FS: fs, Logger: slog.New(logs)})
	var err error
	select {
	case err = <-opened:
	case <-time.After(10 * time.Second):
		n := logs.lines(slog.LevelWarn)
		fs.Full.Store(false) // let the stuck Open finish, so nothing leaks
		<-opened
		t.Fatalf("Open on a full disk did not return in 10 s; %d warnings and errors logged", n)
	}
	took := time.Since(start)
	t.Logf("Open on a full disk: %v after %v, %d log lines (%d warnings and errors)",
		err, took.Round(time.Millisecond), logs.lines(slog.LevelDebug), logs.lines(slog.LevelWarn))
	if err == nil || !strings.Contains(err.Error(), "disk full while replaying the write-ahead log") || !strings.Contains(err.Error(), dir) {
		t.Errorf("Open on a full disk = %v; want it to say the disk is full and where", err)
	}
	if n := logs.lines(slog.LevelWarn); n > 2 {
		t.Errorf("%d warnings and errors logged by a failed Open, want at most 2:\n%s", n, logs)
	}

	fs.Full.Store(false)
	j := openJournal(t, dir, Options{FS: fs})
	if got := len(readAll(t, j, 1)); got != 200 {
		t.Fatalf("after freeing space: %d records, want 200", got)
	}
}

// sstFS fails the creation of sstables (flush output) while failing
// reports true, and records when the journal's space reservation is
// removed.
type sstFS struct {
	vfs.FS
	err      error
	failing  func(*sstFS) bool
	attempts atomic.Int64 // sstable creations refused
	released atomic.Bool  // the reservation was removed
}

func (fs *sstFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if strings.HasSuffix(name, ".sst") && fs.failing(fs) {
		fs.attempts.Add(1)
		return nil, &os.PathError{Op: "create", Path: name, Err: fs.err}
	}
	return fs.FS.Create(name, c)
}

func (fs *sstFS) Remove(name string) error {
	if fs.PathBase(name) == reserveFile {
		fs.released.Store(true)
	}
	return fs.FS.Remove(name)
}

// closedWithWAL returns a directory whose WAL holds n records that the
// next Open must flush.
func closedWithWAL(t *testing.T, n int) string {
	dir := t.TempDir()
	j := openJournal(t, dir, Options{})
	for i := range n {
		mustAppend(t, j, testRecord(i))
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestOpenUsesReservedSpace: when the disk fills up between the space check
// and the flush Pebble runs while opening, the journal gives that flush the
// space it reserved, and Open succeeds instead of retrying for ever.
func TestOpenUsesReservedSpace(t *testing.T) {
	dir := closedWithWAL(t, 100)
	fs := &sstFS{FS: vfs.Default, err: syscall.ENOSPC, failing: func(fs *sstFS) bool { return !fs.released.Load() }}
	logs := newCountingHandler()
	j := openJournal(t, dir, Options{FS: fs, Logger: slog.New(logs)})
	if got := len(readAll(t, j, 1)); got != 100 {
		t.Fatalf("read %d records, want 100", got)
	}
	if n := fs.attempts.Load(); n != 1 {
		t.Errorf("%d flushes failed for want of space, want 1 (then the reservation is released)", n)
	}
	if n := logs.lines(slog.LevelWarn); n != 1 || !strings.Contains(logs.String(), "released the space reserved") {
		t.Errorf("%d warnings and errors, want the one about the reservation:\n%s", n, logs)
	}
}

// TestFlushFailureBackoff: a flush that keeps failing is retried with
// backoff and logged once, not thousands of times a second; when it works
// again that is logged once too.
func TestFlushFailureBackoff(t *testing.T) {
	dir := closedWithWAL(t, 100)
	var allow atomic.Bool
	defer allow.Store(true) // so Open ends even if the test fails early
	fs := &sstFS{FS: vfs.Default, err: syscall.EIO, failing: func(*sstFS) bool { return !allow.Load() }}
	logs := newCountingHandler()
	start := time.Now()
	opened := openAndClose(dir, Options{FS: fs, Logger: slog.New(logs)})
	waitFor(t, func() bool { return fs.attempts.Load() >= 4 })
	failing := time.Since(start)
	allow.Store(true)
	if err := <-opened; err != nil {
		t.Fatalf("Open once flushing works again: %v", err)
	}
	t.Logf("%d failed flushes in %v", fs.attempts.Load(), failing.Round(time.Millisecond))
	if e := logs.lines(slog.LevelError); e != 1 || !strings.Contains(logs.String(), "flushing to disk works again") {
		t.Errorf("%d errors logged for one failing flush, want 1, and its end:\n%s", e, logs)
	}
}

// TestCloseDuringFailureOrRecovery: Close may come while a commit is about
// to fail or while a recovery is about to succeed; either finishes after
// Close without harm (no panic, no goroutine left), and the journal stays
// closed.
func TestCloseDuringFailureOrRecovery(t *testing.T) {
	closing := func(t *testing.T, j *Journal) <-chan error {
		closed := make(chan error, 1)
		go func() { closed <- j.Close() }()
		waitFor(t, func() bool {
			j.mu.Lock()
			defer j.mu.Unlock()
			return j.closed
		})
		return closed
	}
	t.Run("failing commit", func(t *testing.T) {
		fs := &pebbletest.FaultFS{FS: vfs.Default}
		j := openJournal(t, t.TempDir(), Options{FS: fs})
		entered, release := fs.HoldSyncs()
		defer release()
		fs.FailSyncs.Store(true)
		appended := make(chan error, 1)
		go func() {
			_, err := j.Append(context.Background(), testRecord(1))
			appended <- err
		}()
		<-entered
		closed := closing(t, j)
		release()
		if err := <-appended; !errors.Is(err, journal.ErrUnavailable) {
			t.Errorf("Append whose sync failed during Close = %v, want ErrUnavailable", err)
		}
		<-closed
		if err, _ := j.Health(); !errors.Is(err, journal.ErrClosed) {
			t.Errorf("Health after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("recovery", func(t *testing.T) {
		fs := &pebbletest.FaultFS{FS: vfs.Default}
		j := openJournal(t, t.TempDir(), Options{FS: fs, RetryMin: time.Millisecond, RetryMax: time.Millisecond})
		mustAppend(t, j, testRecord(1))
		fs.FailSyncs.Store(true)
		if _, err := j.Append(context.Background(), testRecord(2)); !errors.Is(err, journal.ErrUnavailable) {
			t.Fatalf("Append on a failing disk = %v, want ErrUnavailable", err)
		}
		entered, release := fs.HoldSyncs()
		defer release()
		fs.FailSyncs.Store(false)
		<-entered // recovery is reopening: its WAL sync is held
		closed := closing(t, j)
		release()
		if err := <-closed; err != nil {
			t.Errorf("Close during recovery: %v", err)
		}
		if _, err := j.Append(context.Background(), testRecord(3)); !errors.Is(err, journal.ErrClosed) {
			t.Errorf("Append after Close = %v, want ErrClosed", err)
		}
	})
}

func TestGroupFillTarget(t *testing.T) {
	end := time.Unix(100, 0)
	var f groupFill
	for _, step := range []struct {
		ops    int
		took   time.Duration
		target int
		wait   time.Duration
	}{
		{1, time.Millisecond, 0, 0},                              // one appender: never wait
		{1, time.Millisecond, 0, 0},                              // still light
		{40, 500 * time.Microsecond, 20, 500 * time.Microsecond}, // the mean of 1 and 40
		{1, 3 * time.Millisecond, 20, maxFillWait},               // a slow commit caps the wait
		{6, time.Millisecond, 0, 0},                              // mean 3 < minFill
	} {
		target, deadline := f.next(step.ops, end, step.took)
		if target != step.target {
			t.Fatalf("after a group of %d: target %d, want %d", step.ops, target, step.target)
		}
		if target > 0 && deadline.Sub(end) != step.wait {
			t.Fatalf("after a group of %d: waits %v, want %v", step.ops, deadline.Sub(end), step.wait)
		}
	}
}
