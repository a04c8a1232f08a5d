// Package cluster lets several Switchboard instances share one NATS
// JetStream cluster: who is alive (members), who owns which listener and
// outbound connection (leases), and calls from one instance to another
// (request/reply, route.go). It is gRPC-free except for carrying a gRPC
// status across a call.
//
// # Members
//
// Every instance writes its member key ("member.<instance>") in the
// cluster's bucket every TTL/5. An instance counts as alive while an
// observer has seen its key change within the last TTL, measured on the
// observer's own monotonic clock from when it saw the change; a key seen
// for the first time counts from then, so a new observer waits a whole TTL
// before it calls anyone dead.
//
// # Leases and fencing
//
// A lease is the key "lease.<type>.<id>" whose value is the owner's
// instance name. It is written only when ownership changes: created when
// the resource is free, or replaced, with a revision check, when its owner
// is no longer alive. So the lease's revision names one term of
// ownership, and it is the fence: every write the owner makes about the
// resource (its outbox, jsjournal.Fence) is stored only while the lease is
// still at that revision. An instance that lost its lease, whatever its
// clock or network says, can no longer write about the resource.
//
// An owner also stops using its resources by itself (Valid) once its own
// heartbeat has not been stored for 3/4 TTL since the last one that was:
// the others wait at least a whole TTL after they saw that heartbeat
// before they take over, so the owner has let go of its TCP sessions and
// bound ports first (clocks run at the same rate; they need not agree).
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/jsjournal"
)

// DefaultLeaseTTL is how long an instance may go unheard before others
// take its resources over: with heartbeats every 2 s, a dead instance's
// connections are re-owned within about 10-12 s.
const DefaultLeaseTTL = 10 * time.Second

// Config configures a Node.
type Config struct {
	// Bucket is the cluster's key-value bucket (jsjournal.OpenBucket).
	Bucket *jsjournal.Bucket
	// Conn is the NATS connection calls between instances use.
	Conn *nats.Conn
	// Cluster names the cluster: the subjects of calls are
	// "switchboard.<Cluster>.rpc.<instance>".
	Cluster string
	// Instance names this instance, unique in the cluster.
	Instance string
	// LeaseTTL: see DefaultLeaseTTL; 0 means it.
	LeaseTTL time.Duration
	// Logger receives the node's logging; nil discards it.
	Logger *slog.Logger
}

// ErrNotValid: this instance has not stored its heartbeat recently, so it
// must not take or use leases (it may be cut off from the cluster).
var ErrNotValid = errors.New("cluster: this instance is cut off from the cluster (heartbeat not stored)")

// OwnedError: the resource is owned by another, live instance.
type OwnedError struct{ Owner string }

func (e *OwnedError) Error() string { return fmt.Sprintf("cluster: owned by instance %q", e.Owner) }

// Node is this instance's view of the cluster. It is safe for concurrent
// use.
type Node struct {
	cfg   Config
	b     *jsjournal.Bucket
	log   *slog.Logger
	ttl   time.Duration
	every time.Duration // heartbeat period

	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup
	subs   []*nats.Subscription

	mu         sync.Mutex
	members    map[string]*seen // by instance
	leases     map[string]*lease
	validUntil time.Time // monotonic; zero until the first heartbeat is stored
	myRev      uint64    // revision of the last heartbeat stored
	watchedRev uint64    // the newest own heartbeat the watcher delivered
	changed    chan struct{}
}

type seen struct {
	rev     uint64
	at      time.Time // when this node saw rev
	deleted bool
}

type lease struct {
	owner string
	seen
}

// member is a member key's value.
type member struct {
	Instance string    `json:"instance"`
	Started  time.Time `json:"started"`
}

// Start joins the cluster: it stores the first heartbeat (failing if it
// cannot), starts watching members and leases and keeps heartbeating
// until Close.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Instance == "" || strings.ContainsAny(cfg.Instance, " .*>\t\r\n") {
		return nil, fmt.Errorf("cluster: invalid instance name %q: non-empty, without spaces, '.', '*' or '>'", cfg.Instance)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{
		cfg: cfg, b: cfg.Bucket, ttl: cfg.LeaseTTL, every: cfg.LeaseTTL / 5,
		log:     cfg.Logger.With("component", "cluster", "instance", cfg.Instance),
		members: map[string]*seen{}, leases: map[string]*lease{},
		changed: make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.heartbeat(ctx, time.Now()); err != nil {
		n.cancel()
		return nil, err
	}
	n.done.Add(2)
	go n.heartbeatLoop()
	go n.watchLoop()
	return n, nil
}

