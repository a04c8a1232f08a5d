package transport

import (
	"context"

	"github.com/switchboard-dev/switchboard/hl7"
)

// Decider makes the decisions of a consumer-decided policy
// (ConsumerDecided): someone other than Switchboard, such as a consumer of
// the API, chooses how a durable message is answered.
type Decider interface {
	// Decide returns the answer to the durable message in (original mode),
	// blocking until it is known or the decider's own deadline passes (then
	// its fallback). When ctx ends (the connection is closing) it returns at
	// once; what it returns is then not written. The Reply's Payload may be
	// appended to dst. in is only valid during the call.
	Decide(ctx context.Context, dst []byte, in *Frame) Reply
	// Later is called for a durable message in enhanced mode, after its
	// commit acknowledgement was decided: the application acknowledgement
	// is decided and sent elsewhere, as a message of its own. Later must
	// not block, and must copy what it keeps of in.
	Later(in *Frame)
}

// ConsumerDecided returns the HL7 policy with the answers to messages
// decided by d. Everything d cannot decide is the HL7 policy's: a message
// that was not stored, that is not readable HL7, that has no control id, a
// batch, and, in enhanced mode, the commit acknowledgement (which goes at
// once after storage, as HL7 intends; d.Later decides the application
// acknowledgement). Classify, Expect and Match are the HL7 policy's.
func ConsumerDecided(d Decider) AckPolicy { return decidedPolicy{d: d} }

type decidedPolicy struct {
	hl7Policy
	d Decider
}

func (decidedPolicy) Name() string { return "hl7-consumer-decided" }

func (p decidedPolicy) Reply(ctx context.Context, dst []byte, in *Frame) Reply {
	h := in.Header
	if in.StoreErr != nil || in.HeaderErr != nil || h.Segment != "MSH" || h.ControlID == "" || hl7.IsBatch(in.Payload) {
		return p.hl7Policy.Reply(ctx, dst, in)
	}
	if h.Enhanced() {
		r := p.hl7Policy.Reply(ctx, dst, in)
		p.d.Later(in)
		return r
	}
	return p.d.Decide(ctx, dst, in)
}
