// Package outbox is Switchboard's store-and-forward for outbound messages:
// each outbound connection has a durable queue, and a worker per connection
// delivers its messages in order, one in flight (or a window of them), with
// retries, an in-doubt policy and idempotency keys, across reconnects and
// restarts. It is gRPC-free; messages are the API's Message values, which
// are also the stored form (one schema, kept compatible by buf breaking).
package outbox

import (
	"context"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
)

// ErrNotFound: no such message. It is journal.ErrNotFound, so that a
// storage backend, which must not import this package, can return it
// (pebblejournal's outbox does).
var ErrNotFound = journal.ErrNotFound

// Store is the durable outbox: per connection, an ordered queue of messages
// and their delivery state. Backends: the embedded one shares the journal's
// Pebble database and its group commit (pebblejournal.Journal.Outbox); a
// NATS JetStream backend will follow. Every backend passes outboxtest.Run.
type Store interface {
	// Append stores m as the next message of m.ConnectionId: it sets
	// m.Sequence (1, 2, ... per connection, never reused) and m.MessageId,
	// and returns once m is durable. When m.IdempotencyKey is set and a
	// message of the same connection already has it, nothing is stored and
	// that message is returned with created false.
	Append(ctx context.Context, m *switchboardv1.Message) (stored *switchboardv1.Message, created bool, err error)
	// Update stores m's new state; m must have been appended (same
	// connection and sequence). With sync it returns once the change is
	// durable; without, a crash may lose it (the message then comes back in
	// its earlier state). Writes commit in the order they are made, so a
	// synced Update that returns nil makes every earlier write durable too
	// (the worker marks a window SENDING with one synced write).
	Update(ctx context.Context, m *switchboardv1.Message, sync bool) error
	// Get returns the message of connection connID at seq, or ErrNotFound.
	Get(ctx context.Context, connID string, seq uint64) (*switchboardv1.Message, error)
	// Pending returns up to n messages of connID that are not final (state
	// other than ACCEPTED and FAILED) with a sequence greater than after, in
	// sequence order.
	Pending(ctx context.Context, connID string, after uint64, n int) ([]*switchboardv1.Message, error)
	// PendingConnections returns the ids of the connections that have
	// pending messages, sorted.
	PendingConnections(ctx context.Context) ([]string, error)
	// Scan returns up to n messages after position (afterConn, afterSeq),
	// in (connection id, sequence) order; afterConn "" starts at the
	// beginning.
	Scan(ctx context.Context, afterConn string, afterSeq uint64, n int) ([]*switchboardv1.Message, error)
}