// Instance is this instance's name.
func (n *Node) Instance() string { return n.cfg.Instance }

// TTL is the lease TTL.
func (n *Node) TTL() time.Duration { return n.ttl }

// Close stops heartbeating and watching; the leases it holds expire with
// its member key, which is deleted so that the others need not wait a TTL.
func (n *Node) Close() {
	n.cancel()
	n.mu.Lock()
	subs := n.subs
	n.subs = nil
	n.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	n.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = n.b.KV.Delete(ctx, memberKey(n.cfg.Instance))
}

func memberKey(instance string) string { return "member." + jsjournal.Token(instance) }

// LeaseKey is the key of a resource's lease.
func LeaseKey(typ, id string) string { return "lease." + typ + "." + jsjournal.Token(id) }

// heartbeat stores the member key; on success this instance is valid for
// 3/4 TTL from began.
func (n *Node) heartbeat(ctx context.Context, began time.Time) error {
	v, _ := json.Marshal(member{Instance: n.cfg.Instance, Started: began.UTC()})
	rev, err := n.b.Put(ctx, memberKey(n.cfg.Instance), v, jsjournal.Fence{})
	if err != nil {
		return fmt.Errorf("cluster: heartbeat: %w", err)
	}
	n.mu.Lock()
	wasValid := time.Now().Before(n.validUntil)
	n.validUntil = began.Add(n.ttl * 3 / 4)
	n.myRev = rev
	n.mu.Unlock()
	if !wasValid {
		n.notify()
	}
	return nil
}

func (n *Node) heartbeatLoop() {
	defer n.done.Done()
	t := time.NewTicker(n.every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		began := time.Now()
		err := n.heartbeat(n.ctx, began)
		switch {
		case err != nil && !failing && n.ctx.Err() == nil:
			n.log.Error("heartbeat failed; resources are released if it goes on", "err", err)
		case err == nil && failing:
			n.log.Info("heartbeat stored again")
		}
		failing = err != nil
		n.mu.Lock()
		lapsed := !n.validUntil.IsZero() && time.Now().After(n.validUntil)
		n.mu.Unlock()
		if lapsed {
			n.notify()
		}
	}
}

// watchLoop follows the member and lease keys. The watch is re-created
// when it stops delivering this instance's own heartbeats (after a
// reconnect or a server restart it may have gone quiet).
func (n *Node) watchLoop() {
	defer n.done.Done()
	for n.ctx.Err() == nil {
		n.watch()
		select {
		case <-n.ctx.Done():
		case <-time.After(n.every / 2):
		}
	}
}

func (n *Node) watch() {
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	w, err := n.b.KV.WatchFiltered(ctx, []string{"member.>", "lease.>"})
	if err != nil {
		return
	}
	defer func() { _ = w.Stop() }()
	check := time.NewTicker(n.every * 2)
	defer check.Stop()
	var lastMine uint64
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				n.apply(e)
			}
		case <-check.C:
			// Our own heartbeat must have come through since the last
			// check, or the watch is stale.
			n.mu.Lock()
			mine, stored := n.watchedRev, n.myRev
			n.mu.Unlock()
			if mine == lastMine && stored > mine {
				n.log.Warn("member watch went quiet; re-created")
				return
			}
			lastMine = mine
		}
	}
}

