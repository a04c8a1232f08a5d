package transport

import "sync/atomic"

// ConnSlots caps the connections that the listeners sharing it hold open
// together, counting those still in their preamble (PROXY header, TLS
// handshake): each listener's MaxConnections bounds it alone, and this
// bounds the process's file descriptors and memory however many listeners
// callers create. A connection that finds no slot is reset at once and
// counted (RejectTotalConnections).
type ConnSlots struct {
	limit         int64
	used, refused atomic.Int64
}

// NewConnSlots returns a cap of n connections (at least 1).
func NewConnSlots(n int) *ConnSlots { return &ConnSlots{limit: max(int64(n), 1)} }

// Limit returns the cap.
func (s *ConnSlots) Limit() int { return int(s.limit) }

// Used returns the slots taken now.
func (s *ConnSlots) Used() int { return int(s.used.Load()) }

// Refused returns how many connections found no slot.
func (s *ConnSlots) Refused() int64 { return s.refused.Load() }

func (s *ConnSlots) acquire() bool {
	if s == nil {
		return true
	}
	for {
		u := s.used.Load()
		if u >= s.limit {
			s.refused.Add(1)
			return false
		}
		if s.used.CompareAndSwap(u, u+1) {
			return true
		}
	}
}

func (s *ConnSlots) release() {
	if s != nil {
		s.used.Add(-1)
	}
}
