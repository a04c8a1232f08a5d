// Package pebblejournal is the embedded journal.Journal: a durable, ordered
// message log in a Pebble database in one directory. It keeps every promise
// of package journal; this documents how, and what Pebble makes hard.
//
// The same database also holds Switchboard's other durable state, each
// store under key prefixes of its own (keys.go): the desired state of
// listeners and connections (Journal.StateStore, a
// service/registry.StateStore) and the outbox of queued sends
// (Journal.Outbox, a service/outbox.Store). They share the journal's group
// commit, its failure handling and recovery, and its health.
//
// # Promises
//
//   - Append returns nil only after the record is committed to Pebble's
//     write-ahead log and that log is fsynced, so a nil error means the
//     record survives a crash or power loss: TestPowerLoss cuts power at
//     random moments under concurrent appends (vfs.NewCrashableMem, whose
//     CrashClone keeps only what was synced) and finds every acknowledged
//     record afterwards, gap-free. Options.NoSync weakens this for
//     benchmarks and labs only, and TestPowerLossNoSync shows the loss.
//   - Sequence numbers are the keys (one prefix byte, then the sequence
//     number big-endian), assigned in commit order, gap-free, and recovered
//     from the last stored key on Open and after a recovery.
//   - Appends that arrive while an fsync is running are committed together
//     by the next single fsync (group commit). Under load the committer
//     also waits for the next group to fill, at most as long as the last
//     commit took (capped at 1 ms) and only when the last two groups held
//     4 writes or more on average; a lone appender never waits (commit.go,
//     groupFill). The
//     stores' writes (PutResource, DeleteResource, outbox Append and
//     Update) join the same groups, so one fsync serves records, state
//     changes and queued messages alike (TestOneFsyncForEveryStore).
//   - The stores' writes that return nil are durable: TestPowerLoss also
//     cuts power under outbox appends and state puts and finds every one
//     acknowledged, and no outbox sequence given out again. An outbox
//     Update without sync joins the next group and returns at once, never
//     waiting for an fsync; it is durable once that group commits, and
//     readers see it as soon as Update returns.
//   - The stores never show a write before it is durable: they read a
//     Pebble snapshot the committer takes after each group with store
//     writes (plus the outbox's own updates in flight). Pebble itself shows
//     a batch while its fsync runs, and keeps showing it if the fsync
//     fails (TestStoresReadOnlyCommitted); through the snapshot, the outbox
//     worker cannot deliver a message whose Append then failed.
//   - Outbox sequences are 1, 2, ... per connection, assigned and batched
//     under one lock, so the group order is the sequence order; the last
//     one given out is stored with each append, so none is given out
//     twice, even after retention deleted every message of a connection.
//     An idempotency key gives one message per connection, including
//     between racing appends (the second waits for the first's commit).
//   - Wait is woken by the committer through a channel; it never polls.
//   - Retention (MaxAge, default 30 days; MaxBytes, default 10 GiB) runs
//     in a background goroutine, never in the write path: it reads only
//     time marks (written by the committer, one a minute at most: the
//     first sequence committed after a time) and an index of final outbox
//     messages by the time they became final, and deletes with Pebble range
//     deletions (one for the records, one per run of consecutive outbox
//     sequences), committed as one more write in a group. Pebble gives the
//     space back in compactions; a memtable holding a range deletion is
//     flushed within 10 s so that even a quiet journal frees it
//     (TestRetentionFreesSpace). FirstSeq is raised before the deletion can
//     apply, so readers see records or journal.NotRetainedError, never a
//     gap (TestReadDuringRetention). BenchmarkAppendRetention measures
//     appends with passes running back to back.
//
// # Never
//
//   - Never report success for a record that was not committed.
//   - Never log payload bytes or record fields; only sequence numbers,
//     counts, the directory and errors reach the Logger. Pebble's own
//     messages can mention keys, which are only sequence numbers.
//   - Never commit again on a database whose WAL failed (see below): the
//     journal refuses appends, and the stores refuse writes, until it has
//     reopened the database. Every synced commit, the stores' included,
//     goes through the one committer, since a second commit racing a
//     failing fsync makes Pebble panic with its commit lock held.
//   - Never delete a pending outbox message (not ACCEPTED or FAILED), the
//     last journal record (numbering continues from it after a restart),
//     or a final message whose update is in flight.
//   - Never log outbox payloads or message fields either; retention logs
//     counts and sequence numbers.
//
// # Failure and recovery
//
// Pebble v2.1.7 does not return a WAL write or fsync error from a commit:
// DB.applyInternal (db.go:881-886) calls Logger.Fatalf("pebble: fatal commit
// error") and, should Fatalf return, reports success. Its WAL writer then
// keeps the error (record/log_writer.go:732 and 843; SyncRecordGeneralized
// returns it at line 950), so every later commit fails, and commitWrite
// panics on it with the commit mutex held (db.go:955 and 997), after which
// the database cannot even be closed. So the Journal installs a Fatalf that
// panics, recovers that panic in the committer, and stops touching the
// database: the Append calls of the failed batch get
// "journal: unavailable: commit: ...", LastSeq does not advance, queued and
// later appends fail at once with the same error (counted in
// Stats.Refused), and Health reports it. The stores' writes in that group
// and after it fail the same way (wrapping journal.ErrUnavailable), and
// retention pauses. Records committed earlier stay readable, and so does
// what the stores committed (their snapshot predates the failure). The
// failure is logged once.
//
// The broken database can be closed, though (the failing commit returned
// before Fatalf, with Pebble's locks released): DB.Close reports the sticky
// WAL error but still releases everything, including the directory lock
// (db.go:1730-1737). And Pebble can open the same directory again in the
// same process, replaying the WAL as after a crash. So recovery needs no
// restart: a recovery goroutine waits Options.RetryMin, then doubles up to
// Options.RetryMax between attempts. Each attempt first writes and syncs a
// small file beside the database (the broken database stays open for
// Read until this passes), then closes the broken database, opens the
// directory again, checks that nothing acknowledged is missing, and commits
// a synced write to a key under a reserved prefix (never a record). Only
// then do appends resume, numbered after what the disk really holds, and
// Health turns nil (logged once); the stores take writes again, and the
// outbox drops what it cached (sequence counters, updates in flight) and
// reads the reopened database instead (TestStoresDuringFailure). The
// journal holds the directory lock
// itself (pebble.LockDirectory, passed to every pebble.Open as
// Options.Lock), so no other process can take the directory while it is
// reopened. Between closing the broken database and opening it again, and
// while a reopen fails, Read returns an error instead of records.
//
// The batch that failed may have reached the disk (a write can succeed
// where its fsync fails, and closing the broken database writes out what
// was buffered). It then reappears after the recovery with the sequence
// numbers it was given; its appenders were told it failed, so senders
// retransmit it: consumers must tolerate duplicates. Sequence numbers stay
// gap-free either way: a failed batch is the last thing written before the
// failure, and numbering resumes after whatever the WAL actually holds. The
// same holds for the stores: an outbox Append that failed may be there
// after the recovery, and is then delivered; a retry with the same
// idempotency key finds it instead of queuing it twice.
//
// # Opening on a full disk
//
// Pebble flushes everything its WAL holds before pebble.Open returns (the
// replayed memtables are marked flushForced at open.go:896, and Open waits
// for the flush at open.go:535), and it retries a failed flush at once and
// for ever (compaction.go:1483). On a full disk Open therefore never
// returned, and each of thousands of retries a second was logged. So before
// every open, at start and in recovery, the journal reserves the space that
// flush needs in a file beside the database (journal.reserve, preallocated;
// its size is that of the WAL files, or, when that much is not free, of a
// read-only replay, which writes nothing). If the space cannot be had, Open
// returns at once with "journal: open DIR: disk full while replaying the
// write-ahead log (about N MiB must be written ...); free space and start
// again", and recovery keeps the failed database open and tries again
// later. If a flush runs out of space anyway (the disk filled up after the
// check), the reservation is released so that the retry finds room; it is
// removed once the database is open. Any other failing flush is logged once
// and retried with backoff (10 ms, doubling, at most 1 s), not at once.
//
// Pebble panics or calls Fatalf on a few other unrecoverable paths, for
// example a failing MANIFEST sync in a background goroutine, or any WAL
// failure in NoSync mode (which Pebble does not report until it panics).
// Those end the process, as they do with Pebble's default logger. That is
// safe for durability: nothing unsynced has been acknowledged (except under
// NoSync).
//
// # Known limits
//
// One process at a time may open a directory.
//
// Retention by age is as fine as the time marks: a record may outlive
// MaxAge by up to a minute (or MaxAge/64), and the records committed after
// the newest mark stay until a later commit writes another, so a journal
// that has gone quiet keeps its last minute of records. Retention by size
// goes by Pebble's estimate of the space records and outbox messages take
// in sstables: what is still only in the memtables and WAL (a few MiB)
// comes on top, deleted data counts until compactions drop it (so
// a pass may delete a little more than needed), and final messages are
// weighed at their stored size, before compression. A pass deletes at most
// 10,000 final messages, and runs again at once when there are more.
//
// An outbox message's idempotency key is forgotten when retention deletes
// the message: a retry after that queues it again (with a new sequence).
// An Update of a message whose Append has not returned yet, or that
// retention is deleting, fails as not found.
package pebblejournal
