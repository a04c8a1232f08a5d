package jsjournal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/switchboard-dev/switchboard/internal/natstest"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testOptions are the journal options the tests use: quick reconnects,
// probes and health checks, and a short append timeout, so that failures
// show quickly.
func testOptions(url, name string) Options {
	return Options{
		URL:           url,
		Name:          name,
		AppendTimeout: 2 * time.Second,
		RetryMin:      20 * time.Millisecond,
		RetryMax:      200 * time.Millisecond,
		CheckInterval: 500 * time.Millisecond,
		NATSOptions:   []nats.Option{nats.ReconnectWait(20 * time.Millisecond), nats.ReconnectJitter(0, 0)},
	}
}

// backend runs the conformance suite with one in-process server per
// store; a store is the server's key, and the stream is named after the
// test.
type backend struct {
	mu      sync.Mutex
	servers map[string]*natstest.Server
}

func (b *backend) NewStore(t *testing.T) string {
	ts := natstest.Start(t, server.Options{})
	b.mu.Lock()
	defer b.mu.Unlock()
	store := fmt.Sprintf("s%d", len(b.servers))
	b.servers[store] = ts
	return store
}

func (b *backend) server(store string) *natstest.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.servers[store]
}

func (b *backend) Open(t *testing.T, store string) (journal.Journal, error) {
	return Open(context.Background(), testOptions(b.server(store).URL(), "journal-"+store))
}

// Break shuts the store's server down: the connection drops, and nothing
// answers until Repair.
func (b *backend) Break(t *testing.T, store string) { b.server(store).Stop() }

// Repair starts the server again on the same port and store directory, as
// after a crash: the stream comes back from disk and the journal
// reconnects by itself.
func (b *backend) Repair(t *testing.T, store string) { b.server(store).Restart() }

// Forget deletes records as retention would: a purge up to seq.
func (b *backend) Forget(t *testing.T, j journal.Journal, seq uint64) {
	if err := j.(*Journal).DeleteBefore(context.Background(), seq); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	journaltest.Run(t, &backend{servers: map[string]*natstest.Server{}})
}

func openJournal(t *testing.T, opts Options) *Journal {
	t.Helper()
	j, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

// TestOpenUnreachable: Open fails, bounded, when no server answers.
func TestOpenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	if _, err := Open(context.Background(), testOptions("nats://"+addr, "j")); err == nil {
		t.Fatal("Open without a server succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Open without a server took %v", d)
	}
}

