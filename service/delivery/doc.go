// Package delivery keeps durable consumers of the journal: named cursors
// that remember what they delivered and what was acknowledged, so that a
// client that reconnects (or restarts Switchboard) gets exactly what it has
// not acknowledged yet, and then what came since.
//
// A consumer is created by the first Attach with a Spec and lives until
// Delete. Streams attached to it share its messages (ModeShared: each
// message goes to one stream) or take turns (ModeExclusive: one active
// stream, the others wait in attach order). A message delivered and not
// acknowledged within AckWait is delivered again; after MaxDeliveries it
// becomes a dead letter, which Replay puts back.
//
// Delivery is at least once: a message may be delivered again after a
// crash, but never skipped, unless retention's size limit deleted it first,
// which Next reports as a Lost range. Age-based retention keeps what a
// consumer still needs when the journal is told Manager.Floor
// (pebblejournal's SetRetentionFloor).
//
// The package knows nothing of gRPC: the service layer maps its errors and
// batches to the API. It runs no goroutine per consumer; ack-wait expiry is
// noticed by Next.
package delivery
