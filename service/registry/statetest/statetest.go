// Package statetest is the conformance suite every registry.StateStore
// backend must pass. It is never used by production code.
//
// A backend's test runs it with a function that opens a new, empty store,
// and, if the backend keeps state across a restart, one that reopens it:
//
//	func TestStateConformance(t *testing.T) { statetest.Run(t, open, reopen) }
//
// The suite checks what the registry relies on, as a user of the interface
// can observe it: replace and delete by (type, id), the order of
// Resources, that specs are copied both ways, concurrent writers,
// cancellation, and, with reopen, that everything a Put or Delete returned
// for survives a restart.
package statetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/service/registry"
)

// Run runs the suite. open returns a new, empty store for one test (and
// arranges for it to be closed when the test ends). reopen, when not nil,
// closes the storage s is kept in and returns a store opened again on the
// same storage, as after a restart; without it the durability tests are
// skipped (an in-memory store).
func Run(t *testing.T, open func(t *testing.T) registry.StateStore, reopen func(t *testing.T, s registry.StateStore) registry.StateStore) {
	s := suite{open: open, reopen: reopen}
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"Empty", s.testEmpty},
		{"PutAndList", s.testPutAndList},
		{"Replace", s.testReplace},
		{"Delete", s.testDelete},
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
	open   func(*testing.T) registry.StateStore
	reopen func(*testing.T, registry.StateStore) registry.StateStore
}

// resource is one stored resource as Resources reports it.
type resource struct {
	typ, id string
	spec    []byte
	created time.Time
}

