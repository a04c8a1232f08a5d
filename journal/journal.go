package journal

import (
	"context"
	"errors"
	"fmt"
)

// ErrClosed is returned by operations on a closed Journal, and by Append
// calls that were still queued when Close was called.
var ErrClosed = errors.New("journal: closed")

// ErrUnavailable is wrapped by the error that stops appends while the
// storage fails (Health returns it, and so does every Append it refuses),
// together with the cause. The journal may recover by itself; Health says
// when. Callers map it to "try again later" (an HL7 AE or AR to the peer,
// gRPC UNAVAILABLE).
var ErrUnavailable = errors.New("journal: unavailable")

// ErrInvalidRecord is returned by Append for a record no backend may store:
// one without a Kind, or one larger than the backend's limit.
var ErrInvalidRecord = errors.New("journal: invalid record")

// ErrNotRetained is wrapped by Read's error when from is older than the
// oldest record the journal still holds (retention deleted it). The error
// is a *NotRetainedError, which names the oldest retained sequence, so a
// reader can tell its client where it may resume (gRPC: NOT_RETAINED).
var ErrNotRetained = errors.New("journal: not retained")

// NotRetainedError is Read's error for a sequence retention has deleted.
type NotRetainedError struct {
	From  uint64 // the sequence asked for
	First uint64 // the oldest sequence still retained
}

func (e *NotRetainedError) Error() string {
	return fmt.Sprintf("journal: sequence %d is not retained; the oldest retained is %d", e.From, e.First)
}

func (e *NotRetainedError) Unwrap() error { return ErrNotRetained }

// ErrNotFound is wrapped by the errors of the stores that share a journal's
// storage (pebblejournal's outbox) for something they do not hold. It is
// defined here, with the storage contract, so that a backend and the
// package whose interface it implements (service/outbox, whose ErrNotFound
// is this value) share it although the backend must not import the
// service layer.
var ErrNotFound = errors.New("not found")

// ErrDuplicate is wrapped by Append's error for a record whose DedupID a
// record appended within the window already holds. The error is a
// *DuplicateError, which names the first record's sequence.
var ErrDuplicate = errors.New("journal: duplicate")

// DuplicateError is Append's error for a record whose DedupID is taken: the
// record was not stored, and Seq is the record that holds the id.
type DuplicateError struct {
	ID  string // the DedupID
	Seq uint64 // the first record's sequence
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("journal: duplicate of sequence %d", e.Seq)
}

func (e *DuplicateError) Unwrap() error { return ErrDuplicate }

// Journal is the contract the rest of Switchboard depends on; the package
// documentation states its promises. pebblejournal.Journal implements it on
// Pebble; another backend (for example NATS JetStream) must keep the same
// promises, which journaltest.Run checks. A Journal is safe for concurrent
// use.
type Journal interface {
	// Append stores r and returns its sequence number, which it also sets
	// in r.Seq. It returns nil only once r is durable. r is not retained.
	//
	// With r.DedupID set, Append stores r only if no record with that id
	// was appended less than r.DedupWindow ago; otherwise it returns that
	// record's sequence and a *DuplicateError (ErrDuplicate), and r.Seq is
	// left alone. Of concurrent Appends of one id exactly one is stored;
	// the others get its sequence once it is durable (or, if it fails,
	// race again). The id index is durable with its record (no crash
	// leaves one without the other) and survives restarts. This is
	// JetStream's Nats-Msg-Id with its duplicate window. A backend may
	// delete index entries once they are older than their window.
	Append(ctx context.Context, r *Record) (uint64, error)
	// LastSeq returns the highest committed sequence number, 0 when empty.
	LastSeq(ctx context.Context) (uint64, error)
	// FirstSeq returns the oldest retained sequence number: 1 until
	// retention deletes records (a backend that keeps everything always
	// returns 1), and LastSeq+1 while the journal holds no record. Records
	// from FirstSeq to LastSeq are all there, without a gap.
	FirstSeq(ctx context.Context) (uint64, error)
	// Read returns committed records with Seq >= from, in sequence order:
	// at most maxRecords (at least 1), stopping before the payloads' total
	// would exceed maxBytes, but always at least one record when one is
	// available, however large. No records when from > LastSeq. From 0
	// means from FirstSeq; any other from below FirstSeq fails with a
	// *NotRetainedError (ErrNotRetained).
	Read(ctx context.Context, from uint64, maxRecords, maxBytes int) ([]Record, error)
	// Wait blocks until LastSeq > after. It wakes on commit and never
	// polls. It returns early only when ctx is done or the journal closes;
	// a storage failure does not end it, since the journal may recover.
	Wait(ctx context.Context, after uint64) error
	// Health returns nil while appends work, else the failure that stops
	// them (wrapping ErrUnavailable), and a channel that is closed at the
	// next change (failure, recovery or Close). After Close it returns
	// ErrClosed and a nil channel: there is no next change.
	Health() (err error, changed <-chan struct{})
	// Stats returns counters since the journal was opened.
	Stats() Stats
	// Close releases the journal. Queued appends fail with ErrClosed; an
	// append whose commit is already under way gets that commit's result.
	// Later calls return the first call's result.
	Close() error
}

// Stats are counters every backend keeps, for metrics and tests.
type Stats struct {
	// Appends counts Append calls that returned a sequence number.
	Appends uint64
	// Refused counts Append calls that failed because storage failed: the
	// ones in the commit that failed, and every one refused after it while
	// the journal was unavailable.
	Refused uint64
	// Commits counts durable commits (one fsync each, unless the backend
	// runs without sync). With group commit, several records share one.
	Commits uint64
	// Records counts records in those commits. It can exceed Appends: a
	// record whose Append gave up on its context may still commit.
	Records uint64
	// Failures and Recoveries count the changes of Health to a failure and
	// back to nil.
	Failures   uint64
	Recoveries uint64
}

// ErrFenced is wrapped by a store's error for a write refused because the
// writer no longer holds the lease that guards it: in a cluster, another
// instance has taken the resource over. Nothing was written.
var ErrFenced = errors.New("fenced: this instance no longer owns the resource")
