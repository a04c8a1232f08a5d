// Package jsjournal is a journal.Journal on NATS JetStream: one stream per
// journal, so that several Switchboard instances can share one journal on a
// JetStream cluster. It keeps the promises of package journal; this
// documents how, and what the server must be configured to do for them.
//
// # Stream
//
// Open creates (or updates) the stream Options.Name with the subjects
// "switchboard.journal.<name>.>", file storage, Options.Replicas replicas
// (1 by default; a cluster uses 3), limits retention with DiscardOld, no
// limits, DenyDelete and AllowDirect off. A record's body is
// journal.AppendRecord's encoding, the bytes pebblejournal stores, so both
// backends store the same bytes and journal.DecodeRecord (fuzzed in
// package journal) reads both; jsjournal has no decoder of its own.
//
// # Promises
//
//   - Append publishes the record and returns nil only on the stream's
//     PubAck: the stream leader has stored it and, with R3, a quorum of
//     replicas has it. Durable across a crash of the server needs the
//     server's sync_interval "always" (the tests run so); with the default
//     (fsync every 2 minutes) a single node can lose acknowledged records
//     on power loss, and a replicated stream relies on the other replicas.
//     On an error or after Options.AppendTimeout, Append fails; the record
//     may still be stored, as the journal contract allows.
//   - The journal sequence is the stream sequence. JetStream gives it out
//     gap-free, in commit order, and keeps it across restarts and leader
//     changes. Nothing deletes inside the stream: DenyDelete refuses
//     single-message deletes, the stream has no limits, and the only purge
//     is the journal's own DeleteBefore (purge up to a sequence, which
//     deletes from the front only and keeps the last record), besides the
//     health probe's purge of nothing (below). DenyPurge is off for these;
//     anyone else with the account's permissions to purge the stream could
//     break the promise, so they should not have them. Appends carry
//     Nats-Expected-Stream, so a PubAck from another stream is refused.
//     FirstSeq and LastSeq come from the leader's stream state; an empty
//     stream has FirstSeq LastSeq+1, and a purge never lowers LastSeq.
//   - Read fetches records one by one from the stream leader
//     ($JS.API.STREAM.MSG.GET, since AllowDirect is off), so a reader on
//     any node sees every acknowledged record and only committed ones. A
//     sequence below FirstSeq fails with *journal.NotRetainedError.
//   - Wait never polls: an ordered consumer (headers only, from the last
//     sequence known at Open) tells the journal of every stored record,
//     whoever appended it, and every PubAck does too; waiters sleep on a
//     channel that is closed when the known last sequence rises. The
//     ordered consumer re-creates itself after reconnects and server
//     restarts.
//
// # Duplicates
//
// JetStream's Nats-Msg-Id has one duplicate window for the whole stream
// and suppresses a resend whatever its own window, while a journal record
// carries its own DedupWindow and must be stored once the id's holder is
// older than that window (journaltest's "after window"). So jsjournal does
// not use Nats-Msg-Id: a record with a DedupID is published to the subject
// "switchboard.journal.<name>.d.<base64url(id)>" (ids longer than 192
// bytes as "switchboard.journal.<name>.h.<base64url(sha256(id))>", to keep
// subjects short) and records without one to
// "switchboard.journal.<name>.r". Append reads the last message on the
// id's subject from the leader; if it is younger than r.DedupWindow
// (JetStream's store time against the local clock, so clocks must be
// synchronized: NTP's milliseconds are far below any useful window), it
// returns a *journal.DuplicateError with its sequence. Otherwise it
// publishes with Nats-Expected-Last-Subject-Sequence set to what it read
// (0 for none), so of concurrent appends of one id exactly one is stored:
// the others get a wrong-last-sequence error and look again, finding the
// winner. The id index is the stream's own subject index, stored with the
// record and surviving restarts; purging a record forgets its id.
//
// # Failure
//
// The journal is unavailable (Health returns an error wrapping
// journal.ErrUnavailable) from the moment the connection to NATS is lost,
// an append fails for any reason but the caller's context, or a health
// check fails, until a probe succeeds. Meanwhile every Append fails at once
// and counts in Stats.Refused, and appends still waiting for their PubAck
// when the failure starts end at once too (they may still be stored). The
// connection never buffers publishes while it reconnects
// (ReconnectBufSize -1), so a refused record is never stored later.
//
// The probe asks the leader for the stream's state and then commits a
// purge of nothing (up to the oldest record still held, so it deletes
// nothing and takes no sequence): a replicated stream answers a purge
// only once a quorum has applied it, while a leader that lost its quorum
// goes on answering stream info until it steps down. So a probe succeeds
// only when appends can commit. nats.go reconnects by itself; after a
// failure the probe runs at every reconnect and with backoff from
// Options.RetryMin to RetryMax, and its success ends the failure. While
// healthy, it runs every Options.CheckInterval (5 s), so that Health also
// reports a stream that lost its leader or quorum while nothing is
// appended. Each change is logged once; logs carry the stream name,
// sequence numbers and errors, never payloads or record fields.
//
// # Close
//
// Close refuses new calls, waits for the appends already published to get
// their PubAck or error (each bounded by AppendTimeout), stops the ordered
// consumer and the probe, and closes the connection. Wait and Read calls
// under way end with journal.ErrClosed.
//
// # The other stores
//
// The stores that share pebblejournal's database in one process live in
// JetStream too, so that every instance of a cluster sees them: Bucket is
// one key-value bucket holding the desired state (StateStore), the outbox
// (Outbox), the consumers' positions and dead letters (ConsumerStore) and
// service/cluster's members and leases, each under its own key prefix. A
// Fence makes a write conditional on a lease's revision in the same
// stream (Nats-Expected-Last-Subject-Sequence-Subject), which is how an
// instance that lost a connection's lease is kept from writing its
// outbox. Answers (AnswerStore) have a bucket of their own whose TTL ends
// them. Each type's documentation says its keys, its write order and
// what a crash between two writes can leave; each passes the conformance
// suite of its interface against a real server.
//
// # Known limits
//
// Read costs one round trip per record (plus one at the end of the
// stream). Direct batch gets would be faster, but any replica answers
// them, including one behind the leader, so a reader could miss a record
// that LastSeq already reports. There is no retention by age or size yet
// (DeleteBefore is the building block); the stream keeps everything.
package jsjournal
