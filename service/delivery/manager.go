package delivery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
)

// Errors of the Manager and its streams. Storage and journal errors are
// wrapped with context and returned as they are.
var (
	// ErrNotFound: no consumer of that name.
	ErrNotFound = errors.New("delivery: consumer not found")
	// ErrConflict: Attach with a Spec that differs from the existing
	// consumer's.
	ErrConflict = errors.New("delivery: consumer exists with a different spec")
	// ErrNotDelivered: Ack of a sequence the consumer never delivered.
	ErrNotDelivered = errors.New("delivery: not delivered")
	// ErrDeleted: the consumer was deleted while the stream was attached.
	ErrDeleted = errors.New("delivery: consumer deleted")
	// ErrClosed: the Manager (or the Stream) was closed.
	ErrClosed = errors.New("delivery: closed")
	// ErrInvalid: a consumer name or Spec no consumer can have.
	ErrInvalid = errors.New("delivery: invalid")
)

// Config configures Open.
type Config struct {
	Journal journal.Journal // required
	Store   Store           // nil -> NewMemStore()
	Logger  *slog.Logger    // nil discards
	// Now is the clock for ack-wait deadlines and the times Info and dead
	// letters report; nil is time.Now. (Waiting for an ack-wait deadline
	// uses a real timer for the difference Now reports.)
	Now func() time.Time
}

// Manager keeps every durable consumer of one journal. It is safe for
// concurrent use.
type Manager struct {
	j      journal.Journal
	store  Store
	logger *slog.Logger
	now    func() time.Time

	mu        sync.Mutex // taken before any consumer's mu
	consumers map[string]*consumer
	closed    bool
}

// consumer is one durable consumer's state in memory.
type consumer struct {
	name    string
	spec    Spec // with defaults
	created time.Time
	// floor is what Floor reports for this consumer, kept up to date under
	// mu so that retention reads it without waiting.
	floor atomic.Uint64

	mu           sync.Mutex
	next         uint64
	pending      map[uint64]*pending
	dead         int64
	deadMin      uint64 // at most the smallest dead letter's sequence; 0: none
	redeliveries int64
	streams      []*Stream // attached, in attach order
	// wake is cancelled (and replaced) whenever a waiting Next may now do
	// something: an ack or nak, a stream closing, Delete, Close.
	wake       context.Context
	wakeCancel context.CancelFunc
	deleted    bool
	closed     bool

	// Saving: gen counts changes of the stored form; saved and durable are
	// the gens last written and last made durable. One Save runs at a time
	// (saving); whoever runs it writes the newest state, also on behalf of
	// those who changed it meanwhile.
	gen, saved, durable uint64
	saving              bool
	saveDone            chan struct{} // closed when a run of saves ends
	deadAdd             []DeadLetter  // not saved yet
	deadDel             []uint64      // not saved yet
}

// pending is a message delivered and not acked.
type pending struct {
	count uint32    // deliveries so far
	first time.Time // first delivery
	due   time.Time // when it is due for redelivery, if owner is set
	owner *Stream   // the stream it is out with; nil: due now
	// again: it was delivered before (a restart, a replay) although count
	// may not say so.
	again bool
}

