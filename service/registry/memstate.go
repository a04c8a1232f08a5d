package registry

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

var _ StateStore = (*MemState)(nil)

// MemState is a StateStore in memory: desired state lives as long as the
// process, for tests and for running without a data directory. It passes
// statetest.Run (without the reopen tests). The zero value is ready to use
// and it is safe for concurrent use.
type MemState struct {
	mu        sync.Mutex
	resources map[resourceKey]memResource
}

type resourceKey struct{ typ, id string }

type memResource struct {
	spec    []byte
	created time.Time
}

// PutResource records a resource, replacing any of the same type and id.
func (s *MemState) PutResource(ctx context.Context, typ, id string, spec []byte, created time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resources == nil {
		s.resources = map[resourceKey]memResource{}
	}
	s.resources[resourceKey{typ, id}] = memResource{spec: bytes.Clone(spec), created: created}
	return nil
}

// DeleteResource removes a resource; removing one that does not exist is
// not an error.
func (s *MemState) DeleteResource(ctx context.Context, typ, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.resources, resourceKey{typ, id})
	return nil
}

// Resources calls fn for every resource, ordered by type, then id, and
// stops at the first error fn returns. fn runs without the lock held, so it
// may call the store.
func (s *MemState) Resources(ctx context.Context, fn func(typ, id string, spec []byte, created time.Time) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type entry struct {
		resourceKey
		memResource
	}
	s.mu.Lock()
	all := make([]entry, 0, len(s.resources))
	for k, r := range s.resources {
		all = append(all, entry{k, memResource{spec: bytes.Clone(r.spec), created: r.created}})
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b entry) int { return cmp.Or(cmp.Compare(a.typ, b.typ), cmp.Compare(a.id, b.id)) })
	for _, e := range all {
		if err := fn(e.typ, e.id, e.spec, e.created); err != nil {
			return err
		}
	}
	return nil
}
