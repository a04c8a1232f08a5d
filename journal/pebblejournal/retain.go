package pebblejournal

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Retention deletes old journal records and final outbox messages in the
// background, never in the write path: a pass reads only small indexes
// (time marks, the final index), deletes records with one range deletion
// and final messages with a range deletion per run of consecutive
// sequences, and hands that to the committer as one more write in a group.
// Pebble drops the deleted data in compactions; a flush is forced within
// FlushDelayDeleteRange so the space comes back even on a quiet journal.
//
// Age: the committer writes a time mark (unix nanoseconds -> the first
// sequence of a group) at most every markEvery, so every record before a
// mark's sequence was committed before the mark's time, without a record
// being read. Final messages are indexed by the time they became final.
//
// Size: Pebble's estimate (DB.EstimateDiskUsage) of what the records
// [first, last] and the outbox messages take; above MaxBytes, a pass
// deletes the oldest records and final messages, in time order, until the
// estimate would drop below 90% of MaxBytes. The estimate counts flushed
// data only, so what the memtable holds comes on top, and deleted data
// counts until compactions drop it.
const (
	// retainEvery is how often a pass runs.
	retainEvery = time.Minute
	// maxFinalsPerPass bounds the final messages one pass deletes, so that
	// one write stays small; a pass that hits it runs again at once.
	maxFinalsPerPass = 10_000
	// retainTarget is the share of MaxBytes a pass deletes down to, so that
	// not every pass deletes a sliver.
	retainTarget = 0.9
	// deleteFlushDelay is how soon Pebble flushes a memtable holding a
	// range deletion, so that the space it frees comes back.
	deleteFlushDelay = 10 * time.Second
)

// markInterval is how often the committer writes a time mark: a record
// outlives MaxAge by at most that, and a minute is a small share of any
// sensible MaxAge. Shorter ages (tests) get proportionally finer marks.
func markInterval(maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		return time.Minute
	}
	return min(time.Minute, maxAge/64)
}

// RetentionStats are retention's counters since Open.
type RetentionStats struct {
	Passes   uint64 // passes that deleted something
	Records  uint64 // journal records deleted
	Messages uint64 // final outbox messages deleted
}

// RetentionStats returns retention's counters since Open.
func (j *Journal) RetentionStats() RetentionStats {
	j.retainMu.Lock()
	defer j.retainMu.Unlock()
	return j.retained
}

// retainLoop runs a pass at Open and then every retainEvery, until Close.
func (j *Journal) retainLoop() {
	defer close(j.retainDone)
	// Passes run even when neither MaxAge nor MaxBytes bounds anything:
	// they also delete expired duplicate index entries (dedup.go).
	if j.awaitFloor {
		select {
		case <-j.floorSet:
		case <-j.stop:
			return
		}
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-j.stop:
			return
		}
		more, err := j.retain()
		if err != nil {
			// The next pass tries again; a storage failure is reported by
			// Health, so this is no news for operators.
			j.logger.Debug("journal: retention pass failed", "err", err)
		}
		next := retainEvery
		if more && err == nil {
			next = 0
		}
		t.Reset(next)
	}
}

// finalEntry is a final outbox message retention deletes.
type finalEntry struct {
	key  []byte // its final index entry
	conn string
	seq  uint64
	idem string
}

// retainPlan is what one pass deletes.
type retainPlan struct {
	cut      uint64 // records [first, cut) go
	markTo   int64  // time marks before this go, if oldMarks
	oldMarks bool
	finals   []finalEntry
	more     bool // the pass stopped at finalsPerPass
}

