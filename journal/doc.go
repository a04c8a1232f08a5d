// Package journal defines Switchboard's durable, ordered message log: the
// Journal interface every storage backend implements, the Record it stores,
// and the record encoding backends share.
//
// Every inbound frame is appended to the journal before the TCP peer is
// acknowledged; gRPC subscribers then read it by sequence number at their
// own pace (replay from a sequence, then tail with Wait). The embedded
// backend is journal/pebblejournal; journal/journaltest holds the
// conformance suite every backend must pass.
//
// # Promises
//
// Every backend keeps these; journaltest.Run checks them.
//
//   - Append returns nil only once the record is durable: for the embedded
//     backend, committed to the write-ahead log and fsynced, so it survives
//     a crash or power loss. (A backend option such as pebblejournal's
//     NoSync may weaken this, for benchmarks and labs only.)
//   - Sequence numbers start at 1 and are assigned in commit order; they are
//     strictly increasing and gap-free, and continue after a restart or a
//     recovery. Retention deletes the oldest records only, so the records
//     retained run from FirstSeq to LastSeq without a gap; a sequence is
//     never given out again, even once its record is deleted.
//   - Read from a sequence retention deleted fails with a
//     *NotRetainedError (ErrNotRetained) that names FirstSeq, so a reader
//     can tell its client where it may resume; Read from 0 starts at
//     FirstSeq. A backend that keeps everything has FirstSeq 1.
//   - LastSeq, Read and Wait only expose committed records: a reader never
//     sees a record before its Append could have returned nil.
//   - Wait wakes on commit and never polls.
//   - Every call takes a context, so a networked backend can be bounded,
//     and every call can fail: LastSeq and Read included.
//
// # Never
//
//   - Never report success for a record that was not committed.
//   - Never log payload bytes or record fields; only sequence numbers,
//     counts, locations of the storage and errors.
//
// # Failure
//
// Storage can fail and come back (a full disk, a failing device, a lost
// connection to a server). While it fails, the journal is unavailable:
// Health returns the failure (wrapping ErrUnavailable), every Append fails
// at once with it and is counted in Stats.Refused, and records already
// committed stay readable where the backend can still read them. A backend
// recovers by itself when it can, restoring LastSeq from what its storage
// really holds; Health then returns nil and its channel tells watchers (the
// server turns gRPC health NOT_SERVING and back). A failure is logged once
// when it starts and once when it ends, never once per refused append.
//
// A record whose Append failed may still have been stored (a write can
// succeed where its sync fails) and then appears after a recovery or
// restart with the sequence number it was given. It was never acknowledged,
// so the sender retransmits it: consumers must tolerate duplicates (for
// example by HL7 control ID).
//
// # Records
//
// A Record says what it is (Kind: a peer's message, or an acknowledgement
// that arrived with no Send waiting for it) and which Switchboard instance
// stored it (InstanceID; empty on a single instance). The stored encoding
// (AppendRecord, DecodeRecord) is versioned: values written before kinds
// existed (version 1) still decode, as messages. Version 2 is protobuf wire
// format, so optional fields can be added without another version; a
// directory written by this code cannot be read by versions before it.
//
// # Retention
//
// A backend may delete old records (pebblejournal does, by age and by
// size; see its Options). It deletes from the oldest on, never a record
// in the middle and never the last one, and it raises FirstSeq before a
// reader can miss a deleted record, so a reader sees records or
// NotRetainedError, never a gap.
//
// # Duplicates
//
// A record with a DedupID is stored only if no record with the same id was
// appended within its DedupWindow; otherwise Append returns the first
// record's sequence with a *DuplicateError. The id index is written
// atomically with its record, survives restarts, and lets exactly one of
// concurrent Appends of an id through. Entries older than their window no
// longer suppress anything and may be deleted (pebblejournal's retention
// does). The service builds ids from HL7 MSH-10 so that a peer's resend of
// a message it got no ACK for is not stored twice.
//
// # Other stores
//
// ErrNotFound is shared with stores that live beside a backend's records
// (pebblejournal's desired-state store and outbox), so that the service
// packages defining those stores' interfaces and the backend implementing
// them agree on "not found" without the backend importing the service
// layer.
//
// # Known limits
//
// A reader that falls further behind than retention keeps loses what was
// deleted: NotRetainedError says so and where to resume, and nothing is
// kept back for it (durable consumer positions are a later step).
package journal
