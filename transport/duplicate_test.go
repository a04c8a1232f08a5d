package transport

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// dupSink stores each control id once: a resend gets a *DuplicateError
// with the first answer it was told of (or none, with noReply). It records
// every Answered call.
type dupSink struct {
	mu       sync.Mutex
	seqs     map[string]uint64
	answers  map[uint64][]byte
	answered []answered
	noReply  bool
}

type answered struct {
	seq     uint64
	code    AckCode
	payload []byte
	written bool
}

func (s *dupSink) Append(_ context.Context, m *Message) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq, ok := s.seqs[m.ControlID]; ok {
		e := &DuplicateError{Seq: seq}
		if a, ok := s.answers[seq]; ok && !s.noReply {
			e.Reply, e.Code = a, AckAA
		}
		return 0, e
	}
	seq := uint64(len(s.seqs) + 1)
	s.seqs[m.ControlID] = seq
	return seq, nil
}

func (s *dupSink) Answered(_ *Message, seq uint64, r Reply, written bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.answers[seq]; !ok {
		s.answers[seq] = bytes.Clone(r.Payload)
	}
	s.answered = append(s.answered, answered{seq, r.Code, bytes.Clone(r.Payload), written})
}

func (s *dupSink) calls() []answered {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]answered(nil), s.answered...)
}

// TestDuplicateAnsweredWithFirstAnswer: a message the Sink reports as a
// duplicate is answered with the first answer byte for byte (or, without
// one, as the policy answers a stored message), positively, is counted,
// and every answer of a stored message reaches the AnswerRecorder.
func TestDuplicateAnsweredWithFirstAnswer(t *testing.T) {
	for _, noReply := range []bool{false, true} {
		sink := &dupSink{seqs: map[string]uint64{}, answers: map[uint64][]byte{}, noReply: noReply}
		var dups int
		var mu sync.Mutex
		obs := &Observer{Duplicate: func(*Conn, *Frame) { mu.Lock(); dups++; mu.Unlock() }}
		l := startListener(t, ListenerConfig{Sink: sink, Conn: ConnConfig{Framing: mllpFraming, Observer: obs}})
		p := dialRaw(t, l, mllpFraming)

		p.send(adt)
		first := p.mustNext()
		p.send(adt)
		again := p.mustNext()
		if noReply {
			a, err := hl7.ParseAck(again)
			if err != nil || a.Code != hl7.AA || a.ControlID != "MSG00001" {
				t.Fatalf("duplicate without a first answer got %q (%v); want the policy's AA", again, err)
			}
		} else if !bytes.Equal(first, again) {
			t.Fatalf("duplicate answered\n%q\nwant the first answer\n%q", again, first)
		}
		// The ACK is counted just after its write, so the peer can read it
		// first: wait (bounded) for the count.
		info := l.Info().Totals
		for deadline := time.Now().Add(5 * time.Second); info.AcksSent[AckAA] < 2 && time.Now().Before(deadline); info = l.Info().Totals {
			time.Sleep(time.Millisecond)
		}
		if info.Duplicates != 1 || info.AcksSent[AckAA] != 2 || info.JournalErrors != 0 {
			t.Fatalf("counters = %+v; want 1 duplicate, 2 AA sent", info)
		}
		mu.Lock()
		if dups != 1 {
			t.Fatalf("Observer.Duplicate called %d times, want 1", dups)
		}
		mu.Unlock()
		// The first answer is recorded; a duplicate's only when the policy
		// made it (there was no first answer to give).
		calls := sink.calls()
		want := 1
		if noReply {
			want = 2
		}
		if len(calls) != want || calls[0].seq != 1 || !calls[0].written || calls[0].code != AckAA || !bytes.Equal(calls[0].payload, first) {
			t.Fatalf("Answered calls = %+v; want %d for seq 1, written, with what was sent", calls, want)
		}
		if noReply && (calls[1].seq != 1 || !calls[1].written || !bytes.Equal(calls[1].payload, again)) {
			t.Fatalf("Answered for the duplicate = %+v; want seq 1 with what was sent", calls[1])
		}
	}
}
