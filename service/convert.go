package service

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// Defaults for unset durations in the API.
const (
	defaultKeepalive    = 30 * time.Second
	defaultDrainTimeout = 5 * time.Second
)

func framingFromProto(f *switchboardv1.Framing, maxFrameBytes uint32) transport.Framing {
	out := transport.Framing{Kind: transport.FramingMLLP, MaxFrameBytes: int(maxFrameBytes)}
	switch k := f.GetKind().(type) {
	case *switchboardv1.Framing_Mllp:
		out.Strict = k.Mllp.GetStrict()
	case *switchboardv1.Framing_LengthPrefix:
		out.Kind = transport.FramingLengthPrefix
	case *switchboardv1.Framing_Delimiter:
		out.Kind = transport.FramingDelimiter
		out.Delimiter = k.Delimiter.GetDelimiter()
	case *switchboardv1.Framing_StartEnd:
		out.Kind = transport.FramingStartEnd
		out.Start, out.End, out.Strict = k.StartEnd.GetStart(), k.StartEnd.GetEnd(), k.StartEnd.GetStrict()
	}
	return out
}

func ackFromProto(p *switchboardv1.AckPolicy) transport.AckPolicy {
	switch k := p.GetKind().(type) {
	case *switchboardv1.AckPolicy_SingleByte:
		return transport.AckPolicy{Kind: transport.AckSingleByte}
	case *switchboardv1.AckPolicy_MllpCommit:
		return transport.AckPolicy{Kind: transport.AckMLLPCommit}
	case *switchboardv1.AckPolicy_Fixed:
		return transport.AckPolicy{Kind: transport.AckFixed, FixedAck: k.Fixed.GetAck(), FixedNak: k.Fixed.GetNak()}
	case *switchboardv1.AckPolicy_None:
		return transport.AckPolicy{Kind: transport.AckNone}
	}
	return transport.AckPolicy{Kind: transport.AckHL7}
}

// durationOr returns d, or def when d is unset.
func durationOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

// checkAddress rejects an address that is not host:port with a numeric
// port, so a typo is INVALID_ARGUMENT rather than looking like an outage.
// Port 0 (any free port) only makes sense for listening.
func checkAddress(addr string, listen bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: address %q: %w", errInvalid, addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	switch {
	case err != nil:
		return fmt.Errorf("%w: address %q: the port must be a number from 0 to 65535", errInvalid, addr)
	case p == 0 && !listen:
		return fmt.Errorf("%w: address %q: port 0 can only be listened on", errInvalid, addr)
	}
	return nil
}

func listenerConnConfig(c *switchboardv1.ListenerConfig) (transport.ConnConfig, error) {
	if err := checkAddress(c.GetAddress(), true); err != nil {
		return transport.ConnConfig{}, err
	}
	cc := transport.ConnConfig{
		Framing:      framingFromProto(c.GetFraming(), c.GetMaxFrameBytes()),
		Ack:          ackFromProto(c.GetAckPolicy()),
		IdleTimeout:  durationOr(c.GetIdleTimeout(), 0),
		FrameTimeout: durationOr(c.GetFrameTimeout(), transport.DefaultFrameTimeout),
		Keepalive:    durationOr(c.GetKeepalive(), defaultKeepalive),
	}.WithDefaults()
	if err := cc.Validate(); err != nil {
		return cc, fmt.Errorf("%w: %w", errInvalid, err)
	}
	return cc, nil
}

func dialConnConfig(c *switchboardv1.ConnectionConfig) (transport.ConnConfig, error) {
	if err := checkAddress(c.GetAddress(), false); err != nil {
		return transport.ConnConfig{}, err
	}
	cc := transport.ConnConfig{
		Framing:    framingFromProto(c.GetFraming(), c.GetMaxFrameBytes()),
		Ack:        ackFromProto(c.GetAckPolicy()),
		AckTimeout: durationOr(c.GetAckTimeout(), transport.DefaultAckTimeout),
		Keepalive:  durationOr(c.GetKeepalive(), defaultKeepalive),
	}.WithDefaults()
	if err := cc.Validate(); err != nil {
		return cc, fmt.Errorf("%w: %w", errInvalid, err)
	}
	return cc, nil
}

var listenerStates = map[transport.ListenerState]switchboardv1.ListenerState{
	transport.Listening: switchboardv1.ListenerState_LISTENER_STATE_LISTENING,
	transport.Draining:  switchboardv1.ListenerState_LISTENER_STATE_DRAINING,
	transport.Stopped:   switchboardv1.ListenerState_LISTENER_STATE_STOPPED,
}

