package pebblejournal

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
	"github.com/switchboard-dev/switchboard/service"
)

var _ service.AnswerStore = (*AnswerStore)(nil)

func dedupRecord(i int, id string, window time.Duration) *journal.Record {
	r := testRecord(i)
	r.DedupID, r.DedupWindow = id, window
	return r
}

// dedupKeys returns the ids in the duplicate index and the expiry index,
// as the database holds them.
func dedupKeys(t *testing.T, j *Journal) (index map[string]dedupEntry, expiry map[string]int64) {
	t.Helper()
	index, expiry = map[string]dedupEntry{}, map[string]int64{}
	err := j.readDB(func(db *pebble.DB) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixDedup}, UpperBound: []byte{prefixDedupExpiry + 1}})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			k := it.Key()
			if k[0] == prefixDedup {
				e, err := decodeDedupValue(it.Value())
				if err != nil {
					t.Errorf("key %q: %v", k, err)
				}
				index[string(k[1:])] = e
			} else {
				expiry[string(k[9:])] = keyTime(k)
			}
		}
		return it.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return index, expiry
}

// TestDedupIndexAtomicWithRecord: every record with a DedupID has its index
// entries after a power cut, whatever was in flight, and every entry names
// a record that is there: they are written in one batch.
func TestDedupIndexAtomicWithRecord(t *testing.T) {
	mem := vfs.NewCrashableMem()
	j, err := Open("db", Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := string(rune('a'+w)) + "\x00" + string(rune('0'+i%50)) // ids repeat: some are duplicates
				r := dedupRecord(i, id, time.Hour)
				r.ControlID = id // so the record tells which id it holds
				_, err := j.Append(context.Background(), r)
				var de *journal.DuplicateError
				if err != nil && !errors.As(err, &de) && !errors.Is(err, journal.ErrClosed) {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	waitFor(t, func() bool { return j.lastSeq.Load() >= 200 })
	crash := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(1, 2))})
	close(stop)
	wg.Wait()
	_ = j.Close()

	j2, err := Open("db", Options{FS: crash})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	index, expiry := dedupKeys(t, j2)
	recs := journaltest.ReadAll(t, j2, 1)
	if len(recs) < 200 || len(index) == 0 {
		t.Fatalf("after the crash: %d records, %d index entries; want the synced ones", len(recs), len(index))
	}
	for id, e := range index {
		if e.seq < 1 || e.seq > uint64(len(recs)) {
			t.Fatalf("index entry %q names seq %d; the journal holds 1..%d", id, e.seq, len(recs))
		}
		if got := recs[e.seq-1].ControlID; got != id {
			t.Fatalf("index entry %q names seq %d, which holds %q", id, e.seq, got)
		}
		if expiry[id] != e.expires {
			t.Fatalf("index entry %q expires %d, its expiry key says %d", id, e.expires, expiry[id])
		}
	}
	// Every id appended was stored once: no two records share an index entry,
	// and there are as many entries as records.
	if len(index) != len(recs) {
		t.Fatalf("%d records, %d index entries; want one each", len(recs), len(index))
	}
}

// TestDedupRetention: retention deletes index entries once their window has
// passed, keeps younger ones, and does not delete an entry an Append
// renewed after it expired.
func TestDedupRetention(t *testing.T) {
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: -1, MaxBytes: -1, clock: clock.now})
	mustAppend(t, j, dedupRecord(0, "short", time.Minute))
	mustAppend(t, j, dedupRecord(1, "long", time.Hour))
	mustAppend(t, j, dedupRecord(2, "renewed", time.Minute))
	clock.advance(2 * time.Minute)
	// "renewed" expired, so it is stored again, with a new entry.
	if seq := mustAppend(t, j, dedupRecord(3, "renewed", time.Minute)); seq != 4 {
		t.Fatalf("renewed: seq %d, want 4", seq)
	}
	pass(t, j)
	index, expiry := dedupKeys(t, j)
	if _, ok := index["short"]; ok || expiry["short"] != 0 {
		t.Errorf("expired entry kept: %v %v", index, expiry)
	}
	if index["long"].seq != 2 || index["renewed"].seq != 4 || len(index) != 2 || len(expiry) != 2 {
		t.Errorf("index after the pass = %v, expiry %v; want long -> 2 and renewed -> 4 only", index, expiry)
	}
	appendDuplicate(t, j, dedupRecord(5, "renewed", time.Minute), 4)
	if seq := mustAppend(t, j, dedupRecord(6, "short", time.Minute)); seq != 5 {
		t.Fatalf("short after its entry was deleted: seq %d, want 5", seq)
	}
}

