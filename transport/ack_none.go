package transport

import (
	"context"
	"errors"

	"github.com/switchboard-dev/switchboard/hl7"
)

// NoAck returns the policy that answers nothing and expects nothing. Frames
// are still stored before the next one is read; a frame that cannot be
// stored closes the connection.
func NoAck() AckPolicy { return nonePolicy{} }

type nonePolicy struct{}

func (nonePolicy) Name() string { return "none" }

func (nonePolicy) Validate(Framing) error { return nil }

func (nonePolicy) Classify(*Frame, *Expectation) FrameClass { return FrameMessage }

func (nonePolicy) Reply(_ context.Context, _ []byte, in *Frame) Reply {
	if in.StoreErr != nil {
		return Reply{Close: true, Negative: "not stored"}
	}
	return Reply{}
}

func (nonePolicy) Expect(_ []byte, h *hl7.Header, headerErr error) (Expectation, error) {
	return Expectation{ControlID: controlIDOf(h, headerErr), NoReply: true}, nil
}

func (nonePolicy) Match([]byte, *Expectation) (Outcome, PeerAck, error) {
	return 0, PeerAck{}, errors.New("the none policy expects no reply")
}
