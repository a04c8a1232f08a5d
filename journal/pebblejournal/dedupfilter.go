package pebblejournal

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// dedupFilter spares Append the index lookup for ids the index cannot hold,
// which is nearly every id: most messages are not resends. It counts, by a
// 64-bit hash of the id, the index entries there are (loaded at Open, kept
// up to date by Append and by expiry), so an id whose hash has no count has
// no entry, and only the others (resends, and the rare hash collision) are
// looked up. A count may be too high (an entry whose commit failed), which
// only costs a lookup; it is never too low, which would miss a duplicate.
// It takes about 16 bytes per index entry.
type dedupFilter struct {
	seed   maphash.Seed
	mu     sync.Mutex
	counts map[uint64]uint32
}

func newDedupFilter() *dedupFilter {
	return &dedupFilter{seed: maphash.MakeSeed(), counts: make(map[uint64]uint32)}
}

func (f *dedupFilter) hash(id string) uint64 { return maphash.String(f.seed, id) }

// mayHold reports whether the index may hold an entry for id.
func (f *dedupFilter) mayHold(id string) bool {
	h := f.hash(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[h] > 0
}

// add counts a new entry for id (call it before the entry is committed).
func (f *dedupFilter) add(id string) {
	h := f.hash(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[h]++
}

// remove uncounts id's entry once its deletion is committed.
func (f *dedupFilter) remove(id string) {
	h := f.hash(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch n := f.counts[h]; n {
	case 0:
	case 1:
		delete(f.counts, h)
	default:
		f.counts[h] = n - 1
	}
}

// load counts every entry of db's index.
func (f *dedupFilter) load(db *pebble.DB) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixDedup}, UpperBound: []byte{prefixDedup + 1}})
	if err != nil {
		return fmt.Errorf("journal: load the duplicate index: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		f.add(string(it.Key()[1:]))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("journal: load the duplicate index: %w", err)
	}
	return nil
}
