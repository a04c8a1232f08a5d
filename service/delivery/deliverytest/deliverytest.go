// Package deliverytest is the conformance suite every delivery.Store
// backend must pass. It is never used by production code.
//
// A backend's test runs it with a function that opens a new, empty store,
// and, if the backend keeps consumers across a restart, one that reopens
// it:
//
//	func TestConsumerStoreConformance(t *testing.T) { deliverytest.Run(t, open, reopen) }
//
// The suite checks what delivery.Manager relies on, as a user of the
// interface can observe it: Save replaces a consumer's state and applies
// its dead letter changes (additions, then deletions) at once, synced or
// not; Load by name; DeadLetters by sequence, paged with after and n, kept
// apart per consumer (also for names that prefix one another); Delete of
// state and dead letters; copies both ways; concurrent writers;
// cancellation; and, with reopen, that everything a synced Save or a
// Delete returned for survives a restart.
package deliverytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/service/delivery"
)

// Run runs the suite. open returns a new, empty store for one test (and
// arranges for it to be closed when the test ends). reopen, when not nil,
// closes the storage s is kept in and returns a store opened again on the
// same storage, as after a restart; without it the durability test is
// skipped (an in-memory store).
func Run(t *testing.T, open func(t *testing.T) delivery.Store, reopen func(t *testing.T, s delivery.Store) delivery.Store) {
	s := suite{open: open, reopen: reopen}
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"Empty", s.testEmpty},
		{"SaveAndLoad", s.testSaveAndLoad},
		{"DeadLetters", s.testDeadLetters},
		{"AddThenDelete", s.testAddThenDelete},
		{"Unsynced", s.testUnsynced},
		{"Delete", s.testDelete},
		{"PrefixNames", s.testPrefixNames},
		{"StopsAtError", s.testStopsAtError},
		{"Copies", s.testCopies},
		{"Concurrent", s.testConcurrent},
		{"Contexts", s.testContexts},
		{"Reopen", s.testReopen},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	open   func(*testing.T) delivery.Store
	reopen func(*testing.T, delivery.Store) delivery.Store
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// dead returns a dead letter for seq, with a time that survives any
// backend's encoding.
func dead(seq uint64, deliveries uint32) delivery.DeadLetter {
	return delivery.DeadLetter{Seq: seq, Deliveries: deliveries, Time: time.Date(2026, 3, 1, 12, 0, 0, int(seq), time.UTC)}
}

func save(t *testing.T, s delivery.Store, name string, state []byte, add []delivery.DeadLetter, del []uint64, sync bool) {
	t.Helper()
	if err := s.Save(ctx(t), name, state, add, del, sync); err != nil {
		t.Fatalf("Save(%q, sync %v): %v", name, sync, err)
	}
}

