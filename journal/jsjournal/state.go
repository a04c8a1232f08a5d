package jsjournal

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StateStore keeps Switchboard's desired state (the specs of the
// listeners and outbound connections callers created) in the cluster's
// Bucket, one key per resource: state.<Token(type)>.<Token(id)>. It
// implements service/registry's StateStore, and passes statetest.Run as
// pebblejournal's does.
//
// A value is a version byte (1), the creation time as a zigzag varint of
// unix seconds and a uvarint of nanoseconds, then the spec: the encoding
// pebblejournal uses, which keeps any time, the zero one included.
//
// PutResource and DeleteResource return once the PubAck arrived: the
// change is then on the stream's quorum (and, with SyncAlways, on disk).
// The store keeps no cache: every read asks the bucket, so it sees what
// any instance wrote. While NATS cannot be reached, calls fail with an
// error wrapping journal.ErrUnavailable, and work again once the
// connection is back. A write that failed so may still take effect later
// (its request may be sent on reconnect): its outcome is unknown, as that
// of any timed-out write. It is safe for concurrent use.
type StateStore struct{ b *Bucket }

// NewStateStore returns the desired-state store kept in b.
func NewStateStore(b *Bucket) *StateStore { return &StateStore{b: b} }

const (
	statePrefix    = "state."
	stateValueV1   = byte(1)
	stateAllFilter = statePrefix + ">"
)

func stateKey(typ, id string) string { return statePrefix + Token(typ) + "." + Token(id) }

// PutResource records a resource, replacing any of the same type and id,
// and returns once that is durable.
func (s *StateStore) PutResource(ctx context.Context, typ, id string, spec []byte, created time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkResource(typ, id); err != nil {
		return err
	}
	v := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(spec))
	v = append(v, stateValueV1)
	v = binary.AppendVarint(v, created.Unix())
	v = binary.AppendUvarint(v, uint64(created.Nanosecond()))
	v = append(v, spec...)
	if _, err := s.b.Put(ctx, stateKey(typ, id), v, Fence{}); err != nil {
		return fmt.Errorf("jsjournal: put %s %q: %w", typ, id, err)
	}
	return nil
}

// DeleteResource removes a resource and returns once that is durable.
// Removing one that does not exist is not an error.
func (s *StateStore) DeleteResource(ctx context.Context, typ, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkResource(typ, id); err != nil {
		return err
	}
	if err := s.b.Delete(ctx, stateKey(typ, id), Fence{}); err != nil {
		return fmt.Errorf("jsjournal: delete %s %q: %w", typ, id, err)
	}
	return nil
}

// resource is one decoded state entry.
type resource struct {
	typ, id string
	spec    []byte
	created time.Time
}

// Resources calls fn for every stored resource, ordered by type, then id
// (as bytes), and stops at the first error fn returns. It reads everything
// first (one pass over the bucket's current values), so fn may call the
// store.
func (s *StateStore) Resources(ctx context.Context, fn func(typ, id string, spec []byte, created time.Time) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := s.b.scan(ctx, stateAllFilter)
	if err != nil {
		return fmt.Errorf("jsjournal: resources: %w", err)
	}
	all := make([]resource, 0, len(entries))
	for _, e := range entries {
		r, err := decodeResource(e.Key(), e.Value())
		if err != nil {
			return fmt.Errorf("jsjournal: resources: %w", err)
		}
		all = append(all, r)
	}
	slices.SortFunc(all, func(a, b resource) int {
		return cmp.Or(strings.Compare(a.typ, b.typ), strings.Compare(a.id, b.id))
	})
	for _, r := range all {
		if err := fn(r.typ, r.id, r.spec, r.created); err != nil {
			return err
		}
	}
	return nil
}

