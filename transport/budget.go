package transport

import "sync/atomic"

// MemoryBudget bounds the memory that the connections sharing it hold for
// frames being received. Each connection keeps an idle buffer of 4 KiB for
// free; what its buffer grows beyond that, to hold a large or incomplete
// frame, is charged to the budget and given back when the frame is done. A
// frame that cannot get memory is refused with ErrNoMemory: the peer gets a
// negative acknowledgement when the policy can build one ("resend later")
// and the connection closes. Nothing already accepted is lost, and many
// peers sending large frames at once cannot exhaust the process.
//
// Without a budget each connection is still bounded by its MaxFrameBytes,
// so the worst case is connections × MaxFrameBytes.
type MemoryBudget struct {
	limit      int64
	used, peak atomic.Int64
	refused    atomic.Int64
}

// NewMemoryBudget returns a budget of limit bytes (at least 1).
func NewMemoryBudget(limit int64) *MemoryBudget {
	return &MemoryBudget{limit: max(limit, 1)}
}

// Limit returns the budget's size in bytes.
func (b *MemoryBudget) Limit() int64 { return b.limit }

// Used returns the bytes charged now.
func (b *MemoryBudget) Used() int64 { return b.used.Load() }

// Peak returns the most bytes ever charged at once.
func (b *MemoryBudget) Peak() int64 { return b.peak.Load() }

// Refused returns how many reservations were refused.
func (b *MemoryBudget) Refused() int64 { return b.refused.Load() }

func (b *MemoryBudget) reserve(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			b.refused.Add(1)
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for p := b.peak.Load(); u+n > p && !b.peak.CompareAndSwap(p, u+n); p = b.peak.Load() {
			}
			return true
		}
	}
}

func (b *MemoryBudget) release(n int64) { b.used.Add(-n) }
