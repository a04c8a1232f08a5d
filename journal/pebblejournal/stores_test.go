package pebblejournal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal/pebbletest"

	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/outbox/outboxtest"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/service/registry/statetest"
)

var (
	_ registry.StateStore = (*StateStore)(nil)
	_ outbox.Store        = (*Outbox)(nil)
)

// reopened closes j and opens its directory again, as a restart would.
func reopened(t *testing.T, j *Journal) *Journal {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openJournal(t, j.dir, Options{})
}

func TestStateStoreConformance(t *testing.T) {
	statetest.Run(t,
		func(t *testing.T) registry.StateStore { return openJournal(t, t.TempDir(), Options{}).StateStore() },
		func(t *testing.T, s registry.StateStore) registry.StateStore {
			return reopened(t, s.(*StateStore).j).StateStore()
		})
}

func TestOutboxConformance(t *testing.T) {
	outboxtest.Run(t,
		func(t *testing.T) outbox.Store { return openJournal(t, t.TempDir(), Options{}).Outbox() },
		func(t *testing.T, s outbox.Store) outbox.Store { return reopened(t, s.(*Outbox).j).Outbox() })
}

func message(conn string, i int, key string) *switchboardv1.Message {
	m := outboxtest.Message(conn, i)
	m.IdempotencyKey = key
	return m
}

// TestStoresDuringFailure: a failing disk, first noticed by an outbox
// append, makes every store refuse writes with ErrUnavailable while reads
// go on; after the journal recovers by itself every store works again, and
// everything acknowledged is there, also after a restart.
func TestStoresDuringFailure(t *testing.T) {
	ctx := context.Background()
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j := openJournal(t, t.TempDir(), Options{FS: fs, RetryMin: time.Millisecond, RetryMax: 20 * time.Millisecond})
	st, ob := j.StateStore(), j.Outbox()
	created := time.Unix(1700000000, 0)
	if err := st.PutResource(ctx, "listener", "l1", []byte("spec"), created); err != nil {
		t.Fatal(err)
	}
	m1 := outboxtest.MustAppend(t, ob, message("c", 1, "k1"))
	rec := mustAppend(t, j, testRecord(1))

	_, changed := j.Health()
	fs.FailSyncs.Store(true)
	if _, _, err := ob.Append(ctx, message("c", 2, "k2")); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("outbox Append on a failing disk = %v, want ErrUnavailable", err)
	}
	<-changed
	sending := proto.Clone(m1).(*switchboardv1.Message)
	sending.State = switchboardv1.MessageState_MESSAGE_STATE_SENDING
	for name, write := range map[string]func() error{
		"PutResource":     func() error { return st.PutResource(ctx, "listener", "l2", nil, created) },
		"DeleteResource":  func() error { return st.DeleteResource(ctx, "listener", "l1") },
		"Append":          func() error { _, _, err := ob.Append(ctx, message("c", 3, "")); return err },
		"Update":          func() error { return ob.Update(ctx, sending, true) },
		"Update unsynced": func() error { return ob.Update(ctx, sending, false) },
		"journal Append":  func() error { _, err := j.Append(ctx, testRecord(2)); return err },
	} {
		if err := write(); !errors.Is(err, journal.ErrUnavailable) {
			t.Errorf("%s while the journal is unavailable = %v, want ErrUnavailable", name, err)
		}
	}
	if got, err := ob.Get(ctx, "c", 1); err != nil {
		t.Errorf("outbox Get while unavailable: %v", err)
	} else {
		outboxtest.Same(t, got, m1)
	}
	if p, err := ob.Pending(ctx, "c", 0, 10); err != nil || len(p) != 1 {
		t.Errorf("Pending while unavailable = %d messages, %v; want the queued one", len(p), err)
	}
	if n := countResources(t, st); n != 1 {
		t.Errorf("Resources while unavailable: %d, want 1", n)
	}

	fs.FailSyncs.Store(false)
	journaltest.WaitHealthy(t, j)
	if err := st.PutResource(ctx, "listener", "l2", nil, created); err != nil {
		t.Fatalf("PutResource after recovery: %v", err)
	}
	if err := ob.Update(ctx, sending, true); err != nil {
		t.Fatalf("Update after recovery: %v", err)
	}
	// The append that failed may or may not have reached the disk; either
	// way its key gives one message, and sequences are not reused.
	again, _, err := ob.Append(ctx, message("c", 2, "k2"))
	if err != nil {
		t.Fatalf("Append after recovery: %v", err)
	}
	m4 := outboxtest.MustAppend(t, ob, message("c", 4, ""))
	if again.GetSequence() < 2 || m4.GetSequence() <= again.GetSequence() {
		t.Fatalf("sequences after recovery: %d then %d, want increasing from 2", again.GetSequence(), m4.GetSequence())
	}

	j = reopened(t, j)
	st, ob = j.StateStore(), j.Outbox()
	if n := countResources(t, st); n != 2 {
		t.Fatalf("resources after a restart: %d, want 2", n)
	}
	for _, want := range []*switchboardv1.Message{sending, again, m4} {
		got, err := ob.Get(ctx, "c", want.GetSequence())
		if err != nil {
			t.Fatal(err)
		}
		outboxtest.Same(t, got, want)
	}
	if recs := readAll(t, j, rec); len(recs) == 0 {
		t.Fatal("the acknowledged record is gone")
	}
}