// TestSameBytes: the stream holds journal.AppendRecord's bytes, as
// pebblejournal does, and no payload reaches the log.
func TestSameBytes(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	var logs strings.Builder
	var logMu sync.Mutex
	opts := testOptions(ts.URL(), "bytes")
	opts.Logger = newLogger(&logs, &logMu)
	j := openJournal(t, opts)
	r := journaltest.Message(7)
	seq := journaltest.MustAppend(t, j, r)
	m, err := j.stream.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	if want := journal.AppendRecord(nil, r); string(m.Data) != string(want) {
		t.Fatalf("stored %q, want AppendRecord's %q", m.Data, want)
	}
	// A failure and a recovery are logged, without payloads.
	ts.Stop()
	if _, err := j.Append(context.Background(), journaltest.Message(8)); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Append without a server = %v, want ErrUnavailable", err)
	}
	ts.Restart()
	journaltest.WaitHealthy(t, j)
	j.Close()
	logMu.Lock()
	defer logMu.Unlock()
	if strings.Contains(logs.String(), journaltest.PHIMarker) {
		t.Fatalf("payload in the log:\n%s", logs.String())
	}
	if n := strings.Count(logs.String(), "journal unavailable"); n != 1 {
		t.Fatalf("failure logged %d times, want once:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "journal available again"); n != 1 {
		t.Fatalf("recovery logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestWaitOtherWriter: Wait wakes for a record another journal on the same
// stream appended, through the ordered consumer.
func TestWaitOtherWriter(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	a := openJournal(t, testOptions(ts.URL(), "shared"))
	opts := testOptions(ts.URL(), "shared")
	opts.CheckInterval = -1 // no probes: only the ordered consumer wakes b
	b := openJournal(t, opts)
	journaltest.MustAppend(t, a, journaltest.Message(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Wait(ctx, 0); err != nil {
		t.Fatalf("Wait for an existing record: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- b.Wait(ctx, 1) }()
	journaltest.MustAppend(t, a, journaltest.Message(1))
	if err := <-errc; err != nil {
		t.Fatalf("Wait for another journal's record: %v", err)
	}
	// The id index is shared too.
	r := journaltest.Message(2)
	r.DedupID, r.DedupWindow = "x", time.Hour
	first := journaltest.MustAppend(t, a, r)
	r = journaltest.Message(3)
	r.DedupID, r.DedupWindow = "x", time.Hour
	var de *journal.DuplicateError
	if seq, err := b.Append(context.Background(), r); !errors.As(err, &de) || seq != first {
		t.Fatalf("duplicate through another journal = %d, %v; want %d and a DuplicateError", seq, err, first)
	}
}

// lockedWriter lets the journal's goroutines log into a buffer the test
// reads.
type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newLogger(w *strings.Builder, mu *sync.Mutex) *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{mu, w}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestLongDedupID: ids too long for a subject are hashed; they still
// suppress their duplicates, and only those.
func TestLongDedupID(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	j := openJournal(t, testOptions(ts.URL(), "long"))
	long := strings.Repeat("MSH-10^", 200)
	rec := func(i int, id string) *journal.Record {
		r := journaltest.Message(i)
		r.DedupID, r.DedupWindow = id, time.Hour
		return r
	}
	first := journaltest.MustAppend(t, j, rec(0, long+"a"))
	if seq := journaltest.MustAppend(t, j, rec(1, long+"b")); seq != first+1 {
		t.Fatalf("another long id: seq %d, want %d", seq, first+1)
	}
	var de *journal.DuplicateError
	if seq, err := j.Append(context.Background(), rec(2, long+"a")); !errors.As(err, &de) || seq != first || de.ID != long+"a" {
		t.Fatalf("duplicate of a long id = %d, %v; want %d and a DuplicateError", seq, err, first)
	}
}

// TestDeleteBefore: it never deletes the last record, and a sequence at or
// below FirstSeq (0 included, which to JetStream would mean everything)
// deletes nothing.
func TestDeleteBefore(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	j := openJournal(t, testOptions(ts.URL(), "purge"))
	for i := range 5 {
		journaltest.MustAppend(t, j, journaltest.Message(i))
	}
	ctx := context.Background()
	if err := j.DeleteBefore(ctx, 6); err == nil {
		t.Fatal("DeleteBefore(LastSeq+1) succeeded: it would delete the last record")
	}
	for _, seq := range []uint64{0, 1} {
		if err := j.DeleteBefore(ctx, seq); err != nil {
			t.Fatalf("DeleteBefore(%d): %v", seq, err)
		}
		if got := journaltest.FirstSeq(t, j); got != 1 {
			t.Fatalf("FirstSeq after DeleteBefore(%d) = %d, want 1", seq, got)
		}
	}
	if err := j.DeleteBefore(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if first, last := journaltest.FirstSeq(t, j), journaltest.LastSeq(t, j); first != 5 || last != 5 {
		t.Fatalf("after DeleteBefore(5): FirstSeq %d, LastSeq %d; want 5, 5", first, last)
	}
}

// TestOpenRefusesBadNames: a name that would change the stream's subjects
// (dots, wildcards, spaces) is refused before anything is connected.
func TestOpenRefusesBadNames(t *testing.T) {
	for _, name := range []string{"a.b", "orders.>", "*", "two words", "ünï"} {
		j, err := Open(t.Context(), Options{URL: "nats://127.0.0.1:1", Name: name})
		if err == nil {
			_ = j.Close()
			t.Fatalf("Open(%q) succeeded", name)
		}
		if !strings.Contains(err.Error(), "invalid journal name") {
			t.Errorf("Open(%q): %v, want an invalid-name error", name, err)
		}
	}
}
