package transport

import (
	"sync"
	"time"
)

// sampleInterval is how often a repeated log line may appear.
const sampleInterval = time.Second

// sampler lets one log line through per interval and counts the ones it
// holds back, so a repeated event (a flood of rejected connections, a
// failing journal refusing every frame) cannot flood the log. The line that
// gets through reports how many were suppressed before it. Every event is
// still counted in the connection or listener counters.
type sampler struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether to log now and how many lines were held back since
// the last one that was logged.
func (s *sampler) allow() (ok bool, suppressed int) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.next) {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.suppressed, s.next = 0, now.Add(sampleInterval)
	return true, n
}

// samplers are the rate limits of one listener's log lines (or of one
// dialed connection's), shared by its connections.
type samplers struct {
	rejected, negative, closed sampler
	denied, proxy, handshake   sampler
	peerDenied                 sampler
}
