package journal

import "time"

// DeadLetter is a record a durable consumer gave up on: it was delivered
// the consumer's maximum number of times without an ack. It is defined
// here, with the storage contract, so that a backend's consumer store
// (pebblejournal's) and service/delivery, whose Store it implements, share
// it although the backend must not import the service layer.
type DeadLetter struct {
	Seq        uint64    // the journal record's sequence
	Deliveries uint32    // how often it was delivered
	Time       time.Time // when it became a dead letter
}
