package pebblejournal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/switchboard-dev/switchboard/journal"
)

// Duplicate suppression (journal.Record.DedupID). Each id has an index
// entry, written in the same batch as its record, so no crash leaves one
// without the other:
//
//	0x03 id                  -> seq | appended-at | expires-at (8 bytes big-endian each, unix nanoseconds)
//	0x04 expires-at id       -> empty: the expiry index retention walks
//
// The id is the rest of the key (it may hold any byte, 0x00 included);
// expires-at is fixed width, so the expiry index sorts by time.
//
// Concurrent Appends of one id are serialized by a claim: only the holder
// of an id's claim reads its entry and, when there is none (or it expired),
// queues its record with the new entry; the claim is released once that
// record's group commit settles, so whoever waited reads the committed
// entry, or, if the commit failed, tries again. Appends without a DedupID
// never touch any of this.
//
// The entry is read from the database itself, not the stores' committed
// view: the only batch holding it that may not be durable yet is the
// claim holder's own, and a batch whose commit failed stays visible only
// while the journal is unavailable (and refuses appends) until recovery
// reopens the database.
const (
	prefixDedup       byte = 0x03
	prefixDedupExpiry byte = 0x04
	dedupValueLen          = 3 * 8
	// maxExpiredPerPass bounds the index entries one retention pass
	// deletes; a pass that hits it runs again at once.
	maxExpiredPerPass = 10_000
)

// dedupEntry is a decoded 0x03 value.
type dedupEntry struct {
	seq     uint64
	at      int64 // when the record was appended (the journal's clock)
	expires int64 // at + its window: retention deletes the entry after it
}

func dedupKey(id string) []byte {
	return append(append(make([]byte, 0, 1+len(id)), prefixDedup), id...)
}

func dedupExpiryKey(expires int64, id string) []byte {
	k := make([]byte, 0, 1+8+len(id))
	k = append(k, prefixDedupExpiry)
	k = binary.BigEndian.AppendUint64(k, uint64(max(expires, 0)))
	return append(k, id...)
}

func (e dedupEntry) appendValue(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, e.seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.at))
	return binary.BigEndian.AppendUint64(dst, uint64(e.expires))
}

// errMalformedDedup is wrapped by the error for an index value that does
// not decode: corruption, or a newer format.
var errMalformedDedup = errors.New("malformed duplicate index entry")

func decodeDedupValue(v []byte) (dedupEntry, error) {
	if len(v) != dedupValueLen {
		return dedupEntry{}, fmt.Errorf("%w: %d bytes", errMalformedDedup, len(v))
	}
	e := dedupEntry{
		seq:     binary.BigEndian.Uint64(v),
		at:      int64(binary.BigEndian.Uint64(v[8:])),
		expires: int64(binary.BigEndian.Uint64(v[16:])),
	}
	if e.seq == 0 || e.expires < e.at {
		return dedupEntry{}, fmt.Errorf("%w: seq %d, appended %d, expires %d", errMalformedDedup, e.seq, e.at, e.expires)
	}
	return e, nil
}

// A dedupClaim is the right to write an id's index entry. The holder of an
// Append's claim fills in the entry it writes with its record.
type dedupClaim struct {
	owner   *dedupClaims
	id      string
	waiters chan struct{} // made by the first waiter; closed at release
	// Set by the Append holding it, for its batch.
	at, expires int64
	replaces    bool  // an expired entry is overwritten
	oldExpires  int64 // its expiry, whose 0x04 key goes
}

// dedupClaims are the claims held now, by id.
type dedupClaims struct {
	mu   sync.Mutex
	held map[string]*dedupClaim
}

// claim takes id's claim, or, when someone holds it, returns a channel
// closed when they release it (then claim again).
func (d *dedupClaims) claim(id string) (*dedupClaim, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.held[id]; c != nil {
		if c.waiters == nil {
			c.waiters = make(chan struct{})
		}
		return nil, c.waiters
	}
	if d.held == nil {
		d.held = map[string]*dedupClaim{}
	}
	c := &dedupClaim{owner: d, id: id}
	d.held[id] = c
	return c, nil
}

// releaseClaims releases cs (all of one owner, or none) and wakes their
// waiters.
func releaseClaims(cs []*dedupClaim) {
	if len(cs) == 0 {
		return
	}
	d := cs[0].owner
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range cs {
		delete(d.held, c.id)
		if c.waiters != nil {
			close(c.waiters)
		}
	}
}

// dedupSize is what c adds to its record's batch.
func (c *dedupClaim) size() int {
	if c == nil {
		return 0
	}
	n := (1 + len(c.id) + dedupValueLen) + (1 + 8 + len(c.id))
	if c.replaces {
		n += 1 + 8 + len(c.id)
	}
	return n
}

// encode writes c's index entry for the record seq into b.
func (c *dedupClaim) encode(b *pebble.Batch, seq uint64) {
	var v [dedupValueLen]byte
	_ = b.Set(dedupKey(c.id), dedupEntry{seq: seq, at: c.at, expires: c.expires}.appendValue(v[:0]), nil)
	_ = b.Set(dedupExpiryKey(c.expires, c.id), nil, nil)
	if c.replaces && c.oldExpires != c.expires {
		_ = b.Delete(dedupExpiryKey(c.oldExpires, c.id), nil)
	}
}

