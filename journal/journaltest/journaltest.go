// Package journaltest is the conformance suite every journal.Journal
// backend must pass, and the helpers backends' own tests share. It is never
// used by production code.
//
// A backend's test runs the suite with its Backend:
//
//	func TestConformance(t *testing.T) { journaltest.Run(t, backend{}) }
//
// The suite checks the promises in the journal package documentation, as a
// user of the interface can observe them: durability across a reopen,
// gap-free sequences under concurrent appends, paging, tailing with Wait,
// cancellation, Close, duplicate suppression (DedupID), and, when the
// backend implements Faults, failure and recovery, and when it implements
// Retention, reading around deleted records.
package journaltest

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
)

// Backend opens the journals the suite tests.
type Backend interface {
	// NewStore returns the name of new, empty storage for one test: for an
	// embedded backend a fresh directory (t.TempDir()), for a networked one
	// for example a stream name.
	NewStore(t *testing.T) string
	// Open opens the journal kept in store. The suite opens a store again
	// after closing the journal on it, to test a restart.
	Open(t *testing.T, store string) (journal.Journal, error)
}

// Faults is implemented by a Backend whose storage the suite can break and
// repair, to test the failure model: appends fail fast, never succeed for an
// uncommitted record, Health reports it, and the journal recovers by itself.
type Faults interface {
	// Break makes writes to store fail until Repair.
	Break(t *testing.T, store string)
	// Repair lets writes to store succeed again.
	Repair(t *testing.T, store string)
}

// Retention is implemented by a Backend whose journals delete old records,
// to test what readers see afterwards: FirstSeq moves, older sequences are
// not retained, and what is left stays gap-free, also after a restart.
type Retention interface {
	// Forget makes j delete its records before seq, as its retention
	// would, and returns once they are gone. seq is at most LastSeq.
	Forget(t *testing.T, j journal.Journal, seq uint64)
}

// Run runs the conformance suite against b.
func Run(t *testing.T, b Backend) {
	tests := []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"InvalidRecord", testInvalidRecord},
		{"Empty", testEmpty},
		{"ConcurrentAppend", testConcurrentAppend},
		{"Restart", testRestart},
		{"Wait", testWait},
		{"ReadPaging", testReadPaging},
		{"Contexts", testContexts},
		{"Close", testClose},
		{"Health", testHealth},
		{"FailureAndRecovery", testFailureAndRecovery},
		{"Retention", testRetention},
		{"Duplicates", testDuplicates},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, b) })
	}
}

// PHIMarker is embedded in every Message payload; it must never show up in
// logs.
const PHIMarker = "PATIENT^SECRET"

// Message returns the i-th test record: a message with every field set, a
// distinct control id, and a payload holding PHIMarker.
func Message(i int) *journal.Record {
	return &journal.Record{
		Kind:         journal.KindMessage,
		Time:         time.Unix(1700000000+int64(i), int64(i)),
		ListenerID:   "lst-1",
		ConnectionID: fmt.Sprintf("conn-%d", i%7),
		RemoteAddr:   "10.1.2.3:40000",
		MessageType:  "ADT^A01",
		ControlID:    fmt.Sprintf("CTL%06d", i),
		Payload:      []byte(fmt.Sprintf("MSH|^~\\&|%s|%d\r", PHIMarker, i)),
	}
}

// CheckRecord fails t unless got equals want field by field, with the time
// in UTC as every backend returns it.
func CheckRecord(t testing.TB, got, want *journal.Record) {
	t.Helper()
	if got.Seq != want.Seq || got.Kind != want.Kind ||
		!got.Time.Equal(want.Time) || got.Time.Location() != time.UTC ||
		got.InstanceID != want.InstanceID ||
		got.ListenerID != want.ListenerID ||
		got.ConnectionID != want.ConnectionID ||
		got.RemoteAddr != want.RemoteAddr ||
		got.MessageType != want.MessageType ||
		got.ControlID != want.ControlID ||
		got.PeerIdentity != want.PeerIdentity ||
		!bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("record mismatch:\n got %+v\nwant %+v", *got, *want)
	}
}

// ReadAll reads every record from from on, in pages, and fails t unless the
// sequence numbers are contiguous.
func ReadAll(t testing.TB, j journal.Journal, from uint64) []journal.Record {
	t.Helper()
	var out []journal.Record
	for {
		page, err := j.Read(context.Background(), from, 1000, 1<<20)
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

// MustAppend appends r and fails t on error.
func MustAppend(t testing.TB, j journal.Journal, r *journal.Record) uint64 {
	t.Helper()
	seq, err := j.Append(context.Background(), r)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return seq
}

// FirstSeq returns j's FirstSeq and fails t on error.
func FirstSeq(t testing.TB, j journal.Journal) uint64 {
	t.Helper()
	seq, err := j.FirstSeq(context.Background())
	if err != nil {
		t.Fatalf("FirstSeq: %v", err)
	}
	return seq
}

// LastSeq returns j's LastSeq and fails t on error.
func LastSeq(t testing.TB, j journal.Journal) uint64 {
	t.Helper()
	seq, err := j.LastSeq(context.Background())
	if err != nil {
		t.Fatalf("LastSeq: %v", err)
	}
	return seq
}

// open opens store and closes the journal when the test ends.
func open(t *testing.T, b Backend, store string) journal.Journal {
	t.Helper()
	j, err := b.Open(t, store)
	if err != nil {
		t.Fatalf("Open(%s): %v", store, err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

// WaitHealthy waits, bounded, for j's Health to be nil, and fails t if it
// is not within 20 s.
func WaitHealthy(t testing.TB, j journal.Journal) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		err, changed := j.Health()
		if err == nil {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the journal did not recover: Health = %v", err)
		}
	}
}
