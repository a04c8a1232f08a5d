package outbox

import (
	"fmt"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// Defaults of OutboxPolicy's unset fields (the API documents the same
// values; its validation bounds them).
const (
	DefaultMaxAttempts   = 10
	DefaultRetryDelay    = time.Second
	DefaultMaxRetryDelay = 60 * time.Second
	DefaultMaxInFlight   = 1
)

// policy is a connection's OutboxPolicy with its defaults filled in.
type policy struct {
	maxAttempts   int
	retryDelay    time.Duration
	maxRetryDelay time.Duration
	failRejected  bool
	inDoubt       switchboardv1.InDoubtPolicy
	maxInFlight   int
}

func policyOf(spec *switchboardv1.ConnectionConfig) policy {
	p := spec.GetOutbox()
	out := policy{
		maxAttempts:   int(p.GetMaxAttempts()),
		retryDelay:    p.GetRetryDelay().AsDuration(),
		maxRetryDelay: p.GetMaxRetryDelay().AsDuration(),
		failRejected:  p.GetFailRejected(),
		inDoubt:       p.GetInDoubt(),
		maxInFlight:   int(p.GetMaxInFlight()),
	}
	if out.maxAttempts <= 0 {
		out.maxAttempts = DefaultMaxAttempts
	}
	if p.GetRetryDelay() == nil {
		out.retryDelay = DefaultRetryDelay
	}
	if p.GetMaxRetryDelay() == nil {
		out.maxRetryDelay = DefaultMaxRetryDelay
	}
	out.maxRetryDelay = max(out.maxRetryDelay, out.retryDelay)
	if out.inDoubt == switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_UNSPECIFIED {
		out.inDoubt = switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND
	}
	if out.maxInFlight <= 0 {
		out.maxInFlight = DefaultMaxInFlight
	}
	return out
}

// backoff is the wait after the n-th attempt (n >= 1): retryDelay, doubled
// for each further attempt, at most maxRetryDelay.
func (p policy) backoff(n int) time.Duration {
	d := p.retryDelay
	for i := 1; i < n && d < p.maxRetryDelay; i++ {
		d *= 2
	}
	return min(d, p.maxRetryDelay)
}

// outcome is how one attempt ended.
type outcome struct {
	result switchboardv1.AttemptResult
	code   transport.AckCode // the acknowledgement's code, when one came
	err    string            // what went wrong, in words
	// invalid: the message can never be sent on the connection (it was
	// queued under another policy, or transport's checks changed).
	invalid bool
}

// verdict is what becomes of a message after an attempt.
type verdict struct {
	state   switchboardv1.MessageState // ACCEPTED, FAILED, IN_DOUBT, or QUEUED to retry
	failure string                     // for FAILED and IN_DOUBT
}

// decide applies the policy to a message that has made attempts attempts,
// the last of which ended with o. An operator's RESEND makes one more
// attempt whatever the count; only an automatic retry needs attempts left.
func (p policy) decide(attempts int, o outcome) verdict {
	retry := func(why string) verdict {
		if attempts < p.maxAttempts {
			return verdict{state: switchboardv1.MessageState_MESSAGE_STATE_QUEUED}
		}
		return verdict{state: switchboardv1.MessageState_MESSAGE_STATE_FAILED,
			failure: fmt.Sprintf("%s; no attempts left (%d made)", why, attempts)}
	}
	failed := func(why string) verdict {
		return verdict{state: switchboardv1.MessageState_MESSAGE_STATE_FAILED, failure: why}
	}
	switch o.result {
	case switchboardv1.AttemptResult_ATTEMPT_RESULT_ACCEPTED:
		return verdict{state: switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED}
	case switchboardv1.AttemptResult_ATTEMPT_RESULT_REJECTED:
		why := fmt.Sprintf("rejected by the peer (%s)", o.code)
		switch {
		case o.code == transport.AckAE || o.code == transport.AckCE:
			return failed(why + "; the message must be fixed")
		case p.failRejected:
			return failed(why)
		}
		return retry(why)
	case switchboardv1.AttemptResult_ATTEMPT_RESULT_NOT_SENT:
		if o.invalid {
			return failed("cannot be sent on this connection: " + o.err)
		}
		return retry("not sent: " + o.err)
	}
	why := "in doubt: " + o.err
	switch p.inDoubt {
	case switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD:
		return verdict{state: switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT,
			failure: why + "; held until an operator resolves it"}
	case switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_FAIL:
		return failed(why)
	}
	return retry(why)
}