// appendDedup is Append for a record with a DedupID.
func (j *Journal) appendDedup(ctx context.Context, r *journal.Record, size int) (uint64, error) {
	if r.DedupWindow <= 0 {
		return 0, fmt.Errorf("%w: a DedupID needs a positive DedupWindow", journal.ErrInvalidRecord)
	}
	for {
		if err := j.appendable(); err != nil {
			return 0, err
		}
		c, busy := j.dedup.claim(r.DedupID)
		if busy != nil {
			select {
			case <-busy:
				continue
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		now := j.now().UnixNano()
		var e dedupEntry
		var found bool
		var err error
		if j.dedupIDs.mayHold(r.DedupID) {
			e, found, err = j.lookupDedup(r.DedupID)
		}
		if err != nil {
			releaseClaims([]*dedupClaim{c})
			return 0, err
		}
		if found && now-e.at < int64(r.DedupWindow) {
			releaseClaims([]*dedupClaim{c})
			return e.seq, &journal.DuplicateError{ID: r.DedupID, Seq: e.seq}
		}
		c.at = now
		c.expires = now + int64(r.DedupWindow)
		if c.expires < now { // overflow: remembered for good
			c.expires = math.MaxInt64
		}
		c.replaces, c.oldExpires = found, e.expires
		if !found {
			j.dedupIDs.add(r.DedupID) // a replaced entry is counted already
		}
		return j.append(ctx, r, size, c)
	}
}

// appendable fails the way Append does while the journal cannot take
// appends: closed, or unavailable (counted as refused).
func (j *Journal) appendable() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return journal.ErrClosed
	}
	if err := j.health; err != nil {
		j.refused.Add(1)
		return err
	}
	return nil
}

// lookupDedup reads id's index entry.
func (j *Journal) lookupDedup(id string) (e dedupEntry, found bool, err error) {
	err = j.readDB(func(db *pebble.DB) error {
		v, closer, err := db.Get(dedupKey(id))
		if errors.Is(err, pebble.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		e, err = decodeDedupValue(v)
		found = err == nil
		return errors.Join(err, closer.Close())
	})
	if err != nil {
		return dedupEntry{}, false, fmt.Errorf("journal: duplicate index: %w", err)
	}
	return e, found, nil
}

// readDB runs fn on the open database, failing when there is none (closed,
// or recovery is reopening it).
func (j *Journal) readDB(fn func(db *pebble.DB) error) error {
	j.dbMu.RLock()
	defer j.dbMu.RUnlock()
	if j.dbClosed {
		return journal.ErrClosed
	}
	if j.db == nil { // recovery changes j.db only while holding dbMu
		return fmt.Errorf("%w: read: no database open while the journal recovers", journal.ErrUnavailable)
	}
	return fn(j.db)
}

// expireDuplicates deletes index entries whose window has passed (they no
// longer suppress anything), up to maxExpiredPerPass; more reports that
// it stopped there. It claims each id first, so that no Append of it
// races the deletion, and deletes the id's entry only when it still is
// the expired one (an Append may have replaced it since).
func (j *Journal) expireDuplicates() (more bool, err error) {
	now := j.now().UnixNano()
	type expired struct {
		key     []byte
		id      string
		expires int64
	}
	var found []expired
	err = j.readDB(func(db *pebble.DB) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixDedupExpiry}, UpperBound: dedupExpiryKey(now+1, "")})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			if len(found) == maxExpiredPerPass {
				more = true
				break
			}
			k := it.Key()
			if len(k) < 1+8 {
				err = fmt.Errorf("%w: expiry key %x", errMalformedDedup, k)
				break
			}
			found = append(found, expired{key: bytes.Clone(k), id: string(k[9:]), expires: int64(binary.BigEndian.Uint64(k[1:9]))})
		}
		return errors.Join(err, it.Close())
	})
	if err != nil || len(found) == 0 {
		return false, err
	}
	claims := make([]*dedupClaim, 0, len(found))
	mine := found[:0]
	for _, f := range found {
		if c, busy := j.dedup.claim(f.id); busy == nil {
			claims = append(claims, c)
			mine = append(mine, f)
		} // else an Append is writing a new entry: a later pass looks again
	}
	var ops []op
	var gone []string // ids whose entry goes
	err = j.readDB(func(db *pebble.DB) error {
		for _, f := range mine {
			ops = append(ops, op{kind: opDelete, key: f.key})
			v, closer, err := db.Get(dedupKey(f.id))
			if errors.Is(err, pebble.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			e, derr := decodeDedupValue(v)
			if err := errors.Join(derr, closer.Close()); err != nil {
				return err
			}
			if e.expires == f.expires {
				ops = append(ops, op{kind: opDelete, key: dedupKey(f.id)})
				gone = append(gone, f.id)
			}
		}
		return nil
	})
	if err == nil && len(ops) > 0 {
		var g *group
		if g, err = j.submit(write{ops: ops, epoch: anyEpoch, claims: claims}); err == nil {
			// The group releases the claims; the filter forgets the
			// entries once their deletion is durable.
			if err = wait(context.Background(), g); err == nil {
				for _, id := range gone {
					j.dedupIDs.remove(id)
				}
			}
			return more, err
		}
	}
	releaseClaims(claims)
	return more, err
}
