package registry

import (
	"math/rand/v2"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// Reconnect and rebind defaults (ReconnectPolicy documents them).
const (
	defaultRetryDelay    = time.Second
	defaultMaxRetryDelay = time.Minute
	// retryJitter is the largest share of a delay taken off at random, so
	// that resources that failed together (a peer restarting, a restart of
	// this server) do not retry in lockstep. Taking it off, not adding it,
	// keeps max delay the longest wait.
	retryJitter = 0.2
	// stableSession is how long a session must have stayed open for its loss
	// to start the backoff again from the initial delay. A shorter one counts
	// as a failure, so a peer that accepts and hangs up at once is backed off
	// like one that refuses, instead of being redialled every second.
	stableSession = 10 * time.Second
)

// backoff is an exponential retry schedule: initial, doubling up to max,
// each delay shortened by up to retryJitter at random.
type backoff struct {
	initial, max time.Duration
	cur          time.Duration // the delay before the next attempt; 0: initial
}

func newBackoff(initial, maxDelay time.Duration) backoff {
	if initial <= 0 {
		initial = defaultRetryDelay
	}
	if maxDelay <= 0 {
		maxDelay = defaultMaxRetryDelay
	}
	return backoff{initial: initial, max: max(initial, maxDelay)}
}

// reconnectBackoff is the schedule of a connection's policy.
func reconnectBackoff(p *switchboardv1.ReconnectPolicy) backoff {
	return newBackoff(p.GetInitialDelay().AsDuration(), p.GetMaxDelay().AsDuration())
}

// next returns the wait before the next attempt and doubles the one after.
func (b *backoff) next() time.Duration {
	d := b.cur
	if d <= 0 {
		d = b.initial
	}
	b.cur = min(2*d, b.max)
	return d - time.Duration(rand.Float64()*retryJitter*float64(d))
}

// reset starts the schedule again from the initial delay.
func (b *backoff) reset() { b.cur = 0 }