// load returns every consumer's state, as "name=state" in Load's order.
func load(t *testing.T, s delivery.Store) []string {
	t.Helper()
	var out []string
	err := s.Load(ctx(t), func(name string, state []byte) error {
		out = append(out, name+"="+string(state))
		return nil
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return out
}

func sameLoad(t *testing.T, s delivery.Store, want ...string) {
	t.Helper()
	if got := load(t, s); !slices.Equal(got, want) {
		t.Fatalf("Load = %q, want %q", got, want)
	}
}

func deadLetters(t *testing.T, s delivery.Store, name string, after uint64, n int) []delivery.DeadLetter {
	t.Helper()
	d, err := s.DeadLetters(ctx(t), name, after, n)
	if err != nil {
		t.Fatalf("DeadLetters(%q, %d, %d): %v", name, after, n, err)
	}
	return d
}

func sameDead(t *testing.T, s delivery.Store, name string, after uint64, n int, want ...delivery.DeadLetter) {
	t.Helper()
	got := deadLetters(t, s, name, after, n)
	if !slices.EqualFunc(got, want, func(a, b delivery.DeadLetter) bool {
		return a.Seq == b.Seq && a.Deliveries == b.Deliveries && a.Time.Equal(b.Time)
	}) {
		t.Fatalf("DeadLetters(%q, after %d, n %d) = %v, want %v", name, after, n, got, want)
	}
}

func (s suite) testEmpty(t *testing.T) {
	st := s.open(t)
	sameLoad(t, st)
	sameDead(t, st, "nobody", 0, 0)
	if err := st.Delete(ctx(t), "nobody"); err != nil {
		t.Fatalf("Delete of a missing consumer: %v", err)
	}
}

// testSaveAndLoad: Save replaces a consumer's state; Load returns every
// consumer by name.
func (s suite) testSaveAndLoad(t *testing.T) {
	st := s.open(t)
	save(t, st, "orders", []byte("v1"), nil, nil, true)
	save(t, st, "adt", []byte("a1"), nil, nil, true)
	save(t, st, "orders", []byte("v2"), nil, nil, true)
	save(t, st, "zeta", []byte{}, nil, nil, true)
	sameLoad(t, st, "adt=a1", "orders=v2", "zeta=")
}

// testDeadLetters: additions by sequence, paging with after and n, an
// addition of a sequence that is there replaces it, deletions, deletions
// of what is not there are ignored.
func (s suite) testDeadLetters(t *testing.T) {
	st := s.open(t)
	save(t, st, "c", []byte("s"), []delivery.DeadLetter{dead(30, 5), dead(10, 5)}, nil, true)
	save(t, st, "c", []byte("s"), []delivery.DeadLetter{dead(20, 3)}, nil, true)
	sameDead(t, st, "c", 0, 0, dead(10, 5), dead(20, 3), dead(30, 5))
	sameDead(t, st, "c", 0, 2, dead(10, 5), dead(20, 3))
	sameDead(t, st, "c", 10, 1, dead(20, 3))
	sameDead(t, st, "c", 20, 10, dead(30, 5))
	sameDead(t, st, "c", 30, 10)
	sameDead(t, st, "c", ^uint64(0), 10)
	save(t, st, "c", []byte("s"), []delivery.DeadLetter{dead(20, 7)}, []uint64{10, 99}, true)
	sameDead(t, st, "c", 0, 0, dead(20, 7), dead(30, 5))
	sameDead(t, st, "other", 0, 0)
}

// testAddThenDelete: in one Save, deletions come after additions.
func (s suite) testAddThenDelete(t *testing.T) {
	st := s.open(t)
	save(t, st, "c", []byte("s"), []delivery.DeadLetter{dead(1, 1), dead(2, 1)}, []uint64{2}, true)
	sameDead(t, st, "c", 0, 0, dead(1, 1))
	save(t, st, "c", []byte("s"), []delivery.DeadLetter{dead(2, 1), dead(3, 1)}, []uint64{2}, false)
	sameDead(t, st, "c", 0, 0, dead(1, 1), dead(3, 1))
}

// testUnsynced: an unsynced Save is readable as soon as it returns, and a
// later synced one makes everything durable in order.
func (s suite) testUnsynced(t *testing.T) {
	st := s.open(t)
	for i := range 50 {
		save(t, st, "c", fmt.Appendf(nil, "state %d", i), []delivery.DeadLetter{dead(uint64(i+1), 2)}, nil, false)
		sameLoad(t, st, fmt.Sprintf("c=state %d", i))
		if d := deadLetters(t, st, "c", uint64(i), 0); len(d) != 1 || d[0].Seq != uint64(i+1) {
			t.Fatalf("after unsynced Save %d: DeadLetters = %v", i, d)
		}
	}
	save(t, st, "c", []byte("last"), nil, []uint64{1}, false)
	sameLoad(t, st, "c=last")
	if d := deadLetters(t, st, "c", 0, 0); len(d) != 49 || d[0].Seq != 2 {
		t.Fatalf("DeadLetters after deleting 1 unsynced: %d, first %v", len(d), d)
	}
	save(t, st, "c", []byte("synced"), nil, nil, true)
	sameLoad(t, st, "c=synced")
	if s.reopen != nil {
		st = s.reopen(t, st)
		sameLoad(t, st, "c=synced")
		if d := deadLetters(t, st, "c", 0, 0); len(d) != 49 {
			t.Fatalf("after reopen: %d dead letters, want 49", len(d))
		}
	}
}

// testDelete: Delete removes state and dead letters of one consumer only;
// a later Save starts afresh.
func (s suite) testDelete(t *testing.T) {
	st := s.open(t)
	save(t, st, "a", []byte("a"), []delivery.DeadLetter{dead(1, 1), dead(2, 1)}, nil, true)
	save(t, st, "b", []byte("b"), []delivery.DeadLetter{dead(1, 1)}, nil, true)
	save(t, st, "a", []byte("a2"), []delivery.DeadLetter{dead(3, 1)}, nil, false) // unsynced, then deleted
	if err := st.Delete(ctx(t), "a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	sameLoad(t, st, "b=b")
	sameDead(t, st, "a", 0, 0)
	sameDead(t, st, "b", 0, 0, dead(1, 1))
	save(t, st, "a", []byte("new"), nil, nil, true)
	sameLoad(t, st, "a=new", "b=b")
	sameDead(t, st, "a", 0, 0)
}

// testPrefixNames: a consumer whose name prefixes another's shares
// nothing with it.
func (s suite) testPrefixNames(t *testing.T) {
	st := s.open(t)
	save(t, st, "ab", []byte("ab"), []delivery.DeadLetter{dead(1, 1)}, nil, true)
	save(t, st, "a", []byte("a"), []delivery.DeadLetter{dead(2, 1)}, nil, true)
	save(t, st, "a b", []byte("a b"), []delivery.DeadLetter{dead(3, 1)}, nil, true)
	sameLoad(t, st, "a=a", "a b=a b", "ab=ab")
	sameDead(t, st, "a", 0, 0, dead(2, 1))
	sameDead(t, st, "ab", 0, 0, dead(1, 1))
	if err := st.Delete(ctx(t), "a"); err != nil {
		t.Fatal(err)
	}
	sameLoad(t, st, "a b=a b", "ab=ab")
	sameDead(t, st, "ab", 0, 0, dead(1, 1))
	sameDead(t, st, "a b", 0, 0, dead(3, 1))
}

func (s suite) testStopsAtError(t *testing.T) {
	st := s.open(t)
	for _, n := range []string{"a", "b", "c"} {
		save(t, st, n, []byte(n), nil, nil, true)
	}
	stop := errors.New("stop")
	var seen []string
	err := st.Load(ctx(t), func(name string, _ []byte) error {
		seen = append(seen, name)
		if name == "b" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || !slices.Equal(seen, []string{"a", "b"}) {
		t.Fatalf("Load = %v after %q; want fn's error after a, b", err, seen)
	}
}

// testCopies: the store keeps no reference to the caller's state, and
// hands out states the caller may keep and change.
func (s suite) testCopies(t *testing.T) {
	st := s.open(t)
	state := []byte("original")
	for _, sync := range []bool{false, true} {
		save(t, st, "c", state, nil, nil, sync)
		copy(state, "CHANGED!")
		sameLoad(t, st, "c=original")
		copy(state, "original")
	}
	var kept []byte
	_ = st.Load(ctx(t), func(_ string, v []byte) error { kept = v; return nil })
	copy(kept, "CHANGED!")
	sameLoad(t, st, "c=original")
}

// testConcurrent: concurrent Saves of several consumers, and of one, each
// land whole.
func (s suite) testConcurrent(t *testing.T) {
	st := s.open(t)
	const writers, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				seq := uint64(w*each + i + 1)
				name := fmt.Sprintf("c%d", w)
				for _, n := range []string{name, "shared"} {
					if err := st.Save(ctx(t), n, fmt.Appendf(nil, "%d", seq), []delivery.DeadLetter{dead(seq, 1)}, nil, i%2 == 0); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Save: %v", err)
	}
	states := load(t, st)
	if len(states) != writers+1 {
		t.Fatalf("Load found %d consumers, want %d: %q", len(states), writers+1, states)
	}
	if d := deadLetters(t, st, "shared", 0, 0); len(d) != writers*each {
		t.Fatalf("shared has %d dead letters, want %d", len(d), writers*each)
	}
	for w := range writers {
		if d := deadLetters(t, st, fmt.Sprintf("c%d", w), 0, 0); len(d) != each {
			t.Fatalf("c%d has %d dead letters, want %d", w, len(d), each)
		}
	}
}

// testContexts: a cancelled context fails every call and writes nothing.
func (s suite) testContexts(t *testing.T) {
	st := s.open(t)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.Save(c, "c", []byte("x"), nil, nil, true); !errors.Is(err, context.Canceled) {
		t.Errorf("Save with a cancelled context = %v", err)
	}
	if err := st.Load(c, func(string, []byte) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with a cancelled context = %v", err)
	}
	if _, err := st.DeadLetters(c, "c", 0, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("DeadLetters with a cancelled context = %v", err)
	}
	if err := st.Delete(c, "c"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete with a cancelled context = %v", err)
	}
	sameLoad(t, st)
}

// testReopen: what synced Saves and Deletes returned for survives a
// restart.
func (s suite) testReopen(t *testing.T) {
	if s.reopen == nil {
		t.Skip("the store keeps nothing across a restart")
	}
	st := s.open(t)
	save(t, st, "gone", []byte("g"), []delivery.DeadLetter{dead(1, 1)}, nil, true)
	save(t, st, "kept", []byte("k1"), []delivery.DeadLetter{dead(1, 5), dead(2, 5), dead(3, 5)}, nil, true)
	save(t, st, "kept", []byte{0, 1, 2, 0xff}, nil, []uint64{2}, true)
	if err := st.Delete(ctx(t), "gone"); err != nil {
		t.Fatal(err)
	}
	st = s.reopen(t, st)
	sameLoad(t, st, "kept="+string([]byte{0, 1, 2, 0xff}))
	sameDead(t, st, "kept", 0, 0, dead(1, 5), dead(3, 5))
	sameDead(t, st, "gone", 0, 0)
	var state []byte
	_ = st.Load(ctx(t), func(_ string, v []byte) error { state = v; return nil })
	if !bytes.Equal(state, []byte{0, 1, 2, 0xff}) {
		t.Fatalf("state after reopen = %x", state)
	}
}