// TestDedupRetentionLeavesRenewedEntry: an expiry key whose entry was renewed
// (left behind, say, by a crash between versions) goes without the entry.
func TestDedupRetentionLeavesRenewedEntry(t *testing.T) {
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: -1, MaxBytes: -1, clock: clock.now})
	mustAppend(t, j, dedupRecord(0, "x", time.Hour))
	// A stale expiry key for x, older than its entry's.
	stale := dedupExpiryKey(clock.now().UnixNano()-1, "x")
	if err := j.write(context.Background(), []op{{kind: opSet, key: stale}}); err != nil {
		t.Fatal(err)
	}
	pass(t, j)
	index, expiry := dedupKeys(t, j)
	if index["x"].seq != 1 || len(expiry) != 1 || expiry["x"] != index["x"].expires {
		t.Fatalf("after the pass: index %v, expiry %v; want x's entry and its own expiry key", index, expiry)
	}
}

// TestDedupRetentionSkipsClaimed: an id whose Append holds its claim is
// left for a later pass.
func TestDedupRetentionSkipsClaimed(t *testing.T) {
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: -1, MaxBytes: -1, clock: clock.now})
	mustAppend(t, j, dedupRecord(0, "x", time.Minute))
	clock.advance(time.Hour)
	c, busy := j.dedup.claim("x")
	if busy != nil {
		t.Fatal("x is claimed")
	}
	pass(t, j)
	if index, _ := dedupKeys(t, j); index["x"].seq != 1 {
		t.Fatalf("entry of a claimed id deleted: %v", index)
	}
	releaseClaims([]*dedupClaim{c})
	pass(t, j)
	if index, _ := dedupKeys(t, j); len(index) != 0 {
		t.Fatalf("entry kept after its claim went: %v", index)
	}
}

func appendDuplicate(t *testing.T, j *Journal, r *journal.Record, want uint64) {
	t.Helper()
	seq, err := j.Append(context.Background(), r)
	var de *journal.DuplicateError
	if !errors.As(err, &de) || de.Seq != want || seq != want {
		t.Fatalf("Append(%q) = %d, %v; want a duplicate of %d", r.DedupID, seq, err, want)
	}
}

// TestDedupNoSync: without fsync (records commit under the lock) the
// index works alike.
func TestDedupNoSync(t *testing.T) {
	j := openJournal(t, t.TempDir(), Options{NoSync: true})
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored := 0
	for range 8 {
		wg.Go(func() {
			_, err := j.Append(context.Background(), dedupRecord(0, "x", time.Hour))
			var de *journal.DuplicateError
			switch {
			case err == nil:
				mu.Lock()
				stored++
				mu.Unlock()
			case !errors.As(err, &de) || de.Seq != 1:
				t.Errorf("Append: %v", err)
			}
		})
	}
	wg.Wait()
	if stored != 1 || j.lastSeq.Load() != 1 {
		t.Fatalf("%d stored, LastSeq %d; want 1", stored, j.lastSeq.Load())
	}
}

