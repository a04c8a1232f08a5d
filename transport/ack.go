package transport

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// AckPolicy decides how a connection acknowledges what it receives and what
// a Send expects back. The connection code knows nothing of any particular
// policy: it asks the policy what a received frame is (Classify), what to
// answer a message once the Sink has appended it (Reply), and, for Send,
// what the reply must match (Expect) and what a reply means (Match).
//
// Policies are immutable values shared by every connection that uses them;
// their methods are called from those connections' goroutines at once.
type AckPolicy interface {
	// Name is a short name for logs: "hl7", "single-byte", ...
	Name() string
	// Validate reports whether the policy can be used with framing f.
	Validate(f Framing) error
	// Classify says what a received frame is. pending describes the Send
	// waiting for its acknowledgement on the connection, or is nil.
	Classify(in *Frame, pending *Expectation) FrameClass
	// Reply decides the answer to a received message after the Sink's
	// append (in.Seq, in.StoreErr), appending any payload to dst. It may
	// block until the decision is made elsewhere (a consumer-decided policy)
	// and must return when ctx ends; policies that decide from the frame
	// alone return at once.
	Reply(ctx context.Context, dst []byte, in *Frame) Reply
	// Expect checks a payload before Send writes it and says what its
	// acknowledgement must match. Errors wrap ErrInvalidPayload.
	Expect(payload []byte, h *hl7.Header, headerErr error) (Expectation, error)
	// Match reads the reply to a message sent with expectation exp. A reply
	// that cannot be trusted (another message's acknowledgement, an
	// unreadable one) is an error: ErrAckMismatch or ErrAckUnreadable; the
	// returned PeerAck still holds what could be read of it.
	Match(reply []byte, exp *Expectation) (Outcome, PeerAck, error)
}

// Frame is what the read loop knows about a received frame. The header
// is parsed once per frame and used by every later step: classifying the
// frame, building the answer and the Sink's record.
type Frame struct {
	// Payload is the frame without framing; valid only during the call.
	Payload []byte
	// Header holds the HL7 header when HeaderErr is nil.
	Header hl7.Header
	// HeaderErr says why Payload is not a readable HL7 message.
	HeaderErr error
	// Time is when the frame was received.
	Time time.Time
	// Seq is the Sink's sequence for the frame once appended.
	Seq uint64
	// StoreErr is non-nil when the frame is not durable: the Sink failed, or
	// the frame was refused before it could be stored (too large, no
	// memory). A policy must never answer positively then.
	StoreErr error
	// NewControlID returns a fresh control id for an HL7 acknowledgement.
	NewControlID func() string
	// ConnectionID is the connection the frame arrived on.
	ConnectionID string
	// PeerIdentity is the identity of the peer's verified TLS certificate;
	// empty without one.
	PeerIdentity string
}

// FrameClass is what a received frame is.
type FrameClass int

const (
	// FrameMessage is a message: it is stored, then answered.
	FrameMessage FrameClass = iota + 1
	// FrameReply is the acknowledgement the pending Send waits for.
	FrameReply
	// FrameAck is an acknowledgement nobody waits for that is worth keeping
	// (an HL7 application ACK, say): it is stored as such, never answered.
	FrameAck
	// FrameIgnored is an acknowledgement nobody waits for that carries
	// nothing worth keeping (a stray 0x06): it is counted and dropped.
	FrameIgnored
)

func (c FrameClass) String() string {
	switch c {
	case FrameMessage:
		return "message"
	case FrameReply:
		return "reply"
	case FrameAck:
		return "ack"
	case FrameIgnored:
		return "ignored"
	}
	return fmt.Sprintf("FrameClass(%d)", int(c))
}

// Reply is the answer a policy decided for a received message.
type Reply struct {
	// Payload is written to the peer, framed; nil: write nothing.
	Payload []byte
	// Code is the acknowledgement's code, counted when Payload is written.
	Code AckCode
	// Close closes the connection after Payload (if any) is written.
	Close bool
	// Negative says why the answer is negative, for the log; empty when it
	// is positive or there is none.
	Negative string
	// Invalid reports that the message could not be read under the policy
	// (counted as an invalid message).
	Invalid bool
}

// Expectation is what a sent message's acknowledgement must match.
type Expectation struct {
	// ControlID is the sent message's HL7 MSH-10, when it has one.
	ControlID string
	// NoReply is true when the policy expects no acknowledgement.
	NoReply bool
}

// AckCode is an acknowledgement code as sent or received.
type AckCode int

// Acknowledgement codes.
const (
	AckAA AckCode = iota + 1
	AckAE
	AckAR
	AckCA
	AckCE
	AckCR
	AckByteACK
	AckByteNAK
	AckFixedACK
	AckFixedNAK
	numAckCodes = iota
)

var ackCodeNames = [...]string{
	AckAA: "AA", AckAE: "AE", AckAR: "AR", AckCA: "CA", AckCE: "CE", AckCR: "CR",
	AckByteACK: "ACK", AckByteNAK: "NAK", AckFixedACK: "FIXED_ACK", AckFixedNAK: "FIXED_NAK",
}

func (c AckCode) String() string {
	if c > 0 && int(c) < len(ackCodeNames) {
		return ackCodeNames[c]
	}
	return fmt.Sprintf("AckCode(%d)", int(c))
}

// AckCodes lists every code, for callers that map them.
func AckCodes() []AckCode {
	out := make([]AckCode, 0, numAckCodes)
	for c := AckAA; c <= AckFixedNAK; c++ {
		out = append(out, c)
	}
	return out
}

// Positive reports whether the code accepts the message.
func (c AckCode) Positive() bool {
	return c == AckAA || c == AckCA || c == AckByteACK || c == AckFixedACK
}

// Outcome is what a Send's acknowledgement says about the message.
type Outcome int

// Send outcomes. A message in doubt or not sent is a *SendError, never an
// Outcome.
const (
	// OutcomeAccepted: the peer acknowledged the message positively.
	OutcomeAccepted Outcome = iota + 1
	// OutcomeRejected: the peer has the message and answered negatively.
	OutcomeRejected
	// OutcomeWritten: the policy expects no acknowledgement.
	OutcomeWritten
)

func (o Outcome) String() string {
	switch o {
	case OutcomeAccepted:
		return "accepted"
	case OutcomeRejected:
		return "rejected"
	case OutcomeWritten:
		return "written"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Outcomes lists every outcome, for callers that map them.
func Outcomes() []Outcome { return []Outcome{OutcomeAccepted, OutcomeRejected, OutcomeWritten} }

// PeerAck is an acknowledgement as the peer sent it.
type PeerAck struct {
	// Code is its code; zero when it could not be read.
	Code AckCode
	// Payload is the acknowledgement as received, without framing.
	Payload []byte
	// ControlID is HL7 MSA-2, the id it acknowledges.
	ControlID string
	// Text is HL7 MSA-3, verbatim.
	Text string
}

// SendResult is what a Send got back.
type SendResult struct {
	Outcome Outcome
	// Ack is the acknowledgement; empty for OutcomeWritten.
	Ack PeerAck
	// SentControlID is the MSH-10 of the sent message (HL7).
	SentControlID string
	// RoundTrip is the time from the end of the write to the reply.
	RoundTrip time.Duration
}
