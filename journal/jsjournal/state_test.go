package jsjournal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/internal/natstest"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/service/registry/statetest"
)

// storesConnect connects to url with quick reconnects, for as long as the
// test runs.
func storesConnect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// storesBucket opens the bucket name on a new connection to url, with a
// 2 s timeout per operation. Right after a restart JetStream may not
// answer yet, so it tries for up to 15 s.
func storesBucket(t *testing.T, url, name string) (*nats.Conn, *Bucket) {
	t.Helper()
	nc, js := storesConnect(t, url)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		b, err := OpenBucket(ctx, js, name, 1, 2*time.Second)
		cancel()
		if err == nil {
			return nc, b
		}
		if time.Now().After(deadline) {
			t.Fatalf("OpenBucket(%q): %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storesEventually calls fn until it succeeds, for up to 20 s.
func storesEventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 20 s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storesBackend opens stores on one server, each in a fresh bucket;
// reopen closes the store's connection, restarts the server (from its
// store directory, as after a crash) and opens the bucket again on a new
// connection.
type storesBackend struct {
	srv   *natstest.Server
	mu    sync.Mutex
	n     int
	conns map[any]*nats.Conn // store -> its connection
	names map[any]string     // store -> its bucket
	wrap  func(*Bucket) any  // the store kept in a bucket
}

func newStoresBackend(t *testing.T, wrap func(*Bucket) any) *storesBackend {
	return &storesBackend{
		srv:   natstest.Start(t, server.Options{}),
		conns: map[any]*nats.Conn{},
		names: map[any]string{},
		wrap:  wrap,
	}
}

func (sb *storesBackend) open(t *testing.T) any {
	sb.mu.Lock()
	sb.n++
	name := fmt.Sprintf("stores-%d", sb.n)
	sb.mu.Unlock()
	return sb.attach(t, name)
}

func (sb *storesBackend) attach(t *testing.T, name string) any {
	nc, b := storesBucket(t, sb.srv.URL(), name)
	s := sb.wrap(b)
	sb.mu.Lock()
	sb.conns[s], sb.names[s] = nc, name
	sb.mu.Unlock()
	return s
}

func (sb *storesBackend) reopen(t *testing.T, s any) any {
	sb.mu.Lock()
	nc, name := sb.conns[s], sb.names[s]
	sb.mu.Unlock()
	nc.Close()
	sb.srv.Stop()
	sb.srv.Restart()
	return sb.attach(t, name)
}

func TestStateStoreConformance(t *testing.T) {
	sb := newStoresBackend(t, func(b *Bucket) any { return NewStateStore(b) })
	statetest.Run(t,
		func(t *testing.T) registry.StateStore { return sb.open(t).(*StateStore) },
		func(t *testing.T, s registry.StateStore) registry.StateStore { return sb.reopen(t, s).(*StateStore) })
}

// TestStateStoreBadInput: an empty type or id, or one holding NUL, is
// refused with a clear error before anything is written.
func TestStateStoreBadInput(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	_, b := storesBucket(t, srv.URL(), "state-bad")
	s := NewStateStore(b)
	ctx := t.Context()
	for _, in := range [][2]string{{"", "a"}, {registry.TypeListener, ""}, {registry.TypeListener, "a\x00b"}, {"list\x00ener", "a"}} {
		err := s.PutResource(ctx, in[0], in[1], []byte("x"), time.Now())
		if !errors.Is(err, errBadName) || !strings.Contains(err.Error(), "must be non-empty and must not contain NUL") {
			t.Errorf("PutResource(%q, %q) = %v, want a bad-name error", in[0], in[1], err)
		}
		if err := s.DeleteResource(ctx, in[0], in[1]); !errors.Is(err, errBadName) {
			t.Errorf("DeleteResource(%q, %q) = %v, want a bad-name error", in[0], in[1], err)
		}
	}
	// Ids keys could not hold as they are are fine: they are tokens.
	odd := []string{"a.b", "*", ">", "two words", "ünï", strings.Repeat("x", 300)}
	for _, id := range odd {
		if err := s.PutResource(ctx, registry.TypeConnection, id, []byte(id), time.Time{}); err != nil {
			t.Fatalf("PutResource(%q): %v", id, err)
		}
	}
	var got []string
	if err := s.Resources(ctx, func(_, id string, spec []byte, _ time.Time) error {
		if string(spec) != id {
			t.Errorf("%q has spec %q", id, spec)
		}
		got = append(got, id)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(odd) {
		t.Fatalf("Resources = %q, want %q", got, odd)
	}
}

// watchEvent is one call of Watch's fn.
type watchEvent struct {
	typ, id string
	spec    string
	deleted bool
}

// TestStateStoreWatch: a watch on one instance reports the current
// resources, then changes another instance makes, until its context ends.
func TestStateStoreWatch(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	_, ba := storesBucket(t, srv.URL(), "state-watch")
	_, bb := storesBucket(t, srv.URL(), "state-watch")
	a, b := NewStateStore(ba), NewStateStore(bb)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 5, time.UTC)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.PutResource(ctx, registry.TypeListener, "l1", []byte("one"), t0))
	must(a.PutResource(ctx, registry.TypeListener, "gone", []byte("g"), t0))
	must(a.DeleteResource(ctx, registry.TypeListener, "gone"))

	events := make(chan watchEvent, 16)
	wctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- b.Watch(wctx, func(typ, id string, spec []byte, created time.Time, deleted bool) {
			if !deleted && !created.Equal(t0) {
				t.Errorf("%s/%s created %v, want %v", typ, id, created, t0)
			}
			events <- watchEvent{typ, id, string(spec), deleted}
		})
	}()
	next := func(want watchEvent) {
		t.Helper()
		select {
		case got := <-events:
			if got != want {
				t.Fatalf("watch event %+v, want %+v", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no watch event; want %+v", want)
		}
	}
	next(watchEvent{registry.TypeListener, "l1", "one", false})
	must(a.PutResource(ctx, registry.TypeConnection, "c1", []byte("conn"), t0))
	next(watchEvent{registry.TypeConnection, "c1", "conn", false})
	must(a.DeleteResource(ctx, registry.TypeListener, "l1"))
	next(watchEvent{registry.TypeListener, "l1", "", true})
	stop()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch after its context ended = %v, want context.Canceled", err)
		}
	case <-ctx.Done():
		t.Fatal("Watch did not return after its context ended")
	}
	select {
	case e := <-events:
		t.Fatalf("unexpected watch event %+v", e)
	default:
	}
}

// TestStateStoreUnavailable: without a server, a write fails with
// journal.ErrUnavailable within its timeout; after a restart the store
// works again, with everything acknowledged before still there.
func TestStateStoreUnavailable(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	_, b := storesBucket(t, srv.URL(), "state-down")
	b.Timeout = time.Second
	s := NewStateStore(b)
	ctx := t.Context()
	if err := s.PutResource(ctx, registry.TypeListener, "before", []byte("b"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	if err := s.PutResource(ctx, registry.TypeListener, "during", nil, time.Time{}); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("PutResource without a server = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("PutResource without a server took %v", d)
	}
	if err := s.Resources(ctx, func(string, string, []byte, time.Time) error { return nil }); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Resources without a server = %v, want ErrUnavailable", err)
	}
	srv.Restart()
	storesEventually(t, "PutResource after the restart", func() error {
		return s.PutResource(ctx, registry.TypeListener, "after", []byte("a"), time.Time{})
	})
	got := map[string]string{}
	if err := s.Resources(ctx, func(_, id string, spec []byte, _ time.Time) error {
		got[id] = string(spec)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// "during" may be there or not: its publish may have reached the server
	// after the reconnect, after Put gave up on its ack.
	if got["before"] != "b" || got["after"] != "a" {
		t.Fatalf("after the restart: %q, want before and after", got)
	}
}

// TestStateStoreWatchRestart: a watch survives its server's restart: it
// reports a change made after the restart, without repeating what it
// reported before, and without being called again.
func TestStateStoreWatchRestart(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	_, ba := storesBucket(t, srv.URL(), "state-watch-restart")
	_, bb := storesBucket(t, srv.URL(), "state-watch-restart")
	a, b := NewStateStore(ba), NewStateStore(bb)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := a.PutResource(ctx, registry.TypeListener, "l1", []byte("one"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	events := make(chan watchEvent, 16)
	wctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- b.Watch(wctx, func(typ, id string, spec []byte, _ time.Time, deleted bool) {
			events <- watchEvent{typ, id, string(spec), deleted}
		})
	}()
	defer func() {
		stop()
		<-errc
	}()
	next := func(want watchEvent) {
		t.Helper()
		select {
		case got := <-events:
			if got != want {
				t.Fatalf("watch event %+v, want %+v", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no watch event; want %+v", want)
		}
	}
	next(watchEvent{registry.TypeListener, "l1", "one", false})
	srv.Stop()
	srv.Restart()
	start := time.Now()
	storesEventually(t, "PutResource after the restart", func() error {
		return a.PutResource(ctx, registry.TypeListener, "l2", []byte("two"), time.Time{})
	})
	next(watchEvent{registry.TypeListener, "l2", "two", false})
	t.Logf("watch resumed %v after the restart", time.Since(start))
}

// TestStoresCluster: on three nodes with R3 buckets, what one instance
// wrote through one node is read by instances on the other nodes as soon
// as the write returned: desired state, consumers and answers.
func TestStoresCluster(t *testing.T) {
	t.Parallel() // mostly waits for elections
	nodes := natstest.Cluster(t)
	type instance struct {
		state     *StateStore
		consumers *ConsumerStore
		answers   *AnswerStore
	}
	var in []instance
	for _, n := range nodes {
		_, js := storesConnect(t, n.URL())
		var b *Bucket
		var a *AnswerStore
		storesEventually(t, "open R3 buckets", func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			var err error
			if b, err = OpenBucket(ctx, js, "cluster-stores", 3, 5*time.Second); err != nil {
				return err
			}
			a, err = OpenAnswers(ctx, js, "cluster-answers", 3, time.Hour)
			return err
		})
		in = append(in, instance{NewStateStore(b), NewConsumerStore(b), a})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for i := range 30 {
		w := in[i%3]
		id := fmt.Sprint(i)
		if err := w.state.PutResource(ctx, registry.TypeListener, id, []byte(id), time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := w.consumers.Save(ctx, "c", []byte(id), []journal.DeadLetter{{Seq: uint64(i + 1), Deliveries: 1}}, nil, false); err != nil {
			t.Fatal(err)
		}
		if err := w.answers.PutAnswer(ctx, uint64(i+1), []byte(id), false); err != nil {
			t.Fatal(err)
		}
		for _, r := range []instance{in[(i+1)%3], in[(i+2)%3]} {
			n := 0
			if err := r.state.Resources(ctx, func(string, string, []byte, time.Time) error { n++; return nil }); err != nil || n != i+1 {
				t.Fatalf("write %d: Resources through another node: %d resources, %v; want %d", i, n, err, i+1)
			}
			var state string
			if err := r.consumers.Load(ctx, func(_ string, s []byte) error { state = string(s); return nil }); err != nil || state != id {
				t.Fatalf("write %d: Load through another node = %q, %v", i, state, err)
			}
			if d, err := r.consumers.DeadLetters(ctx, "c", uint64(i), 0); err != nil || len(d) != 1 {
				t.Fatalf("write %d: DeadLetters through another node = %v, %v", i, d, err)
			}
			if v, err := r.answers.Answer(ctx, uint64(i+1)); err != nil || string(v) != id {
				t.Fatalf("write %d: Answer through another node = %q, %v", i, v, err)
			}
		}
	}
}
