package pebblejournal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/switchboard-dev/switchboard/journal"
)

// prefixAnswer keys the answer store: 0x05 seq -> the value PutAnswer was
// given (the service stores a marshalled switchboard.v1.InboundAnswer).
const prefixAnswer byte = 0x05

func answerKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, keyLen), prefixAnswer), seq)
}

// AnswerStore keeps what was answered for inbound journal records, by
// their sequence, in the journal's database: it implements service's
// AnswerStore. Values are opaque to it. Retention deletes a record's answer
// with the record. Writes share the journal's group commit; while the
// journal is unavailable they fail at once with its failure. It is safe for
// concurrent use.
type AnswerStore struct {
	j *Journal

	mu      sync.Mutex
	pending map[uint64]pendingAnswer // put, not committed yet: Answer sees them
	token   uint64
}

type pendingAnswer struct {
	v     []byte
	token uint64 // which put it is, so a commit only clears its own
}

// Answers returns the answer store kept in j's database. It is usable
// until j is closed.
func (j *Journal) Answers() *AnswerStore { return j.answers }

// PutAnswer records v as the answer for the record seq, replacing any.
// With durable it returns once that is durable; without, once Answer returns
// it (it becomes durable with the journal's next commit, and is lost if
// that commit fails). An answer for a record retention has already deleted
// is dropped.
func (s *AnswerStore) PutAnswer(ctx context.Context, seq uint64, v []byte, durable bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if seq == 0 {
		return errors.New("journal: put answer: sequence 0")
	}
	if seq < s.j.firstSeq.Load() {
		return nil
	}
	v = bytes.Clone(v)
	s.mu.Lock()
	if s.pending == nil {
		s.pending = map[uint64]pendingAnswer{}
	}
	s.token++
	token := s.token
	s.pending[seq] = pendingAnswer{v: v, token: token}
	s.mu.Unlock()
	settled := func(error) {
		s.mu.Lock()
		if p, ok := s.pending[seq]; ok && p.token == token {
			delete(s.pending, seq)
		}
		s.mu.Unlock()
	}
	g, err := s.j.submit(write{ops: []op{{kind: opSet, key: answerKey(seq), val: v}}, epoch: anyEpoch, settled: settled})
	if err != nil {
		settled(err)
		return fmt.Errorf("journal: put answer %d: %w", seq, err)
	}
	if !durable {
		return nil
	}
	if err := wait(ctx, g); err != nil {
		return fmt.Errorf("journal: put answer %d: %w", seq, err)
	}
	return nil
}

// Answer returns the answer recorded for the record seq, or an error
// wrapping journal.ErrNotFound when there is none.
func (s *AnswerStore) Answer(ctx context.Context, seq uint64) ([]byte, error) {
	s.mu.Lock()
	p, ok := s.pending[seq]
	s.mu.Unlock()
	if ok {
		return bytes.Clone(p.v), nil
	}
	var out []byte
	err := s.j.view(ctx, func(r pebble.Reader) error {
		v, closer, err := r.Get(answerKey(seq))
		if err != nil {
			return err
		}
		out = bytes.Clone(v)
		return closer.Close()
	})
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return nil, fmt.Errorf("journal: answer %d: %w", seq, journal.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("journal: answer %d: %w", seq, err)
	}
	return out, nil
}

// deleteAnswers is the operation that deletes the answers of every record
// before cut, for retention's write that deletes those records. It starts
// at 0, not at the first record, so an answer put while its record was
// being deleted goes with the next deletion.
func deleteAnswers(cut uint64) op {
	return op{kind: opDeleteRange, key: answerKey(0), val: answerKey(cut)}
}
