package transport

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// AckKind selects an acknowledgement policy.
type AckKind int

// Acknowledgement policies.
const (
	// AckHL7 answers with HL7 ACK messages and expects them back.
	AckHL7 AckKind = iota + 1
	// AckSingleByte answers with one byte, 0x06 (ACK) or 0x15 (NAK), framed
	// like data.
	AckSingleByte
	// AckMLLPCommit answers with MLLP Release 2 commit blocks. On the wire it
	// is the single-byte policy inside MLLP framing, which it requires.
	AckMLLPCommit
	// AckFixed answers with a configured payload.
	AckFixed
	// AckNone answers nothing and expects nothing.
	AckNone
)

// The single-byte acknowledgements of the byte and MLLP commit policies.
const (
	byteACK = 0x06
	byteNAK = 0x15
)

// AckPolicy says how received frames are acknowledged and what a Send
// expects back.
type AckPolicy struct {
	Kind AckKind
	// FixedAck is the AckFixed payload for a durable frame.
	FixedAck []byte
	// FixedNak is the AckFixed payload for a frame that could not be stored.
	// Empty: the connection is closed instead.
	FixedNak []byte
}

// String names the policy for logs.
func (p AckPolicy) String() string {
	switch p.Kind {
	case AckHL7:
		return "hl7"
	case AckSingleByte:
		return "single-byte"
	case AckMLLPCommit:
		return "mllp-commit"
	case AckFixed:
		return "fixed"
	case AckNone:
		return "none"
	}
	return fmt.Sprintf("AckKind(%d)", int(p.Kind))
}

// Validate reports whether the policy can be used with framing f.
func (p AckPolicy) Validate(f Framing) error {
	switch p.Kind {
	case AckHL7, AckSingleByte, AckNone:
	case AckMLLPCommit:
		if f.Kind != FramingMLLP {
			return errors.New("the MLLP commit acknowledgement policy requires MLLP framing")
		}
	case AckFixed:
		if len(p.FixedAck) == 0 {
			return errors.New("the fixed acknowledgement policy needs a non-empty ACK payload")
		}
		if bytes.Equal(p.FixedAck, p.FixedNak) {
			return errors.New("the fixed ACK and NAK payloads must differ")
		}
		if err := f.checkPayload(p.FixedAck); err != nil {
			return fmt.Errorf("fixed ACK payload: %w", err)
		}
		if err := f.checkPayload(p.FixedNak); err != nil {
			return fmt.Errorf("fixed NAK payload: %w", err)
		}
	default:
		return fmt.Errorf("unknown acknowledgement policy %d", int(p.Kind))
	}
	return nil
}

// isReply reports whether a received frame is an acknowledgement rather
// than a new message from the peer.
func (p AckPolicy) isReply(frame []byte) bool {
	switch p.Kind {
	case AckHL7:
		// Any HL7 response carrying MSA counts, including query responses.
		return hl7.HasMSA(frame)
	case AckSingleByte, AckMLLPCommit:
		return len(frame) == 1 && (frame[0] == byteACK || frame[0] == byteNAK)
	case AckFixed:
		return bytes.Equal(frame, p.FixedAck) || (len(p.FixedNak) > 0 && bytes.Equal(frame, p.FixedNak))
	}
	return false
}

// ackCode indexes the per-code acknowledgement counters.
type ackCode int

const (
	codeAA ackCode = iota
	codeAE
	codeAR
	codeCA
	codeCE
	codeCR
	codeACK
	codeNAK
	codeFixedACK
	codeFixedNAK
	numAckCodes
)

var ackCodeNames = [numAckCodes]string{"AA", "AE", "AR", "CA", "CE", "CR", "ACK", "NAK", "FIXED_ACK", "FIXED_NAK"}

func (c ackCode) String() string { return ackCodeNames[c] }

func hl7Code(c hl7.AckCode) (ackCode, bool) {
	switch c {
	case hl7.AA:
		return codeAA, true
	case hl7.AE:
		return codeAE, true
	case hl7.AR:
		return codeAR, true
	case hl7.CA:
		return codeCA, true
	case hl7.CE:
		return codeCE, true
	case hl7.CR:
		return codeCR, true
	}
	return 0, false
}

// inbound is what the read loop knows about a received data frame when it
// builds the answer.
type inbound struct {
	payload   []byte
	header    hl7.Header
	headerErr error // non-nil when the payload is not readable HL7
	storeErr  error // non-nil when the Sink did not make the frame durable
}

// answer is the acknowledgement decided for a received frame.
type answer struct {
	payload []byte  // nil: write nothing
	code    ackCode // valid when payload != nil
	close   bool    // close the connection after writing payload (if any)
	text    string  // why the answer is negative, for the log
}

// answer decides the acknowledgement of a received frame. It appends any
// payload to dst. idFn supplies new HL7 control ids.
func (p AckPolicy) answer(dst []byte, in *inbound, now time.Time, idFn func() string) answer {
	switch p.Kind {
	case AckHL7:
		return hl7Answer(dst, in, now, idFn)
	case AckSingleByte, AckMLLPCommit:
		if in.storeErr != nil {
			return answer{payload: append(dst, byteNAK), code: codeNAK, text: "not stored"}
		}
		return answer{payload: append(dst, byteACK), code: codeACK}
	case AckFixed:
		if in.storeErr != nil {
			if len(p.FixedNak) == 0 {
				return answer{close: true, text: "not stored"}
			}
			return answer{payload: append(dst, p.FixedNak...), code: codeFixedNAK, text: "not stored"}
		}
		return answer{payload: append(dst, p.FixedAck...), code: codeFixedACK}
	default: // AckNone
		if in.storeErr != nil {
			return answer{close: true, text: "not stored"}
		}
		return answer{}
	}
}

