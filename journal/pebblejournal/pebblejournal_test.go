package pebblejournal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal/pebbletest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// phiMarker is embedded in test payloads; it must never show up in logs.
const phiMarker = "PATIENT^SECRET"

func openLog(t *testing.T, dir string, opts Options) *Journal {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func testRecord(i int) *journal.Record {
	return &journal.Record{
		Kind:         journal.KindMessage,
		Time:         time.Unix(1700000000+int64(i), int64(i)),
		ListenerID:   "lst-1",
		ConnectionID: fmt.Sprintf("conn-%d", i%7),
		RemoteAddr:   "10.1.2.3:40000",
		MessageType:  "ADT^A01",
		ControlID:    fmt.Sprintf("CTL%06d", i),
		Payload:      []byte(fmt.Sprintf("MSH|^~\\&|%s|%d\r", phiMarker, i)),
	}
}

func mustAppend(t *testing.T, l *Journal, r *journal.Record) uint64 {
	t.Helper()
	seq, err := l.Append(context.Background(), r)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return seq
}

// readAll reads [from, LastSeq] in pages and checks the sequences are
// contiguous.
func readAll(t *testing.T, l *Journal, from uint64) []journal.Record {
	t.Helper()
	var out []journal.Record
	for {
		page, err := l.Read(from, 1000, 1<<20)
		if err != nil {
			t.Fatalf("Read(%d): %v", from, err)
		}
		if len(page) == 0 {
			return out
		}
		for _, r := range page {
			if r.Seq != from {
				t.Fatalf("Read returned seq %d, want %d", r.Seq, from)
			}
			from++
		}
		out = append(out, page...)
	}
}

func TestAppendReadRoundTrip(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	big := make([]byte, 270<<10)
	for i := range big {
		big[i] = byte(i*7 + i>>8)
	}
	binary := []byte{0x0b, 0x00, 0xff, 0xfe, 0xc3, 0x28, 0x1c, 0x0d}
	recs := []*journal.Record{
		{
			Kind:         journal.KindMessage,
			Time:         time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.FixedZone("CET", 3600)),
			ListenerID:   "listener-a",
			ConnectionID: "conn-1",
			RemoteAddr:   "[2001:db8::1]:2575",
			MessageType:  "ORU^R01^ORU_R01",
			ControlID:    "MSG00001",
			Payload:      binary,
		},
		{Kind: journal.KindAck, Time: time.Unix(0, 1), InstanceID: "sb-2", ListenerID: "b", Payload: []byte{}},
		{Kind: journal.KindMessage, Payload: big, ControlID: "big"},
		{Kind: journal.KindMessage}, // every other field empty, zero time
	}
	for i, r := range recs {
		if seq := mustAppend(t, l, r); seq != uint64(i+1) || r.Seq != seq {
			t.Fatalf("Append #%d: seq %d, r.Seq %d", i, seq, r.Seq)
		}
	}
	if got := l.LastSeq(); got != uint64(len(recs)) {
		t.Fatalf("LastSeq = %d, want %d", got, len(recs))
	}
	got := readAll(t, l, 1)
	if len(got) != len(recs) {
		t.Fatalf("read %d records, want %d", len(got), len(recs))
	}
	for i := range recs {
		sameRecord(t, &got[i], recs[i])
	}

	// Payloads are copies: scribbling on one must not change the store.
	got[0].Payload[0] = 'X'
	again, err := l.Read(1, 1, 0)
	if err != nil || len(again) != 1 || !bytes.Equal(again[0].Payload, binary) {
		t.Fatalf("re-read after modifying a returned payload: %v %+v", err, again)
	}
}