var connStates = map[transport.ConnState]switchboardv1.ConnectionState{
	transport.StateOpen:     switchboardv1.ConnectionState_CONNECTION_STATE_OPEN,
	transport.StateDraining: switchboardv1.ConnectionState_CONNECTION_STATE_DRAINING,
	transport.StateClosed:   switchboardv1.ConnectionState_CONNECTION_STATE_CLOSED,
}

var directions = map[transport.Direction]switchboardv1.Direction{
	transport.Inbound:  switchboardv1.Direction_DIRECTION_INBOUND,
	transport.Outbound: switchboardv1.Direction_DIRECTION_OUTBOUND,
}

func listenerToProto(e *listenerEntry) *switchboardv1.Listener {
	info := e.l.Info()
	return &switchboardv1.Listener{
		ListenerId:          info.ID,
		Config:              e.config,
		BoundAddress:        info.Addr,
		State:               listenerStates[info.State],
		StartTime:           timestamppb.New(e.started),
		ActiveConnections:   uint32(info.Active),
		AcceptedConnections: info.Accepted,
		RejectedConnections: info.Rejected,
	}
}

func connToProto(e *connEntry) *switchboardv1.Connection {
	info := e.c.Info()
	k := info.Counters
	return &switchboardv1.Connection{
		ConnectionId:     info.ID,
		Direction:        directions[info.Direction],
		ListenerId:       info.ListenerID,
		LocalAddress:     info.LocalAddr,
		RemoteAddress:    info.RemoteAddr,
		State:            connStates[info.State],
		OpenTime:         timestamppb.New(info.OpenTime),
		LastActivityTime: timestamppb.New(info.LastActivity),
		Config:           e.config,
		Counters: &switchboardv1.ConnectionCounters{
			FramesIn:               k.FramesIn,
			BytesIn:                k.BytesIn,
			FramesOut:              k.FramesOut,
			BytesOut:               k.BytesOut,
			AcksSent:               k.AcksSent,
			AcksReceived:           k.AcksReceived,
			JunkBytes:              k.JunkBytes,
			DiscardedPartialFrames: k.DiscardedPartials,
			MissingTrailers:        k.MissingTrailers,
			FramingErrors:          k.FramingErrors,
			JournalErrors:          k.JournalErrors,
			InvalidMessages:        k.InvalidMessages,
			SendTimeouts:           k.SendTimeouts,
			AckMismatches:          k.AckMismatches,
			UnsolicitedAcks:        k.UnsolicitedAcks,
		},
	}
}

var outcomes = map[transport.Outcome]switchboardv1.AckOutcome{
	transport.OutcomeAccepted:       switchboardv1.AckOutcome_ACK_OUTCOME_ACCEPTED,
	transport.OutcomeError:          switchboardv1.AckOutcome_ACK_OUTCOME_ERROR,
	transport.OutcomeRejected:       switchboardv1.AckOutcome_ACK_OUTCOME_REJECTED,
	transport.OutcomeCommitAccepted: switchboardv1.AckOutcome_ACK_OUTCOME_COMMIT_ACCEPTED,
	transport.OutcomeCommitError:    switchboardv1.AckOutcome_ACK_OUTCOME_COMMIT_ERROR,
	transport.OutcomeCommitRejected: switchboardv1.AckOutcome_ACK_OUTCOME_COMMIT_REJECTED,
	transport.OutcomeByteACK:        switchboardv1.AckOutcome_ACK_OUTCOME_BYTE_ACK,
	transport.OutcomeByteNAK:        switchboardv1.AckOutcome_ACK_OUTCOME_BYTE_NAK,
	transport.OutcomeNoneExpected:   switchboardv1.AckOutcome_ACK_OUTCOME_NONE_EXPECTED,
	transport.OutcomeMismatch:       switchboardv1.AckOutcome_ACK_OUTCOME_MISMATCH,
	transport.OutcomeInvalid:        switchboardv1.AckOutcome_ACK_OUTCOME_INVALID,
}

func sendResultToProto(r transport.SendResult) *switchboardv1.SendResponse {
	return &switchboardv1.SendResponse{
		Outcome:         outcomes[r.Outcome],
		AckPayload:      r.Ack,
		SentControlId:   r.SentControlID,
		AckControlId:    r.AckControlID,
		AckText:         r.AckText,
		RoundTrip:       durationpb.New(r.RoundTrip),
		ConnectionReset: r.Reset,
	}
}
