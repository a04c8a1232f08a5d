package jsjournal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/journal"
)

// AnswerStore keeps what was answered for inbound journal records, by
// their sequence, in a JetStream KV bucket of its own, key <seq> in
// decimal: it implements service's AnswerStore. Values are opaque to it
// (the service stores a marshalled switchboard.v1.InboundAnswer).
//
// Answers do not grow for ever: the bucket's TTL (maxAge) deletes an
// answer that long after it was put, as retention deletes a record; an
// answer older than that is gone, and Answer reports journal.ErrNotFound
// as it does for a record past retention. It has its own bucket, not the
// cluster's, because a TTL is a bucket's, and the cluster's keys must not
// expire. Choose maxAge at least the journal's retention, so that an
// answer outlives its record.
//
// Every PutAnswer waits for its PubAck, durable or not. While NATS cannot
// be reached, calls fail with an error wrapping journal.ErrUnavailable; a
// PutAnswer that failed so may still take effect later (its request may be
// sent on reconnect). It is safe for concurrent use.
type AnswerStore struct {
	b *Bucket
}

// OpenAnswers creates (or updates) the answer bucket name, with the given
// replica count (0 means 1), file storage, history 1 and TTL maxAge (which
// must be positive), and returns its store. Each later write or read is
// bounded by 5 s.
//
// It creates the bucket's stream itself, as CreateKeyValue would but with
// AllowDirect off, so that Answer reads from the stream leader: a direct
// get may be answered by a replica behind it, and miss an answer
// PutAnswer has just returned for (the journal turns it off for the same
// reason).
func OpenAnswers(ctx context.Context, js jetstream.JetStream, name string, replicas int, maxAge time.Duration) (*AnswerStore, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("jsjournal: invalid answer bucket name %q: letters, digits, '-' and '_' only", name)
	}
	if maxAge <= 0 {
		return nil, fmt.Errorf("jsjournal: answer bucket %q: maxAge %v must be positive", name, maxAge)
	}
	if replicas <= 0 {
		replicas = 1
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              "KV_" + name,
		Subjects:          []string{"$KV." + name + ".>"},
		MaxMsgsPerSubject: 1,
		MaxAge:            maxAge,
		MaxBytes:          -1,
		MaxMsgs:           -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Discard:           jetstream.DiscardNew,
		Duplicates:        min(2*time.Minute, maxAge),
		AllowDirect:       false,
	})
	if err != nil {
		return nil, fmt.Errorf("jsjournal: answer bucket %q: %w", name, err)
	}
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("jsjournal: answer bucket %q: %w", name, err)
	}
	return &AnswerStore{b: &Bucket{KV: kv, JS: js, Name: name, Timeout: 5 * time.Second}}, nil
}

// SetTimeout changes what bounds each later write or read (d > 0); it is
// not safe to call concurrently with them.
func (s *AnswerStore) SetTimeout(d time.Duration) { s.b.Timeout = d }

func answerKey(seq uint64) string { return strconv.FormatUint(seq, 10) }

// PutAnswer records v as the answer for the record seq, replacing any,
// and returns once that is durable, whatever durable says.
func (s *AnswerStore) PutAnswer(ctx context.Context, seq uint64, v []byte, durable bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if seq == 0 {
		return errors.New("jsjournal: put answer: sequence 0")
	}
	if _, err := s.b.Put(ctx, answerKey(seq), v, Fence{}); err != nil {
		return fmt.Errorf("jsjournal: put answer %d: %w", seq, err)
	}
	return nil
}

// Answer returns the answer recorded for the record seq, or an error
// wrapping journal.ErrNotFound when there is none (never put, or older
// than the bucket's TTL).
func (s *AnswerStore) Answer(ctx context.Context, seq uint64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if seq == 0 {
		return nil, fmt.Errorf("jsjournal: answer 0: %w", journal.ErrNotFound)
	}
	ctx, cancel := context.WithTimeout(ctx, s.b.Timeout)
	defer cancel()
	e, err := s.b.KV.Get(ctx, answerKey(seq))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, fmt.Errorf("jsjournal: answer %d: %w", seq, journal.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("jsjournal: answer %d: %w", seq, s.b.Err(err))
	}
	return slices.Clone(e.Value()), nil
}