// retain runs one retention pass. It reports more when it left work for
// another pass at once.
func (j *Journal) retain() (more bool, err error) {
	j.retainMu.Lock()
	defer j.retainMu.Unlock()
	if err, _ := j.Health(); err != nil {
		return false, nil // nothing to do while failing (or closed)
	}
	cutoff := int64(math.MinInt64) // delete what was stored at or before this (unix nanoseconds)
	if j.maxAge > 0 {
		cutoff = j.now().Add(-j.maxAge).UnixNano()
	}
	touched := j.outbox.touchedCount()
	first := j.firstSeq.Load()
	var p retainPlan
	err = j.view(context.Background(), func(r pebble.Reader) error {
		var err error
		p, err = j.plan(j.db, r, first, cutoff) // view holds dbMu: j.db stays
		return err
	})
	if err != nil {
		return false, fmt.Errorf("retention: plan: %w", err)
	}

	w := write{epoch: anyEpoch}
	if p.cut > first {
		w.ops, w.first = append(w.ops, deleteRecords(first, p.cut), deleteAnswers(p.cut)), p.cut
	}
	if p.oldMarks {
		w.ops = append(w.ops, op{kind: opDeleteRange, key: markKey(0), val: markKey(p.markTo)})
	}
	var (
		g        *group
		messages int
	)
	if len(p.finals) > 0 {
		var stale bool
		g, messages, stale, err = j.outbox.submitDeletion(w, p.finals, touched)
		p.more = p.more || stale
	} else if len(w.ops) > 0 {
		g, err = j.submit(w)
	}
	if err == nil && g != nil {
		err = wait(context.Background(), g)
	}
	if err != nil {
		return false, fmt.Errorf("retention: %w", err)
	}
	records := uint64(0)
	if p.cut > first {
		records = p.cut - first
	}
	if records > 0 || messages > 0 {
		j.retained.Passes++
		j.retained.Records += records
		j.retained.Messages += uint64(messages)
		j.logger.Debug("journal: retention deleted old data",
			"records", records, "first_seq", max(p.cut, first), "outbox_messages", messages)
	}
	dmore, err := j.expireDuplicates()
	if err != nil {
		return false, fmt.Errorf("retention: duplicate index: %w", err)
	}
	return p.more || dmore, nil
}

// deleteRecords is the operation that deletes the records [first, cut):
// one range deletion, however many there are. The write that carries it
// must set first to cut.
func deleteRecords(first, cut uint64) op {
	return op{kind: opDeleteRange, key: recordKey(nil, first), val: recordKey(nil, cut)}
}

func (o *Outbox) touchedCount() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.touched
}

// submitDeletion submits w with the deletion of the final messages fs
// added, under o.mu, so that no update slips in between the check and the
// deletion: until the deletion settles, update treats the messages as gone.
// Messages with an update in flight are left for a later pass; if a final
// message was updated since the plan was read (touched changed), none is
// deleted (stale), since the plan may no longer hold. It returns the group
// and how many messages go.
func (o *Outbox) submitDeletion(w write, fs []finalEntry, touched uint64) (g *group, messages int, stale bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.resync()
	var runs map[string][]seqRange
	if o.touched == touched {
		fs = slices.DeleteFunc(slices.Clone(fs), func(f finalEntry) bool { return o.staged[msgID{f.conn, f.seq}] != nil })
		w.ops, runs = deleteFinals(w.ops, fs)
		messages = len(fs)
		w.epoch = o.epoch
	} else {
		stale = true
	}
	if len(w.ops) == 0 {
		return nil, 0, stale, nil
	}
	if len(runs) > 0 {
		w.settled = func(error) {
			o.mu.Lock()
			defer o.mu.Unlock()
			for conn, rs := range runs {
				o.deleting[conn] = slices.DeleteFunc(o.deleting[conn], func(r seqRange) bool { return slices.Contains(rs, r) })
				if len(o.deleting[conn]) == 0 {
					delete(o.deleting, conn)
				}
			}
		}
	}
	if g, err = o.j.submit(w); err != nil {
		return nil, 0, stale, err
	}
	for conn, rs := range runs {
		o.deleting[conn] = append(o.deleting[conn], rs...)
	}
	return g, messages, stale, nil
}

// deleteFinals appends the operations that delete the final messages fs to
// ops and returns them with the runs of consecutive sequences deleted, by
// connection: each run is one range deletion.
func deleteFinals(ops []op, fs []finalEntry) ([]op, map[string][]seqRange) {
	slices.SortFunc(fs, func(a, b finalEntry) int {
		return cmp.Or(cmp.Compare(a.conn, b.conn), cmp.Compare(a.seq, b.seq))
	})
	runs := map[string][]seqRange{}
	for _, f := range fs {
		rs := runs[f.conn]
		if n := len(rs); n > 0 && rs[n-1].to == f.seq {
			rs[n-1].to++
		} else {
			rs = append(rs, seqRange{f.seq, f.seq + 1})
		}
		runs[f.conn] = rs
		ops = append(ops, op{kind: opDelete, key: f.key})
		if f.idem != "" {
			ops = append(ops, op{kind: opDelete, key: idemKey(f.conn, f.idem)})
		}
	}
	for conn, rs := range runs {
		for _, r := range rs {
			ops = append(ops, op{kind: opDeleteRange, key: connSeqKey(prefixOutMsg, conn, r.from), val: connSeqKey(prefixOutMsg, conn, r.to)})
		}
	}
	return ops, runs
}

