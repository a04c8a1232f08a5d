package outbox

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// TestPolicyDefaults: an unset OutboxPolicy is the documented one.
func TestPolicyDefaults(t *testing.T) {
	got := policyOf(&switchboardv1.ConnectionConfig{})
	want := policy{maxAttempts: 10, retryDelay: time.Second, maxRetryDelay: time.Minute,
		inDoubt: switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND, maxInFlight: 1}
	if got != want {
		t.Errorf("policyOf(unset) = %+v, want %+v", got, want)
	}
	// A maximum below the first delay does not shorten the first delay.
	p := policyOf(&switchboardv1.ConnectionConfig{Outbox: &switchboardv1.OutboxPolicy{
		RetryDelay: durationpb.New(5 * time.Second), MaxRetryDelay: durationpb.New(time.Second)}})
	if p.backoff(1) != 5*time.Second || p.backoff(4) != 5*time.Second {
		t.Errorf("backoff = %v, %v; want 5s, 5s", p.backoff(1), p.backoff(4))
	}
}

// TestBackoff: the delay starts at retry_delay and doubles up to
// max_retry_delay.
func TestBackoff(t *testing.T) {
	p := policy{retryDelay: 100 * time.Millisecond, maxRetryDelay: time.Second}
	var got []time.Duration
	for n := 1; n <= 6; n++ {
		got = append(got, p.backoff(n))
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff(1..6) = %v, want %v", got, want)
		}
	}
	if d := (policy{retryDelay: time.Second, maxRetryDelay: time.Hour}).backoff(1000); d != time.Hour {
		t.Errorf("backoff(1000) = %v, want the maximum", d)
	}
}

// TestDecide pins what becomes of a message after each kind of attempt,
// under each policy.
func TestDecide(t *testing.T) {
	const (
		queued   = switchboardv1.MessageState_MESSAGE_STATE_QUEUED
		accepted = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
		failed   = switchboardv1.MessageState_MESSAGE_STATE_FAILED
		inDoubt  = switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT
	)
	var (
		ok       = outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_ACCEPTED, code: transport.AckAA}
		ae       = outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_REJECTED, code: transport.AckAE}
		ce       = outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_REJECTED, code: transport.AckCE}
		ar       = outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_REJECTED, code: transport.AckAR}
		nak      = outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_REJECTED, code: transport.AckByteNAK}
		notSent  = outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_NOT_SENT, err: "connection closed"}
		invalid  = outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_NOT_SENT, err: "invalid payload", invalid: true}
		doubt    = outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT, err: "no acknowledgement"}
		base     = policy{maxAttempts: 3, inDoubt: switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND}
		strict   = policy{maxAttempts: 3, failRejected: true, inDoubt: switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND}
		hold     = policy{maxAttempts: 3, inDoubt: switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD}
		failDoub = policy{maxAttempts: 3, inDoubt: switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_FAIL}
	)
	for _, tc := range []struct {
		name     string
		p        policy
		attempts int
		o        outcome
		want     switchboardv1.MessageState
		failure  string // a part of the reason
	}{
		{"accepted", base, 1, ok, accepted, ""},
		{"accepted on the last attempt", base, 3, ok, accepted, ""},
		{"AE fails at once", base, 1, ae, failed, "rejected by the peer (AE); the message must be fixed"},
		{"CE fails at once", base, 1, ce, failed, "(CE)"},
		{"AR is retried", base, 1, ar, queued, ""},
		{"a NAK is retried", base, 2, nak, queued, ""},
		{"AR out of attempts", base, 3, ar, failed, "rejected by the peer (AR); no attempts left (3 made)"},
		{"AR with fail_rejected", strict, 1, ar, failed, "rejected by the peer (AR)"},
		{"AE with fail_rejected", strict, 1, ae, failed, "(AE)"},
		{"not sent is retried", base, 1, notSent, queued, ""},
		{"not sent out of attempts", base, 3, notSent, failed, "not sent: connection closed; no attempts left"},
		{"never sendable", base, 1, invalid, failed, "cannot be sent on this connection"},
		{"in doubt, resend", base, 1, doubt, queued, ""},
		{"in doubt, resend out of attempts", base, 3, doubt, failed, "in doubt: no acknowledgement; no attempts left"},
		{"in doubt, hold", hold, 1, doubt, inDoubt, "in doubt: no acknowledgement; held"},
		{"in doubt, hold, past the attempts", hold, 7, doubt, inDoubt, "held"},
		{"in doubt, fail", failDoub, 1, doubt, failed, "in doubt: no acknowledgement"},
		{"AR under hold is still retried", hold, 1, ar, queued, ""},
	} {
		v := tc.p.decide(tc.attempts, tc.o)
		if v.state != tc.want || !strings.Contains(v.failure, tc.failure) || (tc.failure == "" && v.failure != "") {
			t.Errorf("%s: decide = %v %q, want %v with %q", tc.name, v.state, v.failure, tc.want, tc.failure)
		}
	}
}

