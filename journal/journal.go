package journal

import (
	"context"
	"errors"
)

// ErrClosed is returned by operations on a closed Journal, and by Append
// calls that were still queued when Close was called.
var ErrClosed = errors.New("journal: closed")

// ErrInvalidRecord is returned by Append for a record no backend may store:
// one without a Kind, or one larger than the backend's limit.
var ErrInvalidRecord = errors.New("journal: invalid record")

// Journal is the contract the rest of Switchboard depends on, described in
// the package documentation. pebblejournal.Journal implements it on Pebble;
// another backend (for example NATS JetStream) must keep the same promises.
type Journal interface {
	Append(ctx context.Context, r *Record) (uint64, error)
	LastSeq() uint64
	Read(from uint64, maxRecords, maxBytes int) ([]Record, error)
	Wait(ctx context.Context, after uint64) error
	Err() error
	Close() error
}
