package transport

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard-dev/switchboard/hl7"
)

// The single-byte acknowledgements of the byte and MLLP commit policies.
const (
	byteACK = 0x06
	byteNAK = 0x15
)

// SingleByteAck returns the policy that answers 0x06 once a frame is
// durable and 0x15 when it could not be stored, each framed like data; Send
// expects one of them back.
func SingleByteAck() AckPolicy { return bytePolicy{name: "single-byte"} }

// MLLPCommitAck returns the MLLP Release 2 commit acknowledgement policy: on
// the wire it is the single-byte policy inside MLLP framing, which it
// requires.
func MLLPCommitAck() AckPolicy { return bytePolicy{name: "mllp-commit", mllpOnly: true} }

type bytePolicy struct {
	name     string
	mllpOnly bool
}

func (p bytePolicy) Name() string { return p.name }

func (p bytePolicy) Validate(f Framing) error {
	if p.mllpOnly && f.Kind != FramingMLLP {
		return errors.New("the MLLP commit acknowledgement policy requires MLLP framing")
	}
	return nil
}

func isByteAck(frame []byte) bool {
	return len(frame) == 1 && (frame[0] == byteACK || frame[0] == byteNAK)
}

func (bytePolicy) Classify(in *Frame, pending *Expectation) FrameClass {
	switch {
	case !isByteAck(in.Payload):
		return FrameMessage
	case pending != nil:
		return FrameReply
	}
	return FrameIgnored
}

func (bytePolicy) Reply(_ context.Context, dst []byte, in *Frame) Reply {
	if in.StoreErr != nil {
		return Reply{Payload: append(dst, byteNAK), Code: AckByteNAK, Negative: "not stored"}
	}
	return Reply{Payload: append(dst, byteACK), Code: AckByteACK}
}

func (bytePolicy) Expect(_ []byte, h *hl7.Header, headerErr error) (Expectation, error) {
	return Expectation{ControlID: controlIDOf(h, headerErr)}, nil
}

func (bytePolicy) Match(reply []byte, _ *Expectation) (Outcome, PeerAck, error) {
	pa := PeerAck{Payload: reply}
	switch {
	case !isByteAck(reply):
		return 0, pa, fmt.Errorf("%w: not 0x06 or 0x15", ErrAckUnreadable)
	case reply[0] == byteACK:
		pa.Code = AckByteACK
		return OutcomeAccepted, pa, nil
	}
	pa.Code = AckByteNAK
	return OutcomeRejected, pa, nil
}

// controlIDOf returns the MSH-10 of a sent message that happens to be HL7,
// for logs and results, under policies that do not match on it.
func controlIDOf(h *hl7.Header, headerErr error) string {
	if headerErr != nil {
		return ""
	}
	return h.ControlID
}
