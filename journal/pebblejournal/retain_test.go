package pebblejournal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal/pebbletest"
	"github.com/switchboard-dev/switchboard/service/outbox/outboxtest"
)

// forgetBefore deletes the records before cut the way retention does (one
// range deletion through the group commit, firstSeq raised before it
// applies) and returns once that is durable. Retention itself chooses cut
// by time marks; tests choose it directly.
func (j *Journal) forgetBefore(cut uint64) error {
	j.retainMu.Lock()
	defer j.retainMu.Unlock()
	first := j.firstSeq.Load()
	if cut <= first {
		return nil
	}
	if last := j.lastSeq.Load(); cut > last {
		return fmt.Errorf("deleting up to %d would delete the last record, %d", cut, last)
	}
	g, err := j.submit(write{ops: []op{deleteRecords(first, cut)}, epoch: anyEpoch, first: cut})
	if err != nil {
		return err
	}
	return wait(context.Background(), g)
}

// fakeClock is a settable clock for retention's ages.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// pass runs one retention pass to the end (passes that stop at
// finalsPerPass are repeated) and fails t on error.
func pass(t *testing.T, j *Journal) {
	t.Helper()
	for {
		more, err := j.retain()
		if err != nil {
			t.Fatalf("retention pass: %v", err)
		}
		if !more {
			return
		}
	}
}

func appendN(t *testing.T, j *Journal, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		mustAppend(t, j, testRecord(i))
	}
}

func queue(t *testing.T, j *Journal, conn string, i int, state switchboardv1.MessageState, key string) *switchboardv1.Message {
	t.Helper()
	m := outboxtest.Message(conn, i)
	m.IdempotencyKey = key
	m = outboxtest.MustAppend(t, j.Outbox(), m)
	if state != m.GetState() {
		m.State = state
		if err := j.Outbox().Update(context.Background(), m, true); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func notRetained(t *testing.T, j *Journal, from, first uint64) {
	t.Helper()
	_, err := j.Read(context.Background(), from, 10, 1<<20)
	var nr *journal.NotRetainedError
	if !errors.As(err, &nr) || nr.First != first {
		t.Fatalf("Read(%d) = %v; want a NotRetainedError naming %d", from, err, first)
	}
}

// TestRetentionByAge: records committed more than MaxAge ago and outbox
// messages final for longer go; younger ones, pending messages and the
// last record stay; a deleted message's idempotency key is forgotten but
// its sequence is never given out again.
func TestRetentionByAge(t *testing.T) {
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: time.Hour, MaxBytes: -1, clock: clock.now})
	ob := j.Outbox()

	appendN(t, j, 0, 100) // seq 1..100 at t0
	oldDone := queue(t, j, "a", 1, accepted, "key-old")
	oldFailed := queue(t, j, "a", 2, failed, "")
	oldPending := queue(t, j, "a", 3, queued, "")
	otherDone := queue(t, j, "b", 4, accepted, "")
	clock.advance(10 * time.Minute)
	appendN(t, j, 100, 100) // seq 101..200 at t0+10m
	clock.advance(20 * time.Minute)
	newDone := queue(t, j, "a", 5, accepted, "")

	clock.advance(35 * time.Minute) // t0+65m: only what t0 stored is older than an hour
	pass(t, j)
	if got := firstSeq(t, j); got != 1 {
		t.Fatalf("FirstSeq = %d: records of t0 are deleted before anything later was known to be newer", got)
	}
	clock.advance(6 * time.Minute) // t0+71m: the mark of t0+10m is old enough
	pass(t, j)
	if got := firstSeq(t, j); got != 101 {
		t.Fatalf("FirstSeq after an hour and ten minutes = %d, want 101", got)
	}
	notRetained(t, j, 100, 101)
	if recs := readAll(t, j, 101); len(recs) != 100 {
		t.Fatalf("read %d records from 101, want 100", len(recs))
	}
	for _, m := range []*switchboardv1.Message{oldDone, oldFailed, otherDone} {
		if _, err := ob.Get(context.Background(), m.GetConnectionId(), m.GetSequence()); !errors.Is(err, journal.ErrNotFound) {
			t.Fatalf("Get of %s, final for over an hour = %v, want ErrNotFound", m.GetMessageId(), err)
		}
		m.State = queued
		if err := ob.Update(context.Background(), m, true); !errors.Is(err, journal.ErrNotFound) {
			t.Fatalf("Update of deleted %s = %v, want ErrNotFound", m.GetMessageId(), err)
		}
	}
	for _, m := range []*switchboardv1.Message{oldPending, newDone} {
		got, err := ob.Get(context.Background(), m.GetConnectionId(), m.GetSequence())
		if err != nil {
			t.Fatalf("Get of %s = %v; pending and recent messages stay", m.GetMessageId(), err)
		}
		outboxtest.Same(t, got, m)
	}
	all, err := ob.Scan(context.Background(), "", 0, 100)
	if err != nil || len(all) != 2 {
		t.Fatalf("Scan after retention = %d messages, %v; want the 2 left", len(all), err)
	}
	again := queue(t, j, "a", 6, queued, "key-old")
	if again.GetSequence() != 5 {
		t.Fatalf("a deleted message's key queued again got sequence %d, want 5 (never reused)", again.GetSequence())
	}
	if st := j.RetentionStats(); st.Records != 100 || st.Messages != 3 {
		t.Fatalf("RetentionStats = %+v, want 100 records and 3 messages", st)
	}

	// Long after, with nothing new, the records after the newest time mark
	// stay: nothing says they are old. A new record writes a new mark.
	clock.advance(100 * time.Hour)
	pass(t, j)
	if got := firstSeq(t, j); got != 101 {
		t.Fatalf("FirstSeq = %d, want 101", got)
	}
	seq := mustAppend(t, j, testRecord(200))
	clock.advance(2 * time.Hour)
	pass(t, j)
	if got, last := firstSeq(t, j), lastSeq(t, j); got != seq || last != seq {
		t.Fatalf("FirstSeq, LastSeq = %d, %d; want %d, %d: everything but the last record goes", got, last, seq, seq)
	}

	// And after a restart, numbering continues after the one record left.
	j = reopened(t, j)
	if got := firstSeq(t, j); got != seq {
		t.Fatalf("FirstSeq after reopen = %d, want %d", got, seq)
	}
	if next := mustAppend(t, j, testRecord(201)); next != seq+1 {
		t.Fatalf("Append after reopen got %d, want %d", next, seq+1)
	}
}

