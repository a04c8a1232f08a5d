package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/switchboard-dev/switchboard/hl7"
)

// FixedAck returns the policy that answers every durable frame with ack,
// and a frame that could not be stored with nak; with an empty nak the
// connection is closed instead, so a positive answer is never sent. Send
// expects one of the two back.
func FixedAck(ack, nak []byte) AckPolicy {
	return fixedPolicy{ack: bytes.Clone(ack), nak: bytes.Clone(nak)}
}

type fixedPolicy struct{ ack, nak []byte }

func (fixedPolicy) Name() string { return "fixed" }

func (p fixedPolicy) Validate(f Framing) error {
	if len(p.ack) == 0 {
		return errors.New("the fixed acknowledgement policy needs a non-empty ACK payload")
	}
	if bytes.Equal(p.ack, p.nak) {
		return errors.New("the fixed ACK and NAK payloads must differ")
	}
	if err := f.CheckPayload(p.ack); err != nil {
		return fmt.Errorf("fixed ACK payload: %w", err)
	}
	if err := f.CheckPayload(p.nak); err != nil {
		return fmt.Errorf("fixed NAK payload: %w", err)
	}
	return nil
}

func (p fixedPolicy) code(frame []byte) AckCode {
	switch {
	case bytes.Equal(frame, p.ack):
		return AckFixedACK
	case len(p.nak) > 0 && bytes.Equal(frame, p.nak):
		return AckFixedNAK
	}
	return 0
}

func (p fixedPolicy) Classify(in *Frame, pending *Expectation) FrameClass {
	switch {
	case p.code(in.Payload) == 0:
		return FrameMessage
	case pending != nil:
		return FrameReply
	}
	return FrameIgnored
}

func (p fixedPolicy) Reply(_ context.Context, dst []byte, in *Frame) Reply {
	switch {
	case in.StoreErr == nil:
		return Reply{Payload: append(dst, p.ack...), Code: AckFixedACK}
	case len(p.nak) == 0:
		return Reply{Close: true, Negative: "not stored"}
	}
	return Reply{Payload: append(dst, p.nak...), Code: AckFixedNAK, Negative: "not stored"}
}

func (fixedPolicy) Expect(_ []byte, h *hl7.Header, headerErr error) (Expectation, error) {
	return Expectation{ControlID: controlIDOf(h, headerErr)}, nil
}

func (p fixedPolicy) Match(reply []byte, _ *Expectation) (Outcome, PeerAck, error) {
	pa := PeerAck{Payload: reply, Code: p.code(reply)}
	switch pa.Code {
	case AckFixedACK:
		return OutcomeAccepted, pa, nil
	case AckFixedNAK:
		return OutcomeRejected, pa, nil
	}
	return 0, pa, fmt.Errorf("%w: neither the fixed ACK nor the fixed NAK", ErrAckUnreadable)
}
