package service

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/transport"
)

// Duplicate suppression (ListenerConfig.duplicates): a listener's sink
// gives each HL7 message a journal DedupID made of the listener, the scope's
// identity of the peer and MSH-10, so the journal stores a resend within the
// window once; the resend is answered with the first answer's bytes, which
// the sink recorded in the AnswerStore when it was written.

// DefaultDuplicateWindow is the window of a listener whose
// DuplicateSuppression leaves it unset.
const DefaultDuplicateWindow = time.Hour

// dedupSink is the journalSink of a listener with duplicate suppression or
// a deciding consumer. It records every answer (transport.AnswerRecorder).
type dedupSink struct {
	journalSink
	answers AnswerStore
	window  time.Duration // 0: no duplicate suppression
	byAddr  bool          // scope REMOTE_ADDRESS; else SENDER
	// decided is the service, when a consumer decides the listener's
	// answers: it records those itself (appack.go).
	decided *Service
}

var (
	_ transport.Sink           = dedupSink{}
	_ transport.AnswerRecorder = dedupSink{}
)

// listenerSink is the sink for a listener configured as c.
func (s *Service) listenerSink(c *switchboardv1.ListenerConfig) transport.Sink {
	d := c.GetDuplicates()
	if d == nil && c.GetConsumerAck() == nil {
		return s.sink
	}
	sink := dedupSink{journalSink: journalSink{j: s.journal}, answers: s.answers}
	if d != nil {
		sink.window = durationOr(d.GetWindow(), DefaultDuplicateWindow)
		sink.byAddr = d.GetScope() == switchboardv1.DuplicateScope_DUPLICATE_SCOPE_REMOTE_ADDRESS
	}
	if c.GetConsumerAck() != nil {
		sink.decided = s
	}
	return sink
}

// checkDuplicates rejects duplicate suppression on a listener whose policy
// is not HL7: only HL7 messages carry the control id it compares, and the
// first answer it repeats.
func checkDuplicates(c *switchboardv1.ListenerConfig) error {
	if c.GetDuplicates() == nil {
		return nil
	}
	switch c.GetAckPolicy().GetKind().(type) {
	case nil, *switchboardv1.AckPolicy_Hl7:
		return nil
	}
	return errInvalid{field: "config.duplicates", msg: "duplicate suppression needs the HL7 ack policy"}
}

// dedupID is m's DedupID: the listener id (which holds no NUL), NUL, the
// scope ("S" with MSH-3 and MSH-4, or "R" with the peer's IP), each part
// length-prefixed so that no two identities run together, then MSH-10.
// Empty (no suppression) for a message without MSH-10.
func (s dedupSink) dedupID(m *transport.Message) string {
	if s.window == 0 || m.ControlID == "" || m.Class != transport.FrameMessage {
		return ""
	}
	b := make([]byte, 0, len(m.ListenerID)+len(m.SendingApplication)+len(m.SendingFacility)+len(m.ControlID)+16)
	b = append(append(b, m.ListenerID...), 0)
	part := func(p string) {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	if s.byAddr {
		host, _, err := net.SplitHostPort(m.RemoteAddr)
		if err != nil {
			host = m.RemoteAddr
		}
		b = append(b, 'R')
		part(host)
	} else {
		b = append(b, 'S')
		part(m.SendingApplication)
		part(m.SendingFacility)
	}
	return string(append(b, m.ControlID...))
}

// Append stores m unless the journal holds it already; a duplicate is a
// *transport.DuplicateError with the first answer.
func (s dedupSink) Append(ctx context.Context, m *transport.Message) (uint64, error) {
	r := s.record(m)
	if r.DedupID = s.dedupID(m); r.DedupID != "" {
		r.DedupWindow = s.window
	}
	seq, err := s.j.Append(ctx, r)
	var de *journal.DuplicateError
	if !errors.As(err, &de) {
		return seq, err
	}
	dup := &transport.DuplicateError{Seq: de.Seq}
	if v, err := s.answers.Answer(ctx, de.Seq); err == nil {
		// No stored answer (or an unreadable one): the policy answers as
		// for a stored message.
		var a switchboardv1.InboundAnswer
		if proto.Unmarshal(v, &a) == nil && len(a.GetSent()) > 0 {
			dup.Reply, dup.Code = a.GetSent(), ackCodeFromProto(a.GetCode())
		}
	}
	return de.Seq, dup
}

// Answered records what was answered for a stored message, unsynced: an
// answer lost in a crash only means a resend is answered afresh.
func (s dedupSink) Answered(_ *transport.Message, seq uint64, r transport.Reply, written bool) {
	if s.decided != nil && s.decided.answered(seq, written) {
		return
	}
	if s.window == 0 {
		return
	}
	v, err := proto.Marshal(&switchboardv1.InboundAnswer{
		Code:       ackCode(r.Code),
		Sent:       r.Payload,
		Written:    written,
		AnswerTime: timestamppb.Now(),
	})
	if err == nil {
		// A failure is the journal's, reported by its Health.
		_ = s.answers.PutAnswer(context.Background(), seq, v, false)
	}
}

// ackCodeFromProto is ackCode's inverse; 0 for UNSPECIFIED.
func ackCodeFromProto(c switchboardv1.AckCode) transport.AckCode {
	for _, t := range transport.AckCodes() {
		if ackCode(t) == c {
			return t
		}
	}
	return 0
}