func (n *Node) apply(e jetstream.KeyValueEntry) {
	now := time.Now()
	del := e.Operation() != jetstream.KeyValuePut
	key := e.Key()
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case strings.HasPrefix(key, "member."):
		inst, err := jsjournal.FromToken(strings.TrimPrefix(key, "member."))
		if err != nil {
			return
		}
		if inst == n.cfg.Instance {
			n.watchedRev = max(n.watchedRev, e.Revision())
		}
		s := n.members[inst]
		if s == nil {
			s = &seen{}
			n.members[inst] = s
		}
		if s.rev == e.Revision() {
			return
		}
		wasAlive := n.aliveLocked(inst)
		*s = seen{rev: e.Revision(), at: now, deleted: del}
		if wasAlive == n.aliveLocked(inst) {
			return // a heartbeat of a live member: nothing changed
		}
	case strings.HasPrefix(key, "lease."):
		l := n.leases[key]
		if l == nil {
			l = &lease{}
			n.leases[key] = l
		}
		if l.rev == e.Revision() {
			return
		}
		was := l.owner
		l.seen = seen{rev: e.Revision(), at: now, deleted: del}
		l.owner = ""
		if !del {
			l.owner = string(e.Value())
		}
		if was == n.cfg.Instance && l.owner != was {
			n.log.Warn("lease taken over", "lease", key, "new_owner", l.owner)
		}
	}
	n.notifyLocked()
}

func (n *Node) notify() {
	n.mu.Lock()
	n.notifyLocked()
	n.mu.Unlock()
}

func (n *Node) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// Changed is closed at the next change of leases, at a member joining,
// leaving or coming back, and when this instance's validity changes (its
// heartbeat lapsed, or is stored again). Another member going silent is a
// matter of time passing, not an event: callers also look again every
// TTL/5.
func (n *Node) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

// Valid reports whether this instance's last heartbeat is recent enough
// for it to hold leases and use its resources.
func (n *Node) Valid() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.validLocked()
}

func (n *Node) validLocked() bool { return time.Now().Before(n.validUntil) }

func (n *Node) aliveLocked(inst string) bool {
	if inst == n.cfg.Instance {
		return n.validLocked()
	}
	s := n.members[inst]
	return s != nil && !s.deleted && time.Since(s.at) < n.ttl
}

// Members returns the instances alive now, sorted, this one included
// while it is valid.
func (n *Node) Members() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for inst := range n.members {
		if n.aliveLocked(inst) {
			out = append(out, inst)
		}
	}
	if n.validLocked() && n.members[n.cfg.Instance] == nil {
		out = append(out, n.cfg.Instance)
	}
	sort.Strings(out)
	return out
}

// Owner returns the live owner of a resource's lease; ok is false when it
// has none (never leased, released, or its owner is dead).
func (n *Node) Owner(typ, id string) (owner string, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.leases[LeaseKey(typ, id)]
	if l == nil || l.deleted || !n.aliveLocked(l.owner) {
		return "", false
	}
	return l.owner, true
}

// Leased reports whether a resource has a lease at all, live or not.
func (n *Node) Leased(typ, id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.leases[LeaseKey(typ, id)]
	return l != nil && !l.deleted
}

// Holds reports whether this instance holds the resource's lease and may
// use it now.
func (n *Node) Holds(typ, id string) bool {
	_, ok := n.Fence(typ, id)
	return ok
}

// Fence is the jsjournal.FenceFunc of this instance's leases.
func (n *Node) Fence(typ, id string) (jsjournal.Fence, bool) {
	key := LeaseKey(typ, id)
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.leases[key]
	if l == nil || l.deleted || l.owner != n.cfg.Instance || !n.validLocked() {
		return jsjournal.Fence{}, false
	}
	return jsjournal.Fence{LeaseKey: key, Revision: l.rev}, true
}