// TestEnumsCovered: every value of the API's outbox enums is one the
// outbox produces or handles, so a value added to the API cannot be ignored
// unnoticed.
func TestEnumsCovered(t *testing.T) {
	// Every way an attempt can end.
	results := map[switchboardv1.AttemptResult]bool{}
	for _, c := range []struct {
		res transport.SendResult
		err error
	}{
		{transport.SendResult{Outcome: transport.OutcomeAccepted}, nil},
		{transport.SendResult{Outcome: transport.OutcomeWritten}, nil},
		{transport.SendResult{Outcome: transport.OutcomeRejected, Ack: transport.PeerAck{Code: transport.AckAR}}, nil},
		{transport.SendResult{}, &transport.SendError{Cause: transport.CauseNotOpen, Err: transport.ErrClosed}},
		{transport.SendResult{}, &transport.SendError{Written: true, Cause: transport.CauseAckTimeout, Err: transport.ErrAckTimeout}},
	} {
		results[outcomeOf(c.res, c.err).result] = true
	}
	eachValue(t, func(r switchboardv1.AttemptResult) bool { return results[r] })

	// Each in-doubt policy does something of its own.
	doubt := outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT, err: "x"}
	did := map[switchboardv1.MessageState]bool{}
	eachValue(t, func(p switchboardv1.InDoubtPolicy) bool {
		pol := policyOf(&switchboardv1.ConnectionConfig{Outbox: &switchboardv1.OutboxPolicy{InDoubt: p, MaxAttempts: 5}})
		st := pol.decide(1, doubt).state
		dup := did[st]
		did[st] = true
		return !dup
	})

	// Every resolution settles a message held in doubt.
	eachValue(t, func(r switchboardv1.Resolution) bool {
		m := &switchboardv1.Message{State: switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT}
		return resolve(m, r) == nil && m.GetState() != switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT
	})

	// Every state is one a message can be in: those decide leads to, the
	// two of an attempt under way, and inbound messages' RECEIVED.
	states := map[switchboardv1.MessageState]bool{
		switchboardv1.MessageState_MESSAGE_STATE_SENDING:      true,
		switchboardv1.MessageState_MESSAGE_STATE_AWAITING_ACK: true,
		switchboardv1.MessageState_MESSAGE_STATE_RECEIVED:     true,
	}
	for _, o := range []outcome{{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_ACCEPTED}, doubt,
		{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_REJECTED, code: transport.AckAE}} {
		for _, p := range []switchboardv1.InDoubtPolicy{switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND, switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD} {
			states[policy{maxAttempts: 3, inDoubt: p}.decide(1, o).state] = true
		}
	}
	eachValue(t, func(s switchboardv1.MessageState) bool { return states[s] })
}

// eachValue calls ok for every value of enum E but the zero one and fails
// the test for those it rejects.
func eachValue[E interface {
	~int32
	protoreflect.Enum
}](t *testing.T, ok func(E) bool) {
	t.Helper()
	var zero E
	vals := zero.Descriptor().Values()
	for i := range vals.Len() {
		if n := vals.Get(i).Number(); n != 0 && !ok(E(n)) {
			t.Errorf("%s: %s is not handled", zero.Descriptor().Name(), vals.Get(i).Name())
		}
	}
}