func TestConcurrentAppend(t *testing.T) {
	const writers, perWriter = 64, 200
	l := openLog(t, t.TempDir(), Options{})
	seqs := make([][]uint64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				r := testRecord(w*perWriter + i)
				seq, err := l.Append(context.Background(), r)
				if err != nil {
					t.Errorf("writer %d: Append: %v", w, err)
					return
				}
				seqs[w] = append(seqs[w], seq)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	const total = writers * perWriter
	owner := make([]int, total+1) // seq -> record index
	for w := range writers {
		for i, seq := range seqs[w] {
			if seq < 1 || seq > total || owner[seq] != 0 {
				t.Fatalf("writer %d got seq %d: out of range or duplicate", w, seq)
			}
			if i > 0 && seq <= seqs[w][i-1] {
				t.Fatalf("writer %d: seq %d after %d", w, seq, seqs[w][i-1])
			}
			owner[seq] = w*perWriter + i + 1
		}
	}
	if got := l.LastSeq(); got != total {
		t.Fatalf("LastSeq = %d, want %d", got, total)
	}
	recs := readAll(t, l, 1)
	if len(recs) != total {
		t.Fatalf("read %d records, want %d", len(recs), total)
	}
	for _, r := range recs {
		want := testRecord(owner[r.Seq] - 1)
		want.Seq = r.Seq
		sameRecord(t, &r, want)
	}

	st := l.Stats()
	t.Logf("%d records in %d commits", st.Records, st.Commits)
	if st.Records != total || st.Commits >= st.Records {
		t.Fatalf("Stats = %+v: want %d records in fewer commits", st, total)
	}
}

func TestRestart(t *testing.T) {
	const n = 50
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		mustAppend(t, l, testRecord(i))
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	l = openLog(t, dir, Options{})
	if got := l.LastSeq(); got != n {
		t.Fatalf("LastSeq after reopen = %d, want %d", got, n)
	}
	recs := readAll(t, l, 1)
	if len(recs) != n {
		t.Fatalf("read %d records after reopen, want %d", len(recs), n)
	}
	for i, r := range recs {
		want := testRecord(i)
		want.Seq = uint64(i + 1)
		sameRecord(t, &r, want)
	}
	if seq := mustAppend(t, l, testRecord(n)); seq != n+1 {
		t.Fatalf("first Append after reopen got seq %d, want %d", seq, n+1)
	}
}

func TestNoSync(t *testing.T) {
	dir := t.TempDir()
	// Two records fit under MaxBatchBytes, so every commit holds at most two.
	size := journal.RecordLen(testRecord(10))
	l, err := Open(dir, Options{NoSync: true, MaxBatchRecords: 3, MaxBatchBytes: 2*size + 2})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := l.Append(context.Background(), testRecord(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if st := l.Stats(); st.Records != 20 || st.Commits < 10 {
		t.Fatalf("Stats = %+v; want 20 records in at least 10 commits", st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean Close writes the WAL out, so the records survive it.
	l = openLog(t, dir, Options{})
	if got := len(readAll(t, l, 1)); got != 20 || l.LastSeq() != 20 {
		t.Fatalf("after reopen: %d records, LastSeq %d; want 20", got, l.LastSeq())
	}
}

func TestWait(t *testing.T) {
	t.Run("append", func(t *testing.T) {
		l := openLog(t, t.TempDir(), Options{})
		mustAppend(t, l, testRecord(0))
		if err := l.Wait(context.Background(), 0); err != nil {
			t.Fatalf("Wait for an existing record: %v", err)
		}
		errc := make(chan error, 1)
		go func() { errc <- l.Wait(context.Background(), 1) }()
		mustAppend(t, l, testRecord(1))
		if err := <-errc; err != nil {
			t.Fatalf("Wait: %v", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		l := openLog(t, t.TempDir(), Options{})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- l.Wait(ctx, 0) }()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait after cancel = %v, want context.Canceled", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		l := openLog(t, t.TempDir(), Options{})
		errc := make(chan error, 1)
		go func() { errc <- l.Wait(context.Background(), 0) }()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, journal.ErrClosed) {
			t.Fatalf("Wait after Close = %v, want journal.ErrClosed", err)
		}
		if err := l.Wait(context.Background(), 0); !errors.Is(err, journal.ErrClosed) {
			t.Fatalf("Wait on closed log = %v, want journal.ErrClosed", err)
		}
	})
}

func TestReadPaging(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	sizes := []int{100, 100, 100, 5000, 100, 0, 100}
	for i, n := range sizes {
		mustAppend(t, l, &journal.Record{Kind: journal.KindMessage, ControlID: fmt.Sprint(i), Payload: bytes.Repeat([]byte{byte(i)}, n)})
	}
	seqsOf := func(recs []journal.Record) []uint64 {
		var s []uint64
		for _, r := range recs {
			s = append(s, r.Seq)
		}
		return s
	}
	cases := []struct {
		from       uint64
		maxRecords int
		maxBytes   int
		want       []uint64
	}{
		{1, 2, 1 << 20, []uint64{1, 2}},
		{1, 100, 250, []uint64{1, 2}},
		{1, 100, 300, []uint64{1, 2, 3}},
		{4, 100, 1000, []uint64{4}},        // bigger than maxBytes, still returned
		{3, 100, 1000, []uint64{3}},        // stops before the big one
		{5, 100, 100, []uint64{5, 6}},      // empty payload fits
		{6, 100, 0, []uint64{6}},           // the next one would exceed 0 bytes
		{1, 0, 1 << 20, []uint64{1}},       // non-positive maxRecords reads one
		{7, 100, 1 << 20, []uint64{7}},     // last record
		{8, 100, 1 << 20, nil},             // past the end
		{0, 3, 1 << 20, []uint64{1, 2, 3}}, // 0 means from the start
	}
	for _, c := range cases {
		recs, err := l.Read(c.from, c.maxRecords, c.maxBytes)
		if err != nil {
			t.Fatalf("Read(%d, %d, %d): %v", c.from, c.maxRecords, c.maxBytes, err)
		}
		if got := seqsOf(recs); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("Read(%d, %d, %d) = %v, want %v", c.from, c.maxRecords, c.maxBytes, got, c.want)
		}
	}
}

// lockedBuffer collects log output from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestFaultInjection(t *testing.T) {
	for _, mode := range []string{"sync", "write"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			fs := &pebbletest.FaultFS{FS: vfs.Default}
			var logs lockedBuffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			l, err := Open(dir, Options{FS: fs, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()

			var durable sync.Map // seq -> record index, for every Append that returned nil
			var next atomic.Int64
			appendSome := func(writers, each int) (failures []error) {
				var mu sync.Mutex
				var wg sync.WaitGroup
				for range writers {
					wg.Go(func() {
						for range each {
							i := int(next.Add(1))
							seq, err := l.Append(context.Background(), testRecord(i))
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
			before := l.LastSeq()
			if before != 160 || l.Err() != nil {
				t.Fatalf("LastSeq = %d, Err = %v; want 160, nil", before, l.Err())
			}

			if mode == "sync" {
				fs.FailSyncs.Store(true)
			} else {
				fs.FailWrites.Store(true)
			}
			errs := appendSome(8, 20)
			if len(errs) == 0 {
				t.Fatal("no Append failed while the WAL was failing")
			}
			for _, err := range errs {
				if !errors.Is(err, pebbletest.ErrInjected) || !strings.HasPrefix(err.Error(), "journal: commit: ") {
					t.Fatalf("Append error = %v; want a wrapped injected error", err)
				}
			}
			if got := l.LastSeq(); got != before {
				t.Fatalf("LastSeq moved from %d to %d across a failed commit", before, got)
			}
			if err := l.Err(); !errors.Is(err, pebbletest.ErrInjected) {
				t.Fatalf("Err() = %v, want the injected error", err)
			}

			// Fail closed: the disk is healthy again, but the WAL writer is
			// not, so appends keep failing rather than risking a false ACK.
			fs.FailSyncs.Store(false)
			fs.FailWrites.Store(false)
			if _, err := l.Append(context.Background(), testRecord(0)); !errors.Is(err, pebbletest.ErrInjected) {
				t.Fatalf("Append after failure = %v, want the persistent error", err)
			}
			if err := l.Wait(context.Background(), l.LastSeq()); !errors.Is(err, pebbletest.ErrInjected) {
				t.Fatalf("Wait on failed log = %v, want the persistent error", err)
			}
			if got := readAll(t, l, 1); uint64(len(got)) != before {
				t.Fatalf("read %d committed records from the failed log, want %d", len(got), before)
			}
			if err := l.Close(); err == nil {
				t.Log("Close after failure returned nil")
			}
			if strings.Contains(logs.String(), phiMarker) {
				t.Fatal("payload bytes reached the logger")
			}

			// Reopen on a healthy FS: every record reported durable is there,
			// sequences are gap-free, and appends continue after the last one.
			l2 := openLog(t, dir, Options{})
			recs := readAll(t, l2, 1)
			if uint64(len(recs)) != l2.LastSeq() || l2.LastSeq() < before {
				t.Fatalf("after reopen: %d records, LastSeq %d, want >= %d and equal", len(recs), l2.LastSeq(), before)
			}
			durable.Range(func(k, v any) bool {
				seq, i := k.(uint64), v.(int)
				want := testRecord(i)
				want.Seq = seq
				sameRecord(t, &recs[seq-1], want)
				return true
			})
			t.Logf("%d durable, %d failed, %d present after reopen", before, len(errs)+1, len(recs))
			if seq := mustAppend(t, l2, testRecord(0)); seq != l2.LastSeq() || seq != uint64(len(recs))+1 {
				t.Fatalf("Append after reopen got seq %d, want %d", seq, len(recs)+1)
			}
		})
	}
}

func TestCloseWithBlockedAppenders(t *testing.T) {
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	l := openLog(t, t.TempDir(), Options{FS: fs})
	mustAppend(t, l, testRecord(0))

	entered, release := fs.HoldSyncs()
	defer release()
	inflight := make(chan error, 1)
	go func() {
		_, err := l.Append(context.Background(), testRecord(1))
		inflight <- err
	}()
	<-entered // the committer is now inside the fsync of record 2

	const queued = 10
	queuedErrs := make(chan error, queued)
	for i := range queued {
		go func() {
			_, err := l.Append(context.Background(), testRecord(2+i))
			queuedErrs <- err
		}()
	}
	waitFor(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.queue) == 1 && l.queue[0].n == queued
	})

	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	// Queued appends fail at once, even though the fsync is still held.
	for range queued {
		if err := <-queuedErrs; !errors.Is(err, journal.ErrClosed) {
			t.Fatalf("queued Append = %v, want journal.ErrClosed", err)
		}
	}
	release()
	if err := <-inflight; err != nil {
		t.Fatalf("in-flight Append = %v, want success", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := l.LastSeq(); got != 2 {
		t.Fatalf("LastSeq = %d, want 2", got)
	}
	if _, err := l.Append(context.Background(), testRecord(99)); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("Append after Close = %v, want journal.ErrClosed", err)
	}
	if _, err := l.Read(1, 10, 1<<20); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("Read after Close = %v, want journal.ErrClosed", err)
	}
}

func TestAppendContext(t *testing.T) {
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	l := openLog(t, t.TempDir(), Options{FS: fs})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Append(ctx, testRecord(0)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with done ctx = %v, want context.Canceled", err)
	}
	if got := l.LastSeq(); got != 0 {
		t.Fatalf("a record was committed for an already-cancelled Append (LastSeq %d)", got)
	}

	entered, release := fs.HoldSyncs()
	defer release()
	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, testRecord(1))
		errc <- err
	}()
	<-entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append cancelled during fsync = %v, want context.Canceled", err)
	}
	// As documented, the record is still committed: the caller must not ACK
	// it, and subscribers may see it.
	release()
	if err := l.Wait(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if got := l.LastSeq(); got != 1 {
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
	l := openLog(t, t.TempDir(), Options{})
	for i := range 3 {
		mustAppend(t, l, testRecord(i))
	}
	// Damage the store behind the Journal's back: Read must refuse rather than
	// skip a message or return garbage.
	if err := l.db.Delete(recordKey(nil, 2), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(1, 10, 1<<20); err == nil || !strings.Contains(err.Error(), "record 2 missing") {
		t.Fatalf("Read over a missing record = %v, want a 'missing' error", err)
	}
	if err := l.db.Set(recordKey(nil, 3), []byte{1, 0x80}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(3, 10, 1<<20); !errors.Is(err, journal.ErrMalformedRecord) {
		t.Fatalf("Read of a malformed value = %v, want ErrMalformedRecord", err)
	}
}

// sameRecord fails t unless got equals want field by field (time in UTC).
func sameRecord(t *testing.T, got, want *journal.Record) {
	t.Helper()
	if got.Seq != want.Seq || got.Kind != want.Kind || got.InstanceID != want.InstanceID ||
		!got.Time.Equal(want.Time) || got.Time.Location() != time.UTC ||
		got.ListenerID != want.ListenerID ||
		got.ConnectionID != want.ConnectionID ||
		got.RemoteAddr != want.RemoteAddr ||
		got.MessageType != want.MessageType ||
		got.ControlID != want.ControlID ||
		!bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("record mismatch:\n got %+v\nwant %+v", *got, *want)
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
	check := func(l *Journal) {
		t.Helper()
		got := readAll(t, l, 1)
		if len(got) < len(want) {
			t.Fatalf("read %d records from the version 1 directory, want at least %d", len(got), len(want))
		}
		for i := range want {
			sameRecord(t, &got[i], &want[i])
		}
	}

	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(l)
	next := testRecord(9)
	next.InstanceID = "sb-1"
	if seq := mustAppend(t, l, next); seq != uint64(len(want)+1) {
		t.Fatalf("first new record got seq %d, want %d", seq, len(want)+1)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, Options{})
	check(l)
	got := readAll(t, l, uint64(len(want)+1))
	if len(got) != 1 {
		t.Fatalf("after reopen: %d new records, want 1", len(got))
	}
	sameRecord(t, &got[0], next)
}