func firstSeq(t *testing.T, j *Journal) uint64 { return journaltest.FirstSeq(t, j) }

const (
	queued   = switchboardv1.MessageState_MESSAGE_STATE_QUEUED
	accepted = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
	failed   = switchboardv1.MessageState_MESSAGE_STATE_FAILED
)

// randomPayload is incompressible, so that Pebble's size estimate tracks
// what was written.
func randomPayload(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

// TestRetentionBySize: above MaxBytes the oldest records and final
// messages go, in time order, until what is left fits; pending messages
// always stay.
func TestRetentionBySize(t *testing.T) {
	const maxBytes = 1 << 20
	clock := newFakeClock()
	dir := t.TempDir()
	j := openJournal(t, dir, Options{MaxAge: -1, MaxBytes: maxBytes, clock: clock.now})
	rng := rand.New(rand.NewPCG(1, 2))
	var pending []*switchboardv1.Message
	// 4 MiB in 64 steps of 64 KiB, each a minute apart: records, and final
	// and pending outbox messages.
	for step := range 64 {
		for i := range 48 {
			r := testRecord(step*100 + i)
			r.Payload = randomPayload(rng, 1024)
			mustAppend(t, j, r)
		}
		for i := range 16 {
			m := outboxtest.Message("c", step*100+i)
			m.Payload = randomPayload(rng, 1024)
			m = outboxtest.MustAppend(t, j.Outbox(), m)
			if i == 0 {
				pending = append(pending, m)
				continue
			}
			m.State = accepted
			if err := j.Outbox().Update(context.Background(), m, true); err != nil {
				t.Fatal(err)
			}
		}
		clock.advance(time.Minute)
	}
	if err := j.db.Flush(); err != nil { // the estimate counts flushed data
		t.Fatal(err)
	}
	used := func() uint64 {
		t.Helper()
		if err := j.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
			t.Fatal(err)
		}
		first := firstSeq(t, j)
		r, err := j.db.EstimateDiskUsage(recordKey(nil, first), recordKey(nil, lastSeq(t, j)))
		if err != nil {
			t.Fatal(err)
		}
		m, err := j.db.EstimateDiskUsage([]byte{prefixOutMsg}, []byte{prefixOutMsg + 1})
		if err != nil {
			t.Fatal(err)
		}
		return r + m
	}
	before := used()
	pass(t, j)
	after := used()
	t.Logf("estimated use %d KiB before the pass, %d KiB after; MaxBytes %d KiB; FirstSeq %d of %d",
		before>>10, after>>10, maxBytes>>10, firstSeq(t, j), lastSeq(t, j))
	if before <= maxBytes {
		t.Fatalf("the test wrote only %d bytes, not above MaxBytes", before)
	}
	if after > maxBytes || after < maxBytes/2 {
		t.Fatalf("estimated use after the pass = %d, want at most MaxBytes (%d) and not far below", after, maxBytes)
	}
	first := firstSeq(t, j)
	if first == 1 {
		t.Fatal("no record was deleted")
	}
	// What is left is the newest: records from first on, and final
	// messages queued after the oldest records left.
	msgs, err := j.Outbox().Scan(context.Background(), "", 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	oldestRecord, err := j.Read(context.Background(), first, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	step := func(controlID string) int {
		var i int
		fmt.Sscanf(controlID, "CTL%d", &i)
		return i / 100
	}
	keptFrom := step(oldestRecord[0].ControlID)
	finals := 0
	for _, m := range msgs {
		if m.GetState() != accepted {
			continue
		}
		finals++
		if s := step(m.GetControlId()); s < keptFrom-1 {
			t.Fatalf("a final message of step %d is kept but records of step %d were deleted", s, keptFrom-1)
		}
	}
	if finals == 0 || finals == 64*15 {
		t.Fatalf("%d final messages left of %d; want the oldest deleted and the newest kept", finals, 64*15)
	}
	for _, m := range pending {
		if _, err := j.Outbox().Get(context.Background(), "c", m.GetSequence()); err != nil {
			t.Fatalf("pending message %s: %v; pending messages are never deleted", m.GetMessageId(), err)
		}
	}
	st := j.RetentionStats()
	t.Logf("deleted %d records and %d final messages", st.Records, st.Messages)
	if st.Messages == 0 {
		t.Fatal("no final message was deleted")
	}
}

// TestRetentionFreesSpace: the space of deleted records comes back through
// Pebble's own flush and compactions, without anyone asking.
func TestRetentionFreesSpace(t *testing.T) {
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: time.Hour, MaxBytes: -1, clock: clock.now, flushDelay: 10 * time.Millisecond})
	rng := rand.New(rand.NewPCG(3, 4))
	for batch := range 8 {
		for i := range 256 {
			r := testRecord(batch*1000 + i)
			r.Payload = randomPayload(rng, 4096)
			mustAppend(t, j, r)
		}
		if err := j.db.Flush(); err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Minute)
	}
	// The sstables' space: what retention frees. (The WAL's is bounded by
	// the memtable size and recycled.)
	live := func() uint64 {
		m := j.db.Metrics()
		return m.Table.Local.LiveSize + m.Table.Local.ObsoleteSize + m.Table.Local.ZombieSize
	}
	before := live()
	clock.advance(2 * time.Hour)
	mustAppend(t, j, testRecord(9999)) // a mark newer than everything before
	clock.advance(2 * time.Hour)
	pass(t, j)
	if got := firstSeq(t, j); got != 8*256+1 {
		t.Fatalf("FirstSeq = %d, want %d", got, 8*256+1)
	}
	waitFor(t, func() bool { return live() < before/4 })
	t.Logf("sstables: %d KiB before, %d KiB after retention", before>>10, live()>>10)
}

