package pebblejournal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/switchboard-dev/switchboard/journal"
)

// StateStore keeps Switchboard's desired state (the specs of the listeners
// and outbound connections callers created) in the journal's database,
// under a key prefix of its own. It implements service/registry's
// StateStore: PutResource and DeleteResource return once the change is
// durable, committed in the journal's group commit, so they share its
// fsyncs with records and outbox writes. While the journal is unavailable
// they fail at once with its failure (wrapping journal.ErrUnavailable), and
// work again after it recovers. It is safe for concurrent use.
type StateStore struct{ j *Journal }

// StateStore returns the desired-state store kept in j's database. It is
// usable until j is closed.
func (j *Journal) StateStore() *StateStore { return j.state }

// stateValueV1 starts every stored spec: a version byte, then the creation
// time (zigzag varint seconds, varint nanoseconds), then the spec.
const stateValueV1 byte = 1

func stateKey(typ, id string) []byte { return append(nameKey(prefixState, typ), id...) }

// PutResource records a resource, replacing any of the same type and id,
// and returns once that is durable.
func (s *StateStore) PutResource(ctx context.Context, typ, id string, spec []byte, created time.Time) error {
	if err := checkResource(typ, id); err != nil {
		return err
	}
	v := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(spec))
	v = append(v, stateValueV1)
	v = binary.AppendVarint(v, created.Unix())
	v = binary.AppendUvarint(v, uint64(created.Nanosecond()))
	v = append(v, spec...)
	if err := s.j.write(ctx, []op{{kind: opSet, key: stateKey(typ, id), val: v}}); err != nil {
		return fmt.Errorf("journal: put %s %q: %w", typ, id, err)
	}
	return nil
}

// DeleteResource removes a resource and returns once that is durable.
// Removing one that does not exist is not an error.
func (s *StateStore) DeleteResource(ctx context.Context, typ, id string) error {
	if err := checkResource(typ, id); err != nil {
		return err
	}
	if err := s.j.write(ctx, []op{{kind: opDelete, key: stateKey(typ, id)}}); err != nil {
		return fmt.Errorf("journal: delete %s %q: %w", typ, id, err)
	}
	return nil
}

// Resources calls fn for every stored resource, ordered by type, then id,
// and stops at the first error fn returns. It reads everything first, so
// fn may call the store (desired state is small: one entry per resource).
func (s *StateStore) Resources(ctx context.Context, fn func(typ, id string, spec []byte, created time.Time) error) error {
	type resource struct {
		typ, id string
		spec    []byte
		created time.Time
	}
	var all []resource
	err := s.j.iterate(ctx, []byte{prefixState}, func(k, v []byte) error {
		typ, id, ok := bytes.Cut(k[1:], []byte{0})
		if !ok || len(v) == 0 || v[0] != stateValueV1 {
			return fmt.Errorf("malformed state entry %q", k)
		}
		v = v[1:]
		sec, n := binary.Varint(v)
		if n <= 0 {
			return fmt.Errorf("malformed state entry %q", k)
		}
		v = v[n:]
		nsec, n := binary.Uvarint(v)
		if n <= 0 || nsec >= uint64(time.Second) {
			return fmt.Errorf("malformed state entry %q", k)
		}
		all = append(all, resource{
			typ:     string(typ),
			id:      string(id),
			spec:    bytes.Clone(v[n:]),
			created: time.Unix(sec, int64(nsec)).UTC(),
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: resources: %w", err)
	}
	for _, r := range all {
		if err := fn(r.typ, r.id, r.spec, r.created); err != nil {
			return err
		}
	}
	return nil
}

func checkResource(typ, id string) error {
	return errors.Join(checkName("resource type", typ), checkName("resource id", id))
}

// write commits ops in the next group and waits until they are durable.
func (j *Journal) write(ctx context.Context, ops []op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g, err := j.submit(write{ops: ops, epoch: anyEpoch})
	if err != nil {
		return err
	}
	return wait(ctx, g)
}

// iterate calls fn for every committed key under prefix, in order (see
// view). fn must not keep k or v, and must not call into the Journal.
func (j *Journal) iterate(ctx context.Context, prefix []byte, fn func(k, v []byte) error) error {
	return j.view(ctx, func(db pebble.Reader) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return err
		}
		for ok := it.First(); ok && err == nil; ok = it.Next() {
			var v []byte
			if v, err = it.ValueAndErr(); err == nil {
				err = fn(it.Key(), v)
			}
		}
		return errors.Join(err, it.Close())
	})
}

// view runs fn with a reader of what the stores committed: a snapshot the
// committer takes after every group with store writes. Reading the
// database itself would show more: Pebble lets readers see a batch once it
// is in the memtable, before its fsync returns, and goes on showing a
// batch whose fsync failed. Through the snapshot, nothing a store has not
// reported durable is ever read (say, an outbox message delivered whose
// Append then failed). The snapshot stays usable until fn returns; view
// fails when there is none (closed, or recovery is reopening the
// database).
func (j *Journal) view(ctx context.Context, fn func(r pebble.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	j.dbMu.RLock()
	defer j.dbMu.RUnlock()
	if j.dbClosed {
		return journal.ErrClosed
	}
	v := j.acquireView()
	if v == nil {
		return fmt.Errorf("%w: read: no database open while the journal recovers", journal.ErrUnavailable)
	}
	defer j.releaseView(v)
	return fn(v.snap)
}

// A committedView is a snapshot of the database after a commit, shared by
// readers; the last one to let go of it closes it.
type committedView struct {
	snap *pebble.Snapshot
	refs int // guarded by Journal.viewMu; being current counts as one
}

func (j *Journal) acquireView() *committedView {
	j.viewMu.Lock()
	defer j.viewMu.Unlock()
	v := j.committed
	if v != nil {
		v.refs++
	}
	return v
}

func (j *Journal) releaseView(v *committedView) {
	j.viewMu.Lock()
	v.refs--
	last := v.refs == 0
	j.viewMu.Unlock()
	if last {
		_ = v.snap.Close() // errors only when closed twice
	}
}

// setView makes snap (nil: none) what readers see from now on. Only the
// committer and, while the committer is idle, Open, recovery and Close call
// it.
func (j *Journal) setView(snap *pebble.Snapshot) {
	var v *committedView
	if snap != nil {
		v = &committedView{snap: snap, refs: 1}
	}
	j.viewMu.Lock()
	old := j.committed
	j.committed = v
	j.viewMu.Unlock()
	if old != nil {
		j.releaseView(old)
	}
}
