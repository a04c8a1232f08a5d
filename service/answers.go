package service

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/switchboard-dev/switchboard/journal"
)

// AnswerStore keeps what was answered for inbound messages, by journal
// sequence: the values are marshalled switchboardv1.InboundAnswer, opaque to
// the store. The Service records answers for listeners with duplicate
// suppression, so that a resend gets the first answer's bytes again, and
// GetMessage shows them. The embedded one is pebblejournal.Journal.Answers,
// whose retention deletes an answer with its record. Implementations are
// safe for concurrent use.
type AnswerStore interface {
	// PutAnswer records v as seq's answer, replacing any. With durable it
	// returns once v is durable; without, once Answer returns it (it may
	// be lost in a crash).
	PutAnswer(ctx context.Context, seq uint64, v []byte, durable bool) error
	// Answer returns seq's answer, or an error wrapping journal.ErrNotFound
	// when there is none.
	Answer(ctx context.Context, seq uint64) ([]byte, error)
}

// MemAnswers is an AnswerStore in memory, for tests and for a Service
// without Config.Answers: it keeps every answer until the process ends.
type MemAnswers struct {
	mu sync.Mutex
	m  map[uint64][]byte
}

var _ AnswerStore = (*MemAnswers)(nil)

// NewMemAnswers returns an empty MemAnswers.
func NewMemAnswers() *MemAnswers { return &MemAnswers{m: map[uint64][]byte{}} }

// PutAnswer records a copy of v; durable makes no difference.
func (a *MemAnswers) PutAnswer(ctx context.Context, seq uint64, v []byte, _ bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m[seq] = bytes.Clone(v)
	return nil
}

// Answer returns a copy of seq's answer.
func (a *MemAnswers) Answer(ctx context.Context, seq uint64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.m[seq]
	if !ok {
		return nil, fmt.Errorf("answer %d: %w", seq, journal.ErrNotFound)
	}
	return bytes.Clone(v), nil
}