func (r resource) String() string {
	return fmt.Sprintf("%s/%s spec=%x created=%s", r.typ, r.id, r.spec, r.created.UTC().Format(time.RFC3339Nano))
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func list(t *testing.T, s registry.StateStore) []resource {
	t.Helper()
	var out []resource
	err := s.Resources(ctx(t), func(typ, id string, spec []byte, created time.Time) error {
		out = append(out, resource{typ, id, spec, created})
		return nil
	})
	if err != nil {
		t.Fatalf("Resources: %v", err)
	}
	return out
}

func put(t *testing.T, s registry.StateStore, r resource) {
	t.Helper()
	if err := s.PutResource(ctx(t), r.typ, r.id, r.spec, r.created); err != nil {
		t.Fatalf("PutResource(%s, %s): %v", r.typ, r.id, err)
	}
}

// same fails t unless got and want hold the same resources in the same
// order, with times compared as instants.
func same(t *testing.T, got, want []resource) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.typ == w.typ && g.id == w.id && bytes.Equal(g.spec, w.spec) && g.created.Equal(w.created)
	}
	if !ok {
		t.Fatalf("Resources =\n%v\nwant\n%v", got, want)
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func (s suite) testEmpty(t *testing.T) {
	st := s.open(t)
	same(t, list(t, st), nil)
	if err := st.DeleteResource(ctx(t), registry.TypeListener, "nothing"); err != nil {
		t.Fatalf("DeleteResource of a missing resource = %v, want nil", err)
	}
}

// testPutAndList: every field round-trips (binary specs, nanoseconds, any
// zone) and Resources orders by type, then id, as bytes.
func (s suite) testPutAndList(t *testing.T) {
	st := s.open(t)
	in := []resource{
		{registry.TypeListener, "lab-b", []byte{0x0a, 0x00, 0xff}, t0},
		{registry.TypeConnection, "z", []byte("spec z"), t0.In(time.FixedZone("CET", 3600))},
		{registry.TypeListener, "lab-a", []byte("spec a"), t0.Add(time.Nanosecond)},
		{registry.TypeConnection, "A", nil, time.Time{}},
		{registry.TypeListener, "lab-a-2", []byte("spec a2"), t0},
	}
	for _, r := range in {
		put(t, st, r)
	}
	same(t, list(t, st), []resource{in[3], in[1], in[2], in[4], in[0]})
}

func (s suite) testReplace(t *testing.T) {
	st := s.open(t)
	put(t, st, resource{registry.TypeListener, "a", []byte("old"), t0})
	put(t, st, resource{registry.TypeConnection, "a", []byte("other type"), t0})
	put(t, st, resource{registry.TypeListener, "a", []byte("new"), t0.Add(time.Hour)})
	same(t, list(t, st), []resource{
		{registry.TypeConnection, "a", []byte("other type"), t0},
		{registry.TypeListener, "a", []byte("new"), t0.Add(time.Hour)},
	})
}

func (s suite) testDelete(t *testing.T) {
	st := s.open(t)
	put(t, st, resource{registry.TypeListener, "a", []byte("a"), t0})
	put(t, st, resource{registry.TypeConnection, "a", []byte("ca"), t0})
	put(t, st, resource{registry.TypeListener, "b", []byte("b"), t0})
	for range 2 { // the second time it is already gone
		if err := st.DeleteResource(ctx(t), registry.TypeListener, "a"); err != nil {
			t.Fatalf("DeleteResource: %v", err)
		}
	}
	same(t, list(t, st), []resource{
		{registry.TypeConnection, "a", []byte("ca"), t0},
		{registry.TypeListener, "b", []byte("b"), t0},
	})
}

func (s suite) testStopsAtError(t *testing.T) {
	st := s.open(t)
	for i := range 3 {
		put(t, st, resource{registry.TypeListener, fmt.Sprint(i), nil, t0})
	}
	stop := errors.New("stop")
	calls := 0
	err := st.Resources(ctx(t), func(string, string, []byte, time.Time) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("Resources with fn failing on the 2nd call = %v after %d calls; want fn's error after 2", err, calls)
	}
}

// testCopies: the store keeps its own copy of a spec, and hands out copies,
// and fn may call the store.
func (s suite) testCopies(t *testing.T) {
	st := s.open(t)
	spec := []byte("original")
	put(t, st, resource{registry.TypeListener, "a", spec, t0})
	copy(spec, "XXXXXXXX")
	err := st.Resources(ctx(t), func(typ, id string, spec []byte, _ time.Time) error {
		copy(spec, "YYYYYYYY")
		return st.PutResource(ctx(t), registry.TypeConnection, "from-fn", nil, t0)
	})
	if err != nil {
		t.Fatalf("Resources whose fn calls PutResource: %v", err)
	}
	same(t, list(t, st), []resource{
		{registry.TypeConnection, "from-fn", nil, t0},
		{registry.TypeListener, "a", []byte("original"), t0},
	})
}

// testConcurrent: writers on distinct ids do not disturb one another.
func (s suite) testConcurrent(t *testing.T) {
	st := s.open(t)
	const writers, each = 16, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%02d-%02d", w, i)
				if err := st.PutResource(ctx(t), registry.TypeConnection, id, []byte(id), t0); err != nil {
					t.Errorf("PutResource: %v", err)
					return
				}
				if i%2 == 1 {
					if err := st.DeleteResource(ctx(t), registry.TypeConnection, id); err != nil {
						t.Errorf("DeleteResource: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	var want []resource
	for w := range writers {
		for i := 0; i < each; i += 2 {
			id := fmt.Sprintf("w%02d-%02d", w, i)
			want = append(want, resource{registry.TypeConnection, id, []byte(id), t0})
		}
	}
	same(t, list(t, st), want)
}

// testContexts: a done context stops every call before it changes
// anything.
func (s suite) testContexts(t *testing.T) {
	st := s.open(t)
	put(t, st, resource{registry.TypeListener, "keep", nil, t0})
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.PutResource(done, registry.TypeListener, "new", nil, t0); !errors.Is(err, context.Canceled) {
		t.Fatalf("PutResource with a done context = %v, want context.Canceled", err)
	}
	if err := st.DeleteResource(done, registry.TypeListener, "keep"); !errors.Is(err, context.Canceled) {
		t.Fatalf("DeleteResource with a done context = %v, want context.Canceled", err)
	}
	if err := st.Resources(done, func(string, string, []byte, time.Time) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Resources with a done context = %v, want context.Canceled", err)
	}
	same(t, list(t, st), []resource{{registry.TypeListener, "keep", nil, t0}})
}

// testReopen: what Put and Delete returned for is there after a restart,
// and the reopened store works.
func (s suite) testReopen(t *testing.T) {
	if s.reopen == nil {
		t.Skip("the backend does not keep state across a restart")
	}
	st := s.open(t)
	var want []resource
	for i := range 20 {
		r := resource{registry.TypeListener, fmt.Sprintf("l%02d", i), []byte{byte(i), 0}, t0.Add(time.Duration(i))}
		put(t, st, r)
		if i%3 == 0 {
			if err := st.DeleteResource(ctx(t), r.typ, r.id); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want = append(want, r)
	}
	st = s.reopen(t, st)
	same(t, list(t, st), want)
	put(t, st, resource{registry.TypeListener, "l99", nil, t0})
	st = s.reopen(t, st)
	same(t, list(t, st), append(want, resource{registry.TypeListener, "l99", nil, t0}))
}