// TestRetentionAndUpdates: while retention's deletion of a final message
// is in flight, an Update of it is refused as not found, rather than
// bringing back a message whose indexes are gone; a final message with an
// update in flight is left for a later pass.
func TestRetentionAndUpdates(t *testing.T) {
	clock := newFakeClock()
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j := openJournal(t, t.TempDir(), Options{FS: fs, MaxAge: time.Hour, MaxBytes: -1, clock: clock.now})
	ob := j.Outbox()
	gone := queue(t, j, "c", 1, accepted, "")
	kept := queue(t, j, "c", 2, accepted, "")
	clock.advance(2 * time.Hour)

	entered, release := fs.HoldSyncs()
	defer release()
	// An unsynced update of kept waits in a group held in its fsync.
	kept.Failure = "an operator's note"
	if err := ob.Update(context.Background(), kept, false); err != nil {
		t.Fatal(err)
	}
	<-entered
	passed := make(chan error, 1)
	go func() { _, err := j.retain(); passed <- err }()
	waitFor(t, func() bool {
		ob.mu.Lock()
		defer ob.mu.Unlock()
		return len(ob.deleting["c"]) > 0
	})
	gone.State = queued
	if err := ob.Update(context.Background(), gone, false); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Update of a message retention is deleting = %v, want ErrNotFound", err)
	}
	release()
	if err := <-passed; err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Get(context.Background(), "c", 1); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get of the deleted message = %v, want ErrNotFound", err)
	}
	got, err := ob.Get(context.Background(), "c", 2)
	if err != nil {
		t.Fatalf("the message with an update in flight was deleted: %v", err)
	}
	outboxtest.Same(t, got, kept)
	pass(t, j) // now it goes
	if _, err := ob.Get(context.Background(), "c", 2); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get after the next pass = %v, want ErrNotFound", err)
	}
}

