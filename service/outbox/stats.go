package outbox

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// AttemptResults are the results an attempt can end with, in the order of
// ConnStats.Attempts.
var AttemptResults = []switchboardv1.AttemptResult{
	switchboardv1.AttemptResult_ATTEMPT_RESULT_ACCEPTED,
	switchboardv1.AttemptResult_ATTEMPT_RESULT_REJECTED,
	switchboardv1.AttemptResult_ATTEMPT_RESULT_NOT_SENT,
	switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT,
}

// numResults is the size of the counters indexed by AttemptResult (its
// enum numbers, 0 unused).
const numResults = int(switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT) + 1

// ResultName is an attempt result's name in lower case without the enum's
// prefix ("accepted", "not_sent", ...), for metric labels.
func ResultName(r switchboardv1.AttemptResult) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ATTEMPT_RESULT_"))
}

// ConnStats are one outbound connection's delivery figures.
type ConnStats struct {
	// ConnectionID is the outbound connection's id.
	ConnectionID string
	// Counted is false until the connection's worker has counted its
	// queue (at its start); Queued and InDoubt are 0 until then.
	Counted bool
	// Queued is how many of its messages are neither delivered nor failed
	// (IN_DOUBT ones included).
	Queued int64
	// InDoubt is how many are held IN_DOUBT, waiting for ResolveMessage.
	InDoubt int64
	// Oldest is when the oldest message that is neither delivered nor
	// failed was queued; zero when there is none.
	Oldest time.Time
	// Attempts counts the attempts ended since the worker started, by
	// result, in the order of AttemptResults.
	Attempts []int64
	// Failed counts the messages that failed since the worker started (by
	// the policy or an operator).
	Failed int64
}

// workerStats are a worker's counters; atomics, read at scrape time.
type workerStats struct {
	attempts [numResults]atomic.Int64
	failed   atomic.Int64
	inDoubt  atomic.Int64 // held IN_DOUBT, once counted
}

// Stats returns the figures of every outbound connection, sorted by id. It
// reads counters kept in memory, plus one store read per connection for
// its oldest pending message; it is meant for metrics, at scrape time. A
// nil Outbox has none.
func (o *Outbox) Stats(ctx context.Context) []ConnStats {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	ws := make([]*worker, 0, len(o.workers))
	for _, w := range o.workers {
		ws = append(ws, w)
	}
	o.mu.Unlock()
	slices.SortFunc(ws, func(a, b *worker) int { return strings.Compare(a.id, b.id) })
	out := make([]ConnStats, 0, len(ws))
	for _, w := range ws {
		s := ConnStats{ConnectionID: w.id, Attempts: make([]int64, len(AttemptResults)), Failed: w.stats.failed.Load()}
		for i, r := range AttemptResults {
			s.Attempts[i] = w.stats.attempts[r].Load()
		}
		if w.counted.Load() {
			s.Counted, s.Queued, s.InDoubt = true, w.queued.Load(), w.stats.inDoubt.Load()
		}
		if ms, err := o.store.Pending(ctx, w.id, 0, 1); err == nil && len(ms) > 0 {
			s.Oldest = ms[0].GetCreateTime().AsTime()
		}
		out = append(out, s)
	}
	return out
}