// plan reads what a pass deletes: everything stored at or before cutoff,
// and then, while the estimated size exceeds the target, the next oldest.
// Records go in runs between time marks, final messages one by one, in
// time order. The last record always stays (it is where numbering
// continues after a restart), and so does everything after it. Time marks
// and sizes come from db, final messages from the committed view r.
func (j *Journal) plan(db *pebble.DB, r pebble.Reader, first uint64, cutoff int64) (retainPlan, error) {
	p := retainPlan{cut: first}
	last := j.lastSeq.Load()
	floor := j.retentionFloor()
	var excess int64
	if j.maxBytes > 0 && last >= first {
		records, err := db.EstimateDiskUsage(recordKey(nil, first), recordKey(nil, last))
		if err != nil {
			return p, err
		}
		messages, err := db.EstimateDiskUsage([]byte{prefixOutMsg}, []byte{prefixOutMsg + 1})
		if err != nil {
			return p, err
		}
		target := int64(float64(j.maxBytes) * retainTarget)
		if used := int64(records + messages); used > j.maxBytes {
			excess = used - target
		}
	}

	marks, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixMark}, UpperBound: []byte{prefixMark + 1}})
	if err != nil {
		return p, err
	}
	finals, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixOutFinal}, UpperBound: []byte{prefixOutFinal + 1}})
	if err != nil {
		return p, errors.Join(err, marks.Close())
	}
	mOK, fOK := marks.First(), finals.First()
	var freed int64
	for mOK || fOK {
		mt, ft := int64(math.MaxInt64), int64(math.MaxInt64)
		if mOK {
			mt = keyTime(marks.Key())
		}
		if fOK {
			ft = keyTime(finals.Key())
		}
		t := min(mt, ft)
		if t > cutoff && freed >= excess {
			break
		}
		if mt <= ft {
			v, verr := marks.ValueAndErr()
			if verr != nil || len(v) != 8 {
				err = errors.Join(verr, fmt.Errorf("malformed time mark %x", marks.Key()))
				break
			}
			s := binary.BigEndian.Uint64(v)
			if s > last {
				// The mark of a group whose commit has not returned (db shows
				// it early): its records are not last's predecessors yet.
				break
			}
			if s > p.cut && freed >= excess && s > floor {
				// Age alone would cut here, but a consumer still needs
				// the records from floor on: cut up to there, and keep
				// this mark (and the later ones) for a later pass.
				p.cut = max(p.cut, floor)
				mOK = false
				continue
			}
			if s > p.cut {
				if excess > 0 {
					n, eerr := db.EstimateDiskUsage(recordKey(nil, p.cut), recordKey(nil, s-1))
					if eerr != nil {
						err = eerr
						break
					}
					freed += int64(n)
				}
				p.cut = s
			}
			p.oldMarks = p.markTo != 0
			p.markTo = mt
			mOK = marks.Next()
			continue
		}
		if len(p.finals) == j.finalsPerPass {
			p.more = true
			break
		}
		v, verr := finals.ValueAndErr()
		conn, seq, ok := splitConnSeq(finals.Key()[1+8:])
		size, n := binary.Uvarint(v)
		if verr != nil || !ok || n <= 0 {
			err = errors.Join(verr, fmt.Errorf("malformed final index entry %x", finals.Key()))
			break
		}
		p.finals = append(p.finals, finalEntry{key: bytes.Clone(finals.Key()), conn: conn, seq: seq, idem: string(v[n:])})
		freed += int64(size)
		fOK = finals.Next()
	}
	return p, errors.Join(err, marks.Close(), finals.Close())
}

// SetRetentionFloor makes retention by age keep every record from f() on:
// f returns the smallest sequence a reader still needs (service/delivery's
// Manager.Floor), math.MaxUint64 for none. The size limit (MaxBytes) still
// deletes such records when it must; readers then find them not retained.
// f is called once per retention pass, from the retention goroutine, so it
// must be quick and must not call into the Journal's writes. nil removes
// the floor.
func (j *Journal) SetRetentionFloor(f func() uint64) {
	if f == nil {
		j.floor.Store(nil)
	} else {
		j.floor.Store(&f)
	}
	j.floorOnce.Do(func() { close(j.floorSet) })
}

// retentionFloor is SetRetentionFloor's floor now; math.MaxUint64 for none.
func (j *Journal) retentionFloor() uint64 {
	if f := j.floor.Load(); f != nil {
		return (*f)()
	}
	return math.MaxUint64
}

// keyTime is the time in a time mark's or final index entry's key.
func keyTime(k []byte) int64 {
	if len(k) < 9 {
		return math.MaxInt64
	}
	return int64(binary.BigEndian.Uint64(k[1:9]))
}
