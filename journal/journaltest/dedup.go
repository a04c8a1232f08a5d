package journaltest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
)

// dedupMessage is Message(i) with a DedupID and a window.
func dedupMessage(i int, id string, window time.Duration) *journal.Record {
	r := Message(i)
	r.DedupID, r.DedupWindow = id, window
	return r
}

// appendDup appends r and fails t unless it is refused as a duplicate of
// want.
func appendDup(t *testing.T, j journal.Journal, r *journal.Record, want uint64) {
	t.Helper()
	seq, err := j.Append(context.Background(), r)
	var de *journal.DuplicateError
	if !errors.As(err, &de) || !errors.Is(err, journal.ErrDuplicate) || de.Seq != want || de.ID != r.DedupID || seq != want || r.Seq != 0 {
		t.Fatalf("Append of duplicate %q = %d, %v (r.Seq %d); want %d and a *DuplicateError naming it", r.DedupID, seq, err, r.Seq, want)
	}
}

// testDuplicates: DedupID suppresses a second record with the same id
// within the window, once, however the appends race, across a reopen, and
// not after the window; other ids and records without one are unaffected.
func testDuplicates(t *testing.T, b Backend) {
	const hour = time.Hour
	t.Run("same id twice", func(t *testing.T) {
		j := open(t, b, b.NewStore(t))
		first := MustAppend(t, j, dedupMessage(0, "a", hour))
		appendDup(t, j, dedupMessage(1, "a", hour), first)
		// A different id, and no id at all, are stored.
		if seq := MustAppend(t, j, dedupMessage(1, "b", hour)); seq != 2 {
			t.Fatalf("other id: seq %d, want 2", seq)
		}
		if seq := MustAppend(t, j, Message(2)); seq != 3 {
			t.Fatalf("no id: seq %d, want 3", seq)
		}
		// A record without an id never collides with one that has it.
		appendDup(t, j, dedupMessage(3, "b", hour), 2)
		holds(t, j, 3, func(seq uint64) int { return int(seq) - 1 })
		if st := j.Stats(); st.Appends != 3 {
			t.Fatalf("Stats.Appends = %d, want 3: duplicates are not appends", st.Appends)
		}
	})
	t.Run("invalid window", func(t *testing.T) {
		j := open(t, b, b.NewStore(t))
		if _, err := j.Append(context.Background(), dedupMessage(0, "a", 0)); !errors.Is(err, journal.ErrInvalidRecord) {
			t.Fatalf("Append with a DedupID and no window = %v, want ErrInvalidRecord", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		// Many ids, each appended by many writers at once, so that copies of
		// one id meet in one group commit and in groups that overlap.
		const ids, writers = 20, 8
		j := open(t, b, b.NewStore(t))
		type result struct {
			seq uint64
			dup bool
		}
		results := make([][]result, ids)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range ids {
					id := fmt.Sprintf("id-%d", (i+w)%ids) // writers start at different ids
					seq, err := j.Append(context.Background(), dedupMessage(i, id, hour))
					var de *journal.DuplicateError
					if err != nil && !errors.As(err, &de) {
						t.Errorf("Append(%s): %v", id, err)
						return
					}
					mu.Lock()
					results[(i+w)%ids] = append(results[(i+w)%ids], result{seq, de != nil})
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for id, rs := range results {
			stored := 0
			for _, r := range rs {
				if !r.dup {
					stored++
				}
				if r.seq != rs[0].seq {
					t.Fatalf("id-%d: appends got sequences %v; want one", id, rs)
				}
			}
			if stored != 1 || len(rs) != writers {
				t.Fatalf("id-%d: %d of %d appends stored; want exactly 1", id, stored, len(rs))
			}
		}
		if got := LastSeq(t, j); got != ids {
			t.Fatalf("LastSeq = %d, want %d: one record per id", got, ids)
		}
		if n := len(ReadAll(t, j, 1)); n != ids {
			t.Fatalf("read %d records, want %d", n, ids)
		}
	})
	t.Run("after reopen", func(t *testing.T) {
		store := b.NewStore(t)
		j, err := b.Open(t, store)
		if err != nil {
			t.Fatal(err)
		}
		first := MustAppend(t, j, dedupMessage(0, "a", hour))
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		j = open(t, b, store)
		appendDup(t, j, dedupMessage(1, "a", hour), first)
		if seq := MustAppend(t, j, dedupMessage(1, "b", hour)); seq != first+1 {
			t.Fatalf("other id after reopen: seq %d, want %d", seq, first+1)
		}
	})
	t.Run("after window", func(t *testing.T) {
		const window = 50 * time.Millisecond
		j := open(t, b, b.NewStore(t))
		first := MustAppend(t, j, dedupMessage(0, "a", window))
		// Within the window of a longer-windowed resend: still a duplicate.
		appendDup(t, j, dedupMessage(1, "a", hour), first)
		time.Sleep(2 * window)
		second := MustAppend(t, j, dedupMessage(1, "a", window))
		if second != first+1 {
			t.Fatalf("Append after the window: seq %d, want %d", second, first+1)
		}
		// The new record now holds the id.
		appendDup(t, j, dedupMessage(2, "a", hour), second)
	})
}