// hl7Answer builds the HL7 acknowledgement: AA (CA in enhanced mode) once
// durable; AR (CR) when the frame could not be stored or read, built from
// whatever header fields could be read, so the peer never gets silence.
func hl7Answer(dst []byte, in *inbound, now time.Time, idFn func() string) answer {
	h := in.header
	req := hl7.AckRequest{Time: now}
	enhanced := in.headerErr == nil && h.Enhanced()
	switch {
	case errors.Is(in.storeErr, ErrFrameTooLarge):
		req.Code, req.Text, req.ErrorCode = hl7.AR, in.storeErr.Error()+"; not stored", "207"
	case in.storeErr != nil:
		req.Code, req.Text, req.ErrorCode = hl7.AR, "message could not be stored, resend later", "207"
	case in.headerErr != nil:
		req.Code, req.Text, req.ErrorCode = hl7.AR, "not a readable HL7 message: "+in.headerErr.Error(), "100"
	case h.ControlID == "" && h.Segment == "MSH":
		req.Code, req.Text, req.ErrorCode, req.ErrorLocation = hl7.AR, "MSH-10 (message control id) is empty", "101", "MSH^1^10"
	default:
		req.Code = hl7.AA
	}
	if enhanced {
		req.Code = commitLevel(req.Code)
	}
	negative := !req.Code.Positive()
	if in.headerErr == nil && h.IsAck() {
		// Never acknowledge an acknowledgement.
		return answer{}
	}
	if enhanced && !h.AcceptAckWanted(negative) {
		return answer{}
	}
	req.ControlID = idFn()
	code, _ := hl7Code(req.Code)
	a := answer{code: code}
	if negative {
		a.text = req.Text
	}
	if in.headerErr == nil && hl7.IsBatch(in.payload) {
		out, err := hl7.AppendBatchAck(dst, in.payload, req)
		if err == nil {
			a.payload = out
			return a
		}
		// A batch we cannot take apart is still answered, as one message.
	}
	a.payload = hl7.AppendAck(dst, h, req)
	return a
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

// Outcome is what the peer said about a sent message.
type Outcome int

// Send outcomes.
const (
	OutcomeAccepted Outcome = iota + 1
	OutcomeError
	OutcomeRejected
	OutcomeCommitAccepted
	OutcomeCommitError
	OutcomeCommitRejected
	OutcomeByteACK
	OutcomeByteNAK
	OutcomeNoneExpected
	OutcomeMismatch
	OutcomeInvalid
)

var outcomeNames = map[Outcome]string{
	OutcomeAccepted: "accepted", OutcomeError: "error", OutcomeRejected: "rejected",
	OutcomeCommitAccepted: "commit-accepted", OutcomeCommitError: "commit-error", OutcomeCommitRejected: "commit-rejected",
	OutcomeByteACK: "byte-ack", OutcomeByteNAK: "byte-nak", OutcomeNoneExpected: "none-expected",
	OutcomeMismatch: "mismatch", OutcomeInvalid: "invalid",
}

func (o Outcome) String() string {
	if s, ok := outcomeNames[o]; ok {
		return s
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// SendResult is the acknowledgement a Send got.
type SendResult struct {
	Outcome Outcome
	// Ack is the acknowledgement as received, without framing.
	Ack []byte
	// SentControlID is the MSH-10 of the sent message (HL7).
	SentControlID string
	// AckControlID is the MSA-2 of the acknowledgement (HL7).
	AckControlID string
	// AckText is the MSA-3 of the acknowledgement (HL7), verbatim.
	AckText string
	// RoundTrip is the time from the end of the write to the reply.
	RoundTrip time.Duration
	// Reset is true when the connection was closed because the reply could
	// not be trusted (OutcomeMismatch, OutcomeInvalid).
	Reset bool
}

// interpret reads a reply to a message sent with control id sentID.
func (p AckPolicy) interpret(reply []byte, sentID string) (SendResult, ackCode, bool) {
	r := SendResult{Ack: reply, SentControlID: sentID}
	switch p.Kind {
	case AckHL7:
		ack, err := hl7.ParseAck(reply)
		if err != nil {
			r.Outcome, r.Reset = OutcomeInvalid, true
			return r, 0, false
		}
		r.AckControlID, r.AckText = ack.ControlID, ack.Text
		code, known := hl7Code(ack.Code)
		switch {
		case ack.ControlID != sentID:
			r.Outcome, r.Reset = OutcomeMismatch, true
		case !known:
			r.Outcome, r.Reset = OutcomeInvalid, true
		default:
			r.Outcome = [...]Outcome{
				codeAA: OutcomeAccepted, codeAE: OutcomeError, codeAR: OutcomeRejected,
				codeCA: OutcomeCommitAccepted, codeCE: OutcomeCommitError, codeCR: OutcomeCommitRejected,
			}[code]
		}
		return r, code, known
	case AckSingleByte, AckMLLPCommit:
		if reply[0] == byteACK {
			r.Outcome = OutcomeByteACK
			return r, codeACK, true
		}
		r.Outcome = OutcomeByteNAK
		return r, codeNAK, true
	case AckFixed:
		if bytes.Equal(reply, p.FixedAck) {
			r.Outcome = OutcomeAccepted
			return r, codeFixedACK, true
		}
		r.Outcome = OutcomeRejected
		return r, codeFixedNAK, true
	}
	r.Outcome, r.Reset = OutcomeInvalid, true
	return r, 0, false
}
