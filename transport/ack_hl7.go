package transport

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard-dev/switchboard/hl7"
)

// HL7Ack returns the HL7 policy: each message is answered with an HL7 ACK
// built from its header (AA once durable, AR when it could not be stored or
// read; CA/CR in enhanced mode, honouring MSH-15), and Send expects an ACK
// whose MSA-2 is the sent MSH-10.
//
// A frame is an acknowledgement, never answered, when its MSH-9 message
// code is ACK, or when it is the reply to the pending Send (its MSA-2 is the
// sent MSH-10, as for a query response). Any other message is answered,
// even when it carries an MSA segment. An ACK nobody waits for is kept
// (FrameAck): it may be an application ACK that matters to a consumer.
func HL7Ack() AckPolicy { return hl7Policy{} }

type hl7Policy struct{}

func (hl7Policy) Name() string { return "hl7" }

func (hl7Policy) Validate(Framing) error { return nil }

func (hl7Policy) Classify(in *Frame, pending *Expectation) FrameClass {
	if in.HeaderErr != nil {
		return FrameMessage // answered AR: the peer never gets silence
	}
	if in.Header.IsAck() {
		if pending != nil {
			return FrameReply
		}
		return FrameAck
	}
	if pending != nil && pending.ControlID != "" {
		// Only a reply to this Send is one; reading MSA costs a segment
		// scan, so only frames that could be replies pay for it.
		if a, err := hl7.ParseAck(in.Payload); err == nil && a.ControlID == pending.ControlID {
			return FrameReply
		}
	}
	return FrameMessage
}

func (hl7Policy) Reply(_ context.Context, dst []byte, in *Frame) Reply {
	h := in.Header
	req := hl7.AckRequest{Time: in.Time}
	readable := in.HeaderErr == nil
	enhanced := readable && h.Enhanced()
	var invalid bool
	switch {
	case errors.Is(in.StoreErr, ErrFrameTooLarge), errors.Is(in.StoreErr, ErrNoMemory):
		req.Code, req.Text, req.ErrorCode = hl7.AR, in.StoreErr.Error()+"; not stored", "207"
	case in.StoreErr != nil:
		req.Code, req.Text, req.ErrorCode = hl7.AR, "message could not be stored, resend later", "207"
	case !readable:
		invalid = true
		req.Code, req.Text, req.ErrorCode = hl7.AR, "not a readable HL7 message: "+in.HeaderErr.Error(), "100"
	case h.ControlID == "" && h.Segment == "MSH":
		invalid = true
		req.Code, req.Text, req.ErrorCode, req.ErrorLocation = hl7.AR, "MSH-10 (message control id) is empty", "101", "MSH^1^10"
	default:
		req.Code = hl7.AA
	}
	if enhanced {
		req.Code = commitLevel(req.Code)
	}
	negative := !req.Code.Positive()
	r := Reply{Invalid: invalid}
	if negative {
		r.Negative = req.Text
	}
	if enhanced && !h.AcceptAckWanted(negative) {
		return r
	}
	req.ControlID = in.NewControlID()
	r.Code = hl7Code(req.Code)
	if readable && hl7.IsBatch(in.Payload) {
		if out, err := hl7.AppendBatchAck(dst, in.Payload, req); err == nil {
			r.Payload = out
			return r
		}
		// A batch we cannot take apart is still answered, as one message.
	}
	r.Payload = hl7.AppendAck(dst, h, req)
	return r
}

func (hl7Policy) Expect(_ []byte, h *hl7.Header, headerErr error) (Expectation, error) {
	if headerErr != nil {
		return Expectation{}, fmt.Errorf("%w: the HL7 policy needs an HL7 message to match the acknowledgement to: %w", ErrInvalidPayload, headerErr)
	}
	if h.ControlID == "" {
		return Expectation{}, fmt.Errorf("%w: MSH-10 (message control id) is empty; the acknowledgement could not be matched to it", ErrInvalidPayload)
	}
	return Expectation{ControlID: h.ControlID}, nil
}

func (hl7Policy) Match(reply []byte, exp *Expectation) (Outcome, PeerAck, error) {
	pa := PeerAck{Payload: reply}
	a, err := hl7.ParseAck(reply)
	if err != nil {
		return 0, pa, fmt.Errorf("%w: %w", ErrAckUnreadable, err)
	}
	pa.Code, pa.ControlID, pa.Text = hl7Code(a.Code), a.ControlID, a.Text
	switch {
	case a.ControlID != exp.ControlID:
		return 0, pa, fmt.Errorf("%w: MSA-2 is not the sent MSH-10", ErrAckMismatch)
	case pa.Code == 0:
		return 0, pa, fmt.Errorf("%w: unknown MSA-1 code", ErrAckUnreadable)
	case pa.Code.Positive():
		return OutcomeAccepted, pa, nil
	}
	return OutcomeRejected, pa, nil
}

// HL7Code maps an HL7 MSA-1 code to its AckCode; 0 for unknown codes.
func HL7Code(c hl7.AckCode) AckCode { return hl7Code(c) }

func hl7Code(c hl7.AckCode) AckCode {
	switch c {
	case hl7.AA:
		return AckAA
	case hl7.AE:
		return AckAE
	case hl7.AR:
		return AckAR
	case hl7.CA:
		return AckCA
	case hl7.CE:
		return AckCE
	case hl7.CR:
		return AckCR
	}
	return 0
}

// commitLevel maps an original-mode code to its enhanced-mode (accept
// acknowledgement) counterpart.
func commitLevel(c hl7.AckCode) hl7.AckCode {
	switch c {
	case hl7.AA:
		return hl7.CA
	case hl7.AE:
		return hl7.CE
	case hl7.AR:
		return hl7.CR
	}
	return c
}
