// Package pebblejournal is the embedded journal.Journal: a durable, ordered
// message log in a Pebble database.
//
// Every inbound HL7 frame is appended here before the TCP peer is
// acknowledged; gRPC subscribers then read the log by sequence number at
// their own pace (replay from a sequence, then tail with Wait).
//
// # Promises
//
//   - Append returns nil only after the record is committed to Pebble's
//     write-ahead log and that log is fsynced, so a nil error means the
//     record survives a crash or power loss. Options.NoSync weakens this for
//     benchmarks and labs only.
//   - Sequence numbers start at 1 and are assigned in commit order; they are
//     strictly increasing and gap-free, and continue after a restart (the
//     last stored key is recovered on Open).
//   - LastSeq, Read and Wait only expose committed records: a reader never
//     sees a record before its Append could have returned nil.
//   - Appends that arrive while an fsync is running are committed together
//     by the next single fsync (group commit), without timers.
//
// # Never
//
//   - Never report success for a record that was not committed.
//   - Never log payload bytes or record fields; only sequence numbers,
//     counts, the directory and errors reach the Logger. Pebble's own
//     messages can mention keys, which are only sequence numbers.
//   - Never retry a failed commit. Pebble's WAL errors are sticky (see below),
//     so the journal fails closed instead.
//
// # Failure
//
// Pebble v2.1.7 does not return a WAL write or fsync error from a commit: it
// calls its logger's Fatalf (whose default exits the process) and, should
// Fatalf return, reports success. Its WAL writer then keeps failing, even
// after the disk recovers, and a later commit can panic inside Pebble with
// its commit lock held, after which the DB cannot even be closed. So the
// Journal installs a Fatalf that panics, recovers that panic in the
// committer, and fails closed: the Append calls of the failed batch get
// "journal: unavailable: commit: ...", LastSeq does not advance, queued and
// later appends get the same error without touching Pebble again, and
// Health reports it so the service can go NOT_SERVING. Records committed
// earlier stay readable, and Close still works. There is no in-process
// recovery yet: Close the Journal and Open it again, or restart the process.
//
// A record whose Append failed may still have reached the disk (a write can
// succeed where the fsync fails) and then reappears after a restart with the
// sequence number it was given. It was never acknowledged, so the sender
// retransmits it: consumers must tolerate duplicates (for example by HL7
// control ID). Sequence numbers stay gap-free either way: a failed batch is
// the last thing the process writes, and after a restart numbering resumes
// after whatever the WAL actually holds.
//
// Pebble panics or calls Fatalf on a few other unrecoverable paths, for
// example a failing MANIFEST sync in a background goroutine, a WAL failure
// while rotating to a new WAL file, or any WAL failure in NoSync mode (which
// Pebble does not report until it panics). Those end the process, as they do
// with Pebble's default logger. That is safe for durability: nothing unsynced
// has been acknowledged (except under NoSync).
//
// # Known limits
//
// No retention: records are never deleted, so the store grows until
// retention is added. One process at a time may open a directory.
package pebblejournal
