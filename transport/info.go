package transport

import (
	"sync/atomic"
	"time"
)

// connStats are a connection's live counters.
type connStats struct {
	framesIn, bytesIn, framesOut, bytesOut atomic.Int64
	acksSent, acksReceived                 [numAckCodes + 1]atomic.Int64
	junk, discarded, missingTrailers       atomic.Int64
	framingErrors, journalErrors           atomic.Int64
	invalidMessages, ackTimeouts           atomic.Int64
	ackMismatches, unsolicitedAcks         atomic.Int64
	duplicates                             atomic.Int64
}

// AckCounts counts acknowledgements by code; index it with an AckCode.
type AckCounts [numAckCodes + 1]int64

// Counters count what happened on a connection (or, added up, on all of a
// listener's connections). The API documents each one.
type Counters struct {
	FramesIn, BytesIn, FramesOut, BytesOut        int64
	AcksSent, AcksReceived                        AckCounts
	JunkBytes, DiscardedPartials, MissingTrailers int64
	FramingErrors, JournalErrors, InvalidMessages int64
	AckTimeouts, AckMismatches, UnsolicitedAcks   int64
	// Duplicates counts messages the Sink already held (DuplicateError):
	// not stored again, answered with the first answer.
	Duplicates int64
}

// Add adds o to k.
func (k *Counters) Add(o *Counters) {
	k.FramesIn += o.FramesIn
	k.BytesIn += o.BytesIn
	k.FramesOut += o.FramesOut
	k.BytesOut += o.BytesOut
	for i := range k.AcksSent {
		k.AcksSent[i] += o.AcksSent[i]
		k.AcksReceived[i] += o.AcksReceived[i]
	}
	k.JunkBytes += o.JunkBytes
	k.DiscardedPartials += o.DiscardedPartials
	k.MissingTrailers += o.MissingTrailers
	k.FramingErrors += o.FramingErrors
	k.JournalErrors += o.JournalErrors
	k.InvalidMessages += o.InvalidMessages
	k.AckTimeouts += o.AckTimeouts
	k.AckMismatches += o.AckMismatches
	k.UnsolicitedAcks += o.UnsolicitedAcks
	k.Duplicates += o.Duplicates
}

func (s *connStats) snapshot() Counters {
	k := Counters{
		FramesIn: s.framesIn.Load(), BytesIn: s.bytesIn.Load(),
		FramesOut: s.framesOut.Load(), BytesOut: s.bytesOut.Load(),
		JunkBytes: s.junk.Load(), DiscardedPartials: s.discarded.Load(),
		MissingTrailers: s.missingTrailers.Load(),
		FramingErrors:   s.framingErrors.Load(), JournalErrors: s.journalErrors.Load(),
		InvalidMessages: s.invalidMessages.Load(), AckTimeouts: s.ackTimeouts.Load(),
		AckMismatches: s.ackMismatches.Load(), UnsolicitedAcks: s.unsolicitedAcks.Load(),
		Duplicates: s.duplicates.Load(),
	}
	for i := range k.AcksSent {
		k.AcksSent[i] = s.acksSent[i].Load()
		k.AcksReceived[i] = s.acksReceived[i].Load()
	}
	return k
}

// ConnInfo is a snapshot of a connection.
type ConnInfo struct {
	ID           string
	ListenerID   string // empty for outbound connections
	Direction    Direction
	LocalAddr    string
	RemoteAddr   string
	State        ConnState
	OpenTime     time.Time
	LastActivity time.Time // a byte read or written
	// TLS describes the TLS session; nil for plain TCP. Shared: never
	// modify it.
	TLS      *TLSInfo
	Counters Counters
	// CloseReason, CloseErr (the cause, may be nil) and CloseTime are set
	// once State is StateClosed.
	CloseReason CloseReason
	CloseErr    error
	CloseTime   time.Time
}

// Info returns a snapshot of the connection.
func (c *Conn) Info() ConnInfo {
	c.mu.Lock()
	state, why, cerr, ctime := c.state, c.closeWhy, c.closeErr, c.closeTime
	c.mu.Unlock()
	return ConnInfo{
		ID:           c.id,
		ListenerID:   c.listenerID,
		Direction:    c.dir,
		LocalAddr:    c.localAddr,
		RemoteAddr:   c.remoteAddr,
		State:        state,
		OpenTime:     c.openTime,
		LastActivity: time.Unix(0, c.lastActivity.Load()),
		TLS:          c.tls,
		Counters:     c.stats.snapshot(),
		CloseReason:  why,
		CloseErr:     cerr,
		CloseTime:    ctime,
	}
}