// Watch calls fn for every current resource (deleted false, in the order
// they were last written), then for every later change any instance
// makes, in the order the bucket stored them, until ctx ends; it then returns
// ctx's error. A deletion comes with deleted true and a nil spec. It is how
// the instances of a cluster learn of resources another one created or
// deleted. fn runs on Watch's goroutine, one call at a time; it must not
// block for long, as the watch reads nothing meanwhile.
//
// It reads through an ordered consumer of the bucket's stream, from the
// last value of every key on. While NATS is unreachable the watch waits;
// the consumer recreates itself once the server answers again and goes on
// after the last change it delivered, so nothing is missed or repeated.
// Only creating the consumer is bounded by the bucket's timeout.
func (s *StateStore) Watch(ctx context.Context, fn func(typ, id string, spec []byte, created time.Time, deleted bool)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, s.b.Timeout)
	cons, err := s.b.JS.OrderedConsumer(cctx, "KV_"+s.b.Name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.b.Subject(stateAllFilter)},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("jsjournal: watch resources: %w", s.b.Err(err))
	}
	msgs := make(chan jetstream.Msg)
	done := make(chan struct{}) // closed when Watch returns, so the callback never blocks for ever
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-done:
		}
	}, jetstream.PullExpiry(2*time.Second), jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {
		// The ordered consumer recreates itself.
	}))
	if err != nil {
		return fmt.Errorf("jsjournal: watch resources: %w", s.b.Err(err))
	}
	defer cc.Stop()
	defer close(done)
	prefix := s.b.Subject("")
	initDone := false
	for {
		var m jetstream.Msg
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m = <-msgs:
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("jsjournal: watch resources: %w", err)
		}
		key := strings.TrimPrefix(m.Subject(), prefix)
		switch {
		case m.Headers().Get("KV-Operation") == "" && m.Headers().Get(jetstream.MarkerReasonHeader) == "":
			r, err := decodeResource(key, m.Data())
			if err != nil {
				return fmt.Errorf("jsjournal: watch resources: %w", err)
			}
			fn(r.typ, r.id, r.spec, r.created, false)
		case initDone:
			// A deleted key is no current resource; after the initial
			// values, it is a deletion to report.
			typ, id, err := resourceKey(key)
			if err != nil {
				return fmt.Errorf("jsjournal: watch resources: %w", err)
			}
			fn(typ, id, nil, time.Time{}, true)
		}
		if md.NumPending == 0 {
			initDone = true
		}
	}
}

// resourceKey decodes a key stateKey made.
func resourceKey(key string) (typ, id string, err error) {
	rest, ok := strings.CutPrefix(key, statePrefix)
	if !ok {
		return "", "", fmt.Errorf("malformed state key %q", key)
	}
	t, i, ok := strings.Cut(rest, ".")
	if !ok {
		return "", "", fmt.Errorf("malformed state key %q", key)
	}
	if typ, err = FromToken(t); err == nil {
		id, err = FromToken(i)
	}
	if err != nil {
		return "", "", fmt.Errorf("malformed state key %q: %w", key, err)
	}
	return typ, id, nil
}

// decodeResource decodes a state entry; the spec it returns is a copy.
func decodeResource(key string, v []byte) (resource, error) {
	typ, id, err := resourceKey(key)
	if err != nil {
		return resource{}, err
	}
	bad := fmt.Errorf("malformed state entry %q", key)
	if len(v) == 0 || v[0] != stateValueV1 {
		return resource{}, bad
	}
	v = v[1:]
	sec, n := binary.Varint(v)
	if n <= 0 {
		return resource{}, bad
	}
	v = v[n:]
	nsec, n := binary.Uvarint(v)
	if n <= 0 || nsec >= uint64(time.Second) {
		return resource{}, bad
	}
	var spec []byte
	if len(v[n:]) > 0 {
		spec = slices.Clone(v[n:])
	}
	return resource{typ: typ, id: id, spec: spec, created: time.Unix(sec, int64(nsec)).UTC()}, nil
}

// errBadName is wrapped by the error for a name or id a key cannot hold.
var errBadName = errors.New("must be non-empty and must not contain NUL")

// checkName rejects what the stores do not key: empty, or holding NUL, as
// pebblejournal refuses them, so that both backends take the same ids.
func checkName(what, s string) error {
	if s == "" || strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("jsjournal: %s %q: %w", what, s, errBadName)
	}
	return nil
}

func checkResource(typ, id string) error {
	return errors.Join(checkName("resource type", typ), checkName("resource id", id))
}

// scan returns the current value of every key filter matches, deleted
// keys left out, read in one pass of an ordered consumer over the
// bucket's last value per key. It is bounded by b.Timeout.
func (b *Bucket) scan(ctx context.Context, filter string) ([]jetstream.KeyValueEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	w, err := b.KV.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, b.Err(err)
	}
	defer func() { _ = w.Stop() }()
	var out []jetstream.KeyValueEntry
	for {
		select {
		case <-ctx.Done():
			return nil, b.Err(ctx.Err())
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return nil, b.Err(errors.New("watch ended"))
			case e == nil:
				return out, nil
			}
			out = append(out, e)
		}
	}
}