func countResources(t *testing.T, st *StateStore) int {
	t.Helper()
	n := 0
	if err := st.Resources(context.Background(), func(string, string, []byte, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOneFsyncForEveryStore: journal appends, outbox appends and updates
// and state puts that arrive while an fsync runs are all committed by the
// next single fsync.
func TestOneFsyncForEveryStore(t *testing.T) {
	ctx := context.Background()
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j := openJournal(t, t.TempDir(), Options{FS: fs})
	ob := j.Outbox()
	var queued []*switchboardv1.Message
	for i := range 8 {
		queued = append(queued, outboxtest.MustAppend(t, ob, message("u", i, "")))
	}
	before := j.Stats().Commits

	entered, release := fs.HoldSyncs()
	defer release()
	first := make(chan error, 1)
	go func() { _, err := j.Append(ctx, testRecord(0)); first <- err }()
	<-entered // the committer is in the fsync of that record

	const records, appends, puts = 16, 16, 8
	var wg sync.WaitGroup
	errs := make(chan error, records+appends+puts+len(queued))
	for i := range records {
		wg.Go(func() { _, err := j.Append(ctx, testRecord(1+i)); errs <- err })
	}
	for i := range appends {
		wg.Go(func() { _, _, err := ob.Append(ctx, message(fmt.Sprint("c", i%4), i, fmt.Sprint("k", i))); errs <- err })
	}
	for i := range puts {
		wg.Go(func() { errs <- j.StateStore().PutResource(ctx, "connection", fmt.Sprint("r", i), nil, time.Time{}) })
	}
	for _, m := range queued {
		m.State = switchboardv1.MessageState_MESSAGE_STATE_SENDING
		wg.Go(func() { errs <- ob.Update(ctx, m, true) })
	}
	// records + 4 ops per keyed append (message, counter, pending, key) +
	// 1 per put + 1 per update that keeps the message pending.
	wantOps := records + 4*appends + puts + len(queued)
	waitFor(t, func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return len(j.queue) == 1 && j.queue[0].ops == wantOps
	})
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := j.Stats().Commits - before; n != 2 {
		t.Fatalf("%d commits for the held one and everything that arrived during it, want 2", n)
	}
}

// TestUnsyncedUpdateDoesNotWait: Update without sync returns while an
// fsync is held, and readers see the change at once; with sync it waits.
func TestUnsyncedUpdateDoesNotWait(t *testing.T) {
	ctx := context.Background()
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j := openJournal(t, t.TempDir(), Options{FS: fs})
	ob := j.Outbox()
	m := outboxtest.MustAppend(t, ob, message("c", 1, ""))

	entered, release := fs.HoldSyncs()
	defer release()
	go func() { _, _ = j.Append(ctx, testRecord(0)) }()
	<-entered

	m.State = switchboardv1.MessageState_MESSAGE_STATE_SENDING
	unsynced := make(chan error, 1)
	go func() { unsynced <- ob.Update(ctx, m, false) }()
	select {
	case err := <-unsynced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Update without sync waited for an fsync")
	}
	got, err := ob.Get(ctx, "c", 1)
	if err != nil {
		t.Fatal(err)
	}
	outboxtest.Same(t, got, m)

	m.State = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
	synced := make(chan error, 1)
	go func() { synced <- ob.Update(ctx, m, true) }()
	waitFor(t, func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return len(j.queue) == 1 && j.queue[0].ops == 1+3 // to SENDING, then ACCEPTED (message, pending out, final in)
	})
	select {
	case err := <-synced:
		t.Fatalf("Update with sync returned (%v) while the fsync is held", err)
	default:
	}
	release()
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if p, err := ob.Pending(ctx, "c", 0, 1); err != nil || len(p) != 0 {
		t.Fatalf("Pending after ACCEPTED = %d, %v", len(p), err)
	}
}

// TestStoresReadOnlyCommitted: Pebble shows a batch to readers while its
// fsync is still running, and goes on showing it when the fsync fails;
// the stores never do: an outbox message is not pending, nor a resource
// listed, before its write returned nil.
func TestStoresReadOnlyCommitted(t *testing.T) {
	ctx := context.Background()
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j := openJournal(t, t.TempDir(), Options{FS: fs, RetryMin: time.Millisecond, RetryMax: 20 * time.Millisecond})
	ob := j.Outbox()

	entered, release := fs.HoldSyncs()
	defer release()
	appended := make(chan error, 1)
	go func() { _, _, err := ob.Append(ctx, message("c", 1, "")); appended <- err }()
	put := make(chan error, 1)
	<-entered
	go func() { put <- j.StateStore().PutResource(ctx, "listener", "l", nil, time.Time{}) }()
	waitFor(t, func() bool { // the hazard is real: the database shows it
		_, closer, err := j.db.Get(connSeqKey(prefixOutMsg, "c", 1))
		if err == nil {
			closer.Close()
		}
		return err == nil
	})
	invisible := func(when string) {
		t.Helper()
		if _, err := ob.Get(ctx, "c", 1); !errors.Is(err, journal.ErrNotFound) {
			t.Fatalf("Get %s = %v, want ErrNotFound", when, err)
		}
		if p, err := ob.Pending(ctx, "c", 0, 10); err != nil || len(p) != 0 {
			t.Fatalf("Pending %s = %d messages, %v; want none", when, len(p), err)
		}
		if s, err := ob.Scan(ctx, "", 0, 10); err != nil || len(s) != 0 {
			t.Fatalf("Scan %s = %d messages, %v; want none", when, len(s), err)
		}
		if c, err := ob.PendingConnections(ctx); err != nil || len(c) != 0 {
			t.Fatalf("PendingConnections %s = %v, %v; want none", when, c, err)
		}
		if n := countResources(t, j.StateStore()); n != 0 {
			t.Fatalf("Resources %s: %d, want none", when, n)
		}
	}
	invisible("while the append's fsync runs")
	fs.FailSyncs.Store(true)
	release()
	if err := <-appended; !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Append whose fsync failed = %v, want ErrUnavailable", err)
	}
	if err := <-put; !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("PutResource after the failure = %v, want ErrUnavailable", err)
	}
	invisible("after its fsync failed")
	fs.FailSyncs.Store(false)
	journaltest.WaitHealthy(t, j)
	// Now the disk decides: the failed batch may have reached it.
	if m, err := ob.Get(ctx, "c", 1); err != nil && !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get after recovery: %v", err)
	} else if err == nil {
		t.Logf("the failed append reached the disk: %s", m.GetMessageId())
	}
}

// TestOutboxConformanceNoSync: without fsync the stores' writes still go
// through the committer and behave the same (short of durability).
func TestOutboxConformanceNoSync(t *testing.T) {
	opts := Options{NoSync: true}
	outboxtest.Run(t,
		func(t *testing.T) outbox.Store { return openJournal(t, t.TempDir(), opts).Outbox() },
		func(t *testing.T, s outbox.Store) outbox.Store {
			j := s.(*Outbox).j
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			return openJournal(t, j.dir, opts).Outbox()
		})
}