// Acquire takes a resource's lease for this instance: when it has none,
// when its owner is dead, or (a no-op) when this instance holds it
// already. A lease held by a live instance is an *OwnedError naming it.
func (n *Node) Acquire(ctx context.Context, typ, id string) error {
	key := LeaseKey(typ, id)
	n.mu.Lock()
	if !n.validLocked() {
		n.mu.Unlock()
		return ErrNotValid
	}
	l := n.leases[key]
	var rev uint64
	var err error
	me := []byte(n.cfg.Instance)
	switch {
	case l != nil && !l.deleted && l.owner == n.cfg.Instance:
		n.mu.Unlock()
		return nil
	case l != nil && !l.deleted && n.aliveLocked(l.owner):
		// Held by a live instance, as far as the watch has told: ask the
		// bucket, which may know of a release the watch has not brought.
		n.mu.Unlock()
		e, gerr := n.b.KV.Get(ctx, key)
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			rev, err = n.b.KV.Create(ctx, key, me)
		case gerr != nil:
			return fmt.Errorf("cluster: acquire %s %q: %w", typ, id, n.b.Err(gerr))
		default:
			n.apply(e)
			if owner := string(e.Value()); owner != n.cfg.Instance {
				return &OwnedError{Owner: owner}
			}
			return nil
		}
	case l == nil || l.deleted:
		n.mu.Unlock()
		rev, err = n.b.KV.Create(ctx, key, me)
	default: // the owner is dead: replace its lease, if nobody did meanwhile
		prev := l.rev
		n.mu.Unlock()
		rev, err = n.b.KV.Update(ctx, key, me, prev)
	}
	if err != nil {
		if n.conflict(err) {
			if e, gerr := n.b.KV.Get(ctx, key); gerr == nil {
				n.apply(e)
				if string(e.Value()) == n.cfg.Instance {
					return nil
				}
				return &OwnedError{Owner: string(e.Value())}
			}
		}
		return fmt.Errorf("cluster: acquire %s %q: %w", typ, id, n.b.Err(err))
	}
	n.mu.Lock()
	nl := n.leases[key]
	if nl == nil {
		nl = &lease{}
		n.leases[key] = nl
	}
	if nl.rev < rev {
		nl.owner, nl.seen = n.cfg.Instance, seen{rev: rev, at: time.Now()}
	}
	n.notifyLocked()
	n.mu.Unlock()
	n.log.Info("lease acquired", "type", typ, "id", id, "revision", rev)
	return nil
}

// Release gives a lease this instance holds up (the resource was removed
// or released here); a lease it does not hold is left alone.
func (n *Node) Release(ctx context.Context, typ, id string) error {
	key := LeaseKey(typ, id)
	n.mu.Lock()
	l := n.leases[key]
	if l == nil || l.deleted || l.owner != n.cfg.Instance {
		n.mu.Unlock()
		return nil
	}
	rev := l.rev
	n.mu.Unlock()
	err := n.b.KV.Delete(ctx, key, jetstream.LastRevision(rev))
	if err != nil && !n.conflict(err) {
		return fmt.Errorf("cluster: release %s %q: %w", typ, id, n.b.Err(err))
	}
	if err == nil {
		// Seen at once here; the watch brings the delete marker's revision.
		n.mu.Lock()
		if l := n.leases[key]; l != nil && l.rev == rev {
			l.deleted, l.owner = true, ""
		}
		n.notifyLocked()
		n.mu.Unlock()
	}
	return nil
}

// conflict reports a refused revision check.
func (n *Node) conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(n.b.Err(err), journal.ErrFenced)
}

// LeaseInfo is a lease as this node sees it.
type LeaseInfo struct {
	Type, ID, Owner string
	Alive           bool // its owner is alive
}

// Leases returns the leases this node knows of.
func (n *Node) Leases() []LeaseInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []LeaseInfo
	for key, l := range n.leases {
		if l.deleted {
			continue
		}
		typ, tok, ok := strings.Cut(strings.TrimPrefix(key, "lease."), ".")
		id, err := jsjournal.FromToken(tok)
		if !ok || err != nil {
			continue
		}
		out = append(out, LeaseInfo{Type: typ, ID: id, Owner: l.owner, Alive: n.aliveLocked(l.owner)})
	}
	return out
}

// Clear deletes the lease of a resource whose owner is dead, unless it
// changed meanwhile: a lease left behind by an instance that died after
// its resource was removed.
func (n *Node) Clear(ctx context.Context, typ, id string) error {
	key := LeaseKey(typ, id)
	n.mu.Lock()
	l := n.leases[key]
	if l == nil || l.deleted || n.aliveLocked(l.owner) {
		n.mu.Unlock()
		return nil
	}
	rev := l.rev
	n.mu.Unlock()
	if err := n.b.KV.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil && !n.conflict(err) {
		return fmt.Errorf("cluster: clear %s %q: %w", typ, id, n.b.Err(err))
	}
	return nil
}