// TestDedupWaiterCancelled: an Append waiting for another's claim on its id
// ends with its context.
func TestDedupWaiterCancelled(t *testing.T) {
	j := openJournal(t, t.TempDir(), Options{})
	c, _ := j.dedup.claim("x")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := j.Append(ctx, dedupRecord(0, "x", time.Hour))
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append = %v, want context.Canceled", err)
	}
	releaseClaims([]*dedupClaim{c})
	if seq := mustAppend(t, j, dedupRecord(0, "x", time.Hour)); seq != 1 {
		t.Fatalf("seq %d", seq)
	}
}

// TestDedupClosed: Appends with a DedupID fail with ErrClosed after Close,
// and leave no claim behind.
func TestDedupClosed(t *testing.T) {
	j := openJournal(t, t.TempDir(), Options{})
	_ = j.Close()
	if _, err := j.Append(context.Background(), dedupRecord(0, "x", time.Hour)); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("Append after Close = %v", err)
	}
	if n := len(j.dedup.held); n != 0 {
		t.Fatalf("%d claims held", n)
	}
}

func FuzzDecodeDedupValue(f *testing.F) {
	f.Add(dedupEntry{seq: 1, at: 5, expires: 9}.appendValue(nil))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, dedupValueLen))
	f.Fuzz(func(t *testing.T, v []byte) {
		e, err := decodeDedupValue(v)
		if err != nil {
			if !errors.Is(err, errMalformedDedup) {
				t.Fatalf("error %v does not wrap errMalformedDedup", err)
			}
			return
		}
		if !bytes.Equal(e.appendValue(nil), v) {
			t.Fatalf("%x decodes to %+v, which encodes differently", v, e)
		}
	})
}

// TestAnswers: an answer reads back at once, synced or not, survives a
// reopen, and goes with its record when retention deletes it.
func TestAnswers(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	dir := t.TempDir()
	j := openJournal(t, dir, Options{MaxAge: time.Hour, MaxBytes: -1, clock: clock.now})
	s := j.Answers()
	if _, err := s.Answer(ctx, 1); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Answer of nothing = %v, want ErrNotFound", err)
	}
	for i := range 3 {
		mustAppend(t, j, testRecord(i))
	}
	if err := s.PutAnswer(ctx, 1, []byte("one"), false); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Answer(ctx, 1); err != nil || string(v) != "one" {
		t.Fatalf("unsynced answer = %q, %v", v, err)
	}
	if err := s.PutAnswer(ctx, 2, []byte("two"), true); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAnswer(ctx, 1, []byte("uno"), true); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAnswer(ctx, 0, nil, true); err == nil {
		t.Fatal("PutAnswer(0) succeeded")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openJournal(t, dir, Options{MaxAge: time.Hour, MaxBytes: -1, clock: clock.now})
	s = j.Answers()
	for seq, want := range map[uint64]string{1: "uno", 2: "two"} {
		if v, err := s.Answer(ctx, seq); err != nil || string(v) != want {
			t.Fatalf("Answer(%d) after reopen = %q, %v; want %q", seq, v, err, want)
		}
	}
	// Age retention deletes records 1..3 once a later group's mark is old.
	clock.advance(2 * time.Hour)
	mustAppend(t, j, testRecord(3))
	clock.advance(2 * time.Hour)
	mustAppend(t, j, testRecord(4))
	pass(t, j)
	if first := j.firstSeq.Load(); first < 4 {
		t.Fatalf("FirstSeq = %d after the pass; the test wants 1..3 deleted", first)
	}
	for _, seq := range []uint64{1, 2} {
		if _, err := s.Answer(ctx, seq); !errors.Is(err, journal.ErrNotFound) {
			t.Fatalf("Answer(%d) after its record was deleted = %v, want ErrNotFound", seq, err)
		}
	}
	// Too late: the record is gone, the answer is dropped.
	if err := s.PutAnswer(ctx, 1, []byte("late"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Answer(ctx, 1); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("late answer kept: %v", err)
	}
}