// Open returns a Manager for cfg.Journal with every consumer cfg.Store
// holds. After Open every message a consumer had delivered and not acked
// is due for redelivery at once.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Journal == nil {
		return nil, errors.New("delivery: open: no journal")
	}
	m := &Manager{j: cfg.Journal, store: cfg.Store, logger: cfg.Logger, now: cfg.Now, consumers: map[string]*consumer{}}
	if m.store == nil {
		m.store = NewMemStore()
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	err := m.store.Load(ctx, func(name string, state []byte) error {
		c, err := loadConsumer(name, state)
		if err == nil {
			m.consumers[name] = c
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("delivery: open: %w", err)
	}
	for _, c := range m.consumers {
		if err := m.loadDeadMin(ctx, c); err != nil {
			return nil, fmt.Errorf("delivery: open: %w", err)
		}
	}
	return m, nil
}

// loadConsumer decodes a stored consumer; every message it had delivered
// and not acked is due again.
func loadConsumer(name string, state []byte) (*consumer, error) {
	st, err := decodeState(state)
	if err != nil {
		return nil, fmt.Errorf("consumer %q: %w", name, err)
	}
	c := newConsumer(name, st.spec, st.created, st.next)
	c.dead = st.dead
	for _, p := range st.pending {
		c.pending[p.seq] = &pending{count: p.count, first: p.first, again: true}
	}
	return c, nil
}

// loadDeadMin sets a loaded consumer's lowest dead letter and its floor.
func (m *Manager) loadDeadMin(ctx context.Context, c *consumer) error {
	if c.dead > 0 {
		d, err := m.store.DeadLetters(ctx, c.name, 0, 1)
		if err != nil {
			return fmt.Errorf("consumer %q: %w", c.name, err)
		}
		if len(d) > 0 {
			c.deadMin = d[0].Seq
		}
	}
	c.updateFloorLocked()
	return nil
}

// Reload reads the named consumers (none named: every one) again from the
// store, replacing what this Manager holds of those that have no stream
// attached here: in a cluster another instance may have delivered and
// saved since (service/clustered.go gives a consumer to one instance at a
// time). A consumer gone from the store is dropped; one new in it is
// added. Consumers with a stream attached here are left as they are.
func (m *Manager) Reload(ctx context.Context, names ...string) error {
	fresh := map[string]*consumer{}
	want := func(name string) bool { return len(names) == 0 || slices.Contains(names, name) }
	err := m.store.Load(ctx, func(name string, state []byte) error {
		if !want(name) {
			return nil
		}
		c, err := loadConsumer(name, state)
		if err != nil {
			return err
		}
		if err := m.loadDeadMin(ctx, c); err != nil {
			return err
		}
		fresh[name] = c
		return nil
	})
	if err != nil {
		return fmt.Errorf("delivery: reload: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for name, c := range m.consumers {
		if _, ok := fresh[name]; !ok && want(name) && m.idleLocked(c) {
			delete(m.consumers, name)
		}
	}
	for name, c := range fresh {
		if old := m.consumers[name]; old == nil || m.idleLocked(old) {
			m.consumers[name] = c
		}
	}
	return nil
}

// idleLocked reports whether no stream is attached to c and nothing of it
// is waiting to be saved. m.mu must be held.
func (m *Manager) idleLocked(c *consumer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams) == 0 && !c.saving && c.saved == c.gen && len(c.deadAdd) == 0 && len(c.deadDel) == 0
}

func newConsumer(name string, spec Spec, created time.Time, next uint64) *consumer {
	c := &consumer{name: name, spec: spec, created: created, next: max(next, 1),
		pending: map[uint64]*pending{}, saveDone: make(chan struct{})}
	c.wake, c.wakeCancel = context.WithCancel(context.Background())
	return c
}

// broadcastLocked wakes every waiting Next. c.mu must be held.
func (c *consumer) broadcastLocked() {
	c.wakeCancel()
	c.wake, c.wakeCancel = context.WithCancel(context.Background())
}

// changedLocked notes a change of the stored form. c.mu must be held.
func (c *consumer) changedLocked() {
	c.gen++
	c.updateFloorLocked()
}

func (c *consumer) updateFloorLocked() {
	f := c.next
	for seq := range c.pending {
		f = min(f, seq)
	}
	if c.deadMin != 0 {
		f = min(f, c.deadMin)
	}
	c.floor.Store(f)
}

func (c *consumer) storedLocked() *stored {
	st := &stored{spec: c.spec, created: c.created, next: c.next, dead: c.dead,
		pending: make([]storedPending, 0, len(c.pending))}
	for seq, p := range c.pending {
		st.pending = append(st.pending, storedPending{seq: seq, count: p.count, first: p.first})
	}
	slices.SortFunc(st.pending, func(a, b storedPending) int { return cmp.Compare(a.seq, b.seq) })
	return st
}

// AttachOptions says what Attach attaches to.
type AttachOptions struct {
	// Spec creates the consumer when it does not exist. When it exists, a
	// non-nil Spec must Equal the stored one (else ErrConflict); nil
	// attaches to the existing one (ErrNotFound when there is none).
	Spec *Spec
	// Start is the first sequence a NEW consumer considers (the caller
	// passes journal LastSeq+1 for "only new", 0 or 1 for everything
	// retained). Below FirstSeq it means FirstSeq: nothing counts as lost.
	Start uint64
	// StopAtHead: Next returns io.EOF once everything stored before Attach
	// returned (LastSeq then) has been delivered or was filtered out, and
	// no redelivery is due now.
	StopAtHead bool
}

// Attach attaches a new stream to the consumer name, creating it (durably)
// when o.Spec is set and there is none. Names must be non-empty and free
// of NUL (ErrInvalid), and so must a Spec be valid (Spec.Validate).
func (m *Manager) Attach(ctx context.Context, name string, o AttachOptions) (*Stream, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var spec Spec
	if o.Spec != nil {
		if err := o.Spec.Validate(); err != nil {
			return nil, fmt.Errorf("delivery: consumer %q: %w", name, err)
		}
		spec = o.Spec.WithDefaults()
	}
	head, err := m.j.LastSeq(ctx)
	if err != nil {
		return nil, fmt.Errorf("delivery: attach %q: %w", name, err)
	}
	first, err := m.j.FirstSeq(ctx)
	if err != nil {
		return nil, fmt.Errorf("delivery: attach %q: %w", name, err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	c := m.consumers[name]
	created := false
	switch {
	case c == nil && o.Spec == nil:
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	case c == nil:
		c = newConsumer(name, spec, m.now().UTC(), max(o.Start, first))
		c.changedLocked()
		m.consumers[name] = c
		created = true
	case o.Spec != nil && !c.spec.Equal(spec):
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrConflict, name)
	}
	s := &Stream{m: m, c: c, stopAtHead: o.StopAtHead, head: head}
	c.mu.Lock()
	c.streams = append(c.streams, s)
	c.mu.Unlock()
	m.mu.Unlock()
	if created {
		if err := m.persist(ctx, c, true); err != nil {
			m.mu.Lock()
			if m.consumers[name] == c {
				delete(m.consumers, name)
			}
			m.mu.Unlock()
			c.mu.Lock()
			c.deleted = true
			c.broadcastLocked()
			c.mu.Unlock()
			return nil, fmt.Errorf("delivery: create %q: %w", name, err)
		}
	}
	return s, nil
}

// lookup returns the consumer name.
func (m *Manager) lookup(name string) (*consumer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	c := m.consumers[name]
	if c == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return c, nil
}

// Ack settles messages of consumer name: seqs individually, through =
// every delivered message <= through (0: none), naks = due for redelivery
// at once. A sequence never delivered (>= Info.Next and not pending, or 0)
// fails the call with ErrNotDelivered and nothing is applied. One already
// acked (or dead) is a no-op. Ack returns once the change is durable, with
// the consumer's Info after it.
func (m *Manager) Ack(ctx context.Context, name string, seqs []uint64, through uint64, naks []uint64) (Info, error) {
	c, err := m.lookup(name)
	if err != nil {
		return Info{}, err
	}
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return Info{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	for _, list := range [][]uint64{seqs, naks} {
		for _, seq := range list {
			if c.pending[seq] == nil && (seq == 0 || seq >= c.next) {
				c.mu.Unlock()
				return Info{}, fmt.Errorf("%w: consumer %q has not delivered %d", ErrNotDelivered, name, seq)
			}
		}
	}
	if through >= c.next {
		c.mu.Unlock()
		return Info{}, fmt.Errorf("%w: consumer %q has delivered up to %d, not %d", ErrNotDelivered, name, c.next-1, through)
	}
	acked := 0
	for _, seq := range seqs {
		if c.pending[seq] != nil {
			delete(c.pending, seq)
			acked++
		}
	}
	if through > 0 {
		for seq := range c.pending {
			if seq <= through {
				delete(c.pending, seq)
				acked++
			}
		}
	}
	nak := false
	for _, seq := range naks {
		if p := c.pending[seq]; p != nil {
			p.owner, nak = nil, true
		}
	}
	if acked > 0 {
		c.changedLocked()
	}
	if acked > 0 || nak {
		c.broadcastLocked()
	}
	c.mu.Unlock()
	if err := m.persist(ctx, c, true); err != nil {
		return Info{}, err
	}
	return m.info(ctx, c)
}

// persist writes c's state (and dead letter changes) if it changed since
// it was last written: with sync, returns once what c held when persist
// was called is durable; without, once it is readable. It runs at most one
// Save per consumer at a time: a call that finds one running leaves its
// change to it (unsynced) or waits for it (sync).
func (m *Manager) persist(ctx context.Context, c *consumer, sync bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := c.gen
	for {
		if c.deleted || c.durable >= want || (!sync && c.saved >= want) {
			return nil
		}
		if !c.saving {
			break
		}
		if !sync {
			return nil // the running save writes our change after its own
		}
		ch := c.saveDone
		c.mu.Unlock()
		select {
		case <-ch:
			c.mu.Lock()
		case <-ctx.Done():
			c.mu.Lock()
			return ctx.Err()
		}
	}
	c.saving = true
	defer func() {
		c.saving = false
		close(c.saveDone)
		c.saveDone = make(chan struct{})
	}()
	for !c.deleted && (c.saved < c.gen || (sync && c.durable < want)) {
		gen := c.gen
		state := encodeState(c.storedLocked())
		add, del := c.deadAdd[:len(c.deadAdd):len(c.deadAdd)], c.deadDel[:len(c.deadDel):len(c.deadDel)]
		durable := sync && c.durable < want
		c.mu.Unlock()
		err := m.store.Save(ctx, c.name, state, add, del, durable)
		c.mu.Lock()
		if err != nil {
			return fmt.Errorf("delivery: save consumer %q: %w", c.name, err)
		}
		// Only appends happen meanwhile, so what was saved is a prefix.
		c.deadAdd, c.deadDel = c.deadAdd[len(add):], c.deadDel[len(del):]
		c.saved = gen
		if durable {
			c.durable = gen
		}
	}
	return nil
}

// Info describes a consumer.
type Info struct {
	Name          string
	Spec          Spec // with defaults
	Created       time.Time
	Next          uint64    // every record < Next was delivered or filtered out
	AckFloor      uint64    // every message <= AckFloor is acked or dead
	Pending       int       // delivered, not acked
	Backlog       int64     // journal LastSeq - (Next-1), before filters
	OldestPending time.Time // first delivery time of the oldest pending; zero if none
	Redeliveries  int64     // since Open
	DeadLetters   int64
	Streams       int // attached now
}

func (m *Manager) info(ctx context.Context, c *consumer) (Info, error) {
	last, err := m.j.LastSeq(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("delivery: consumer %q: %w", c.name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	in := Info{
		Name: c.name, Spec: c.spec, Created: c.created, Next: c.next,
		AckFloor: c.next - 1, Pending: len(c.pending), Redeliveries: c.redeliveries,
		DeadLetters: c.dead, Streams: len(c.streams),
	}
	for seq, p := range c.pending {
		in.AckFloor = min(in.AckFloor, seq-1)
		if in.OldestPending.IsZero() || p.first.Before(in.OldestPending) {
			in.OldestPending = p.first
		}
	}
	if last >= c.next {
		in.Backlog = int64(last - (c.next - 1))
	}
	return in, nil
}

// Get returns the consumer name's Info, ErrNotFound when there is none.
func (m *Manager) Get(ctx context.Context, name string) (Info, error) {
	c, err := m.lookup(name)
	if err != nil {
		return Info{}, err
	}
	return m.info(ctx, c)
}

// List returns every consumer's Info, by name.
func (m *Manager) List(ctx context.Context) ([]Info, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	cs := make([]*consumer, 0, len(m.consumers))
	for _, c := range m.consumers {
		cs = append(cs, c)
	}
	m.mu.Unlock()
	slices.SortFunc(cs, func(a, b *consumer) int { return cmp.Compare(a.name, b.name) })
	out := make([]Info, 0, len(cs))
	for _, c := range cs {
		in, err := m.info(ctx, c)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// Delete removes the consumer name and its dead letters, durably; the
// Next of its streams returns ErrDeleted. ErrNotFound when there is none.
func (m *Manager) Delete(ctx context.Context, name string) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	c := m.consumers[name]
	if c == nil {
		m.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	delete(m.consumers, name)
	m.mu.Unlock()
	c.mu.Lock()
	c.deleted = true
	c.broadcastLocked()
	// A save under way must not write the state back after the deletion.
	for c.saving {
		ch := c.saveDone
		c.mu.Unlock()
		<-ch // a Save returns: the journal commits or fails it
		c.mu.Lock()
	}
	c.mu.Unlock()
	if err := m.store.Delete(ctx, name); err != nil {
		return fmt.Errorf("delivery: delete %q: %w", name, err)
	}
	return nil
}

// DeadLetters returns up to n (n <= 0: all) of consumer name's dead letters
// with a sequence above after, by sequence.
func (m *Manager) DeadLetters(ctx context.Context, name string, after uint64, n int) ([]DeadLetter, error) {
	if _, err := m.lookup(name); err != nil {
		return nil, err
	}
	d, err := m.store.DeadLetters(ctx, name, after, n)
	if err != nil {
		return nil, fmt.Errorf("delivery: dead letters of %q: %w", name, err)
	}
	return d, nil
}

// Replay makes dead letters of consumer name (nil seqs: all of them;
// sequences that are not dead letters are skipped) due for delivery again,
// with their delivery count reset, and returns how many. It returns once
// that is durable. Replayed messages count as pending, and may take
// pending above MaxAckPending for a while.
func (m *Manager) Replay(ctx context.Context, name string, seqs []uint64) (int, error) {
	c, err := m.lookup(name)
	if err != nil {
		return 0, err
	}
	var found []uint64
	if seqs == nil {
		for after := uint64(0); ; {
			d, err := m.store.DeadLetters(ctx, name, after, 1000)
			if err != nil {
				return 0, fmt.Errorf("delivery: replay %q: %w", name, err)
			}
			if len(d) == 0 {
				break
			}
			for _, l := range d {
				found = append(found, l.Seq)
			}
			after = d[len(d)-1].Seq
		}
	} else {
		for _, seq := range seqs {
			if seq == 0 {
				continue
			}
			d, err := m.store.DeadLetters(ctx, name, seq-1, 1)
			if err != nil {
				return 0, fmt.Errorf("delivery: replay %q: %w", name, err)
			}
			if len(d) == 1 && d[0].Seq == seq {
				found = append(found, seq)
			}
		}
	}
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return 0, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	now := m.now().UTC()
	n := 0
	for _, seq := range found {
		if c.pending[seq] != nil || slices.Contains(c.deadDel, seq) {
			continue // replayed already
		}
		c.pending[seq] = &pending{first: now, again: true}
		c.deadDel = append(c.deadDel, seq)
		c.dead--
		n++
	}
	if n > 0 {
		m.refreshDeadMinLocked(ctx, c)
		c.changedLocked()
		c.broadcastLocked()
	}
	c.mu.Unlock()
	if err := m.persist(ctx, c, true); err != nil {
		return 0, err
	}
	return n, nil
}

// refreshDeadMinLocked recomputes c.deadMin after dead letters went: from
// the store and the additions not saved yet. Deletions not saved yet make
// it smaller than it could be, which only keeps records longer. c.mu must
// be held.
func (m *Manager) refreshDeadMinLocked(ctx context.Context, c *consumer) {
	if c.dead <= 0 {
		c.deadMin = 0
		return
	}
	lo, after := uint64(0), uint64(0)
	for lo == 0 {
		d, err := m.store.DeadLetters(ctx, c.name, after, 100)
		if err != nil || len(d) == 0 {
			break
		}
		for _, l := range d {
			if !slices.Contains(c.deadDel, l.Seq) {
				lo = l.Seq
				break
			}
		}
		after = d[len(d)-1].Seq
	}
	for _, l := range c.deadAdd {
		if lo == 0 || l.Seq < lo {
			lo = l.Seq
		}
	}
	if lo != 0 { // else keep the old bound: the store could not be read
		c.deadMin = lo
	}
}

// Attached returns how many streams are attached to consumer name now (0
// when there is no such consumer).
func (m *Manager) Attached(name string) int {
	m.mu.Lock()
	c := m.consumers[name]
	m.mu.Unlock()
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams)
}

// Floor returns the smallest sequence some consumer still needs (its
// oldest pending message or dead letter, else its Next); math.MaxUint64
// with no consumers. Retention by age must never delete from Floor on
// (pebblejournal's SetRetentionFloor). It does not wait for a consumer
// busy in Next.
func (m *Manager) Floor() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := uint64(math.MaxUint64)
	for _, c := range m.consumers {
		f = min(f, c.floor.Load())
	}
	return f
}

// Close ends every stream's Next with ErrClosed and writes every
// consumer's last state durably (what could not be written is logged).
// Later calls do nothing. It does not close the journal.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	cs := make([]*consumer, 0, len(m.consumers))
	for _, c := range m.consumers {
		cs = append(cs, c)
	}
	m.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		c.closed = true
		c.broadcastLocked()
		c.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range cs {
		if err := m.persist(ctx, c, true); err != nil {
			m.logger.Warn("delivery: could not save a consumer at close; its recent deliveries will count as first deliveries after a restart",
				"consumer", c.name, "err", err)
		}
	}
}