// TestRetentionPassesAreBounded: a pass deletes at most finalsPerPass
// final messages, and the next passes the rest.
func TestRetentionPassesAreBounded(t *testing.T) {
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: time.Hour, MaxBytes: -1, clock: clock.now, finalsPerPass: 3})
	for i := range 10 {
		queue(t, j, "c", i, accepted, fmt.Sprint("k", i))
	}
	clock.advance(2 * time.Hour)
	passes := 0
	for more := true; more; passes++ {
		var err error
		if more, err = j.retain(); err != nil {
			t.Fatal(err)
		}
	}
	if st := j.RetentionStats(); st.Messages != 10 || passes != 4 {
		t.Fatalf("%d passes deleted %d messages; want 10 in 4", passes, st.Messages)
	}
	if m := queue(t, j, "c", 10, queued, "k3"); m.GetSequence() != 11 {
		t.Fatalf("sequence after deleting every message = %d, want 11", m.GetSequence())
	}
}

// TestReadDuringRetention: readers that follow FirstSeq while retention
// deletes under them see records or NotRetained, never a gap.
func TestReadDuringRetention(t *testing.T) {
	j := openJournal(t, t.TempDir(), Options{})
	appendN(t, j, 0, 1000)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				from := firstSeq(t, j)
				recs, err := j.Read(context.Background(), from, 50, 1<<20)
				if err != nil && !errors.Is(err, journal.ErrNotRetained) {
					t.Errorf("Read(%d) during retention: %v", from, err)
					return
				}
				for i, r := range recs {
					if r.Seq != from+uint64(i) {
						t.Errorf("Read(%d) returned seq %d at %d", from, r.Seq, i)
						return
					}
				}
			}
		})
	}
	for cut := uint64(2); cut < 1000; cut += 7 {
		if err := j.forgetBefore(cut); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestTimeMarksMonotonic: a clock that goes back does not make the time
// marks go back, so their sequences keep growing with their times.
func TestTimeMarksMonotonic(t *testing.T) {
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: time.Hour, clock: clock.now})
	for _, d := range []time.Duration{0, 2 * time.Minute, -time.Hour, 2 * time.Minute, 30 * time.Minute} {
		clock.advance(d)
		mustAppend(t, j, testRecord(0))
	}
	var prevT int64
	var prevS uint64
	err := j.iterate(context.Background(), []byte{prefixMark}, func(k, v []byte) error {
		tm, s := keyTime(k), binary.BigEndian.Uint64(v)
		if tm < prevT || s <= prevS {
			return fmt.Errorf("mark (%d, %d) after (%d, %d)", tm, s, prevT, prevS)
		}
		prevT, prevS = tm, s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
