package jsjournal

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/journal"
)

var _ journal.Journal = (*Journal)(nil)

// Options configures Open.
type Options struct {
	// URL is the NATS server URL, or several separated by commas; empty
	// means nats.DefaultURL.
	URL string
	// Name names the journal: the stream's name and the subjects'
	// "switchboard.journal.<Name>.>". Letters, digits, '-' and '_' only;
	// empty means "switchboard".
	Name string
	// Replicas is the stream's replica count; 0 means 1. A cluster uses 3.
	Replicas int
	// AppendTimeout bounds the wait for one PubAck, and each health probe;
	// 0 means 5 s.
	AppendTimeout time.Duration
	// RetryMin and RetryMax bound the wait between health probes while
	// the journal is unavailable: the first comes RetryMin after the
	// failure (or at once when the connection comes back), each later one
	// twice as long after the previous, up to RetryMax. Defaults 100 ms
	// and 5 s.
	RetryMin, RetryMax time.Duration
	// CheckInterval is how often a healthy journal probes the stream, so
	// that Health also reports a stream that lost its leader or quorum
	// while nothing is appended; 0 means 5 s, negative never.
	CheckInterval time.Duration
	// Logger receives the journal's logging; nil discards it.
	Logger *slog.Logger
	// NATSOptions are applied after the journal's own connection options
	// (which reconnect for ever, never buffer while reconnecting, and
	// install the disconnect and reconnect handlers that health depends
	// on, so these must not replace them): credentials, TLS, a connection
	// name, a shorter reconnect wait.
	NATSOptions []nats.Option
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Journal is a journal.Journal on a JetStream stream. It is safe for
// concurrent use.
type Journal struct {
	name     string
	subject  string // records without a DedupID
	dedupPfx string // DedupID subjects (dedupSubject)
	timeout  time.Duration
	retryMin time.Duration
	retryMax time.Duration
	check    time.Duration // CheckInterval; <= 0: never
	logger   *slog.Logger

	nc       *nats.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream
	watch    jetstream.ConsumeContext
	maxBytes int // largest record body Append accepts

	ctx    context.Context // cancelled by Close: ends Read, Wait and probes
	cancel context.CancelFunc

	last atomic.Uint64 // highest sequence known to be committed

	// Counters for Stats.
	appends, refused, commits, failures, recoveries atomic.Uint64

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup // published appends; Add under mu while open
	notify   chan struct{}  // closed and replaced when last rises, and at Close
	health   error          // nil while appends work
	// down is cancelled, with health as its cause, when the journal fails,
	// so that appends waiting for a PubAck end at once; a recovery
	// replaces it.
	down     context.Context
	downStop context.CancelCauseFunc
	healthCh chan struct{} // closed and replaced at every change of health, and at Close

	failed      chan struct{} // wakes recoverLoop after a failure (one slot)
	reconnected chan struct{} // wakes a waiting probe at a reconnect (one slot)
	recoverDone chan struct{}
	closeOnce   sync.Once
}

// Open connects to NATS, creates or updates the journal's stream, and
// starts following it. It fails if the server or the stream cannot be
// reached.
func Open(ctx context.Context, opts Options) (*Journal, error) {
	if opts.URL == "" {
		opts.URL = nats.DefaultURL
	}
	if opts.Name == "" {
		opts.Name = "switchboard"
	}
	if !validName.MatchString(opts.Name) {
		return nil, fmt.Errorf("jsjournal: invalid journal name %q: letters, digits, '-' and '_' only", opts.Name)
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.AppendTimeout <= 0 {
		opts.AppendTimeout = 5 * time.Second
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 100 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Second
	}
	opts.RetryMax = max(opts.RetryMax, opts.RetryMin)
	if opts.CheckInterval == 0 {
		opts.CheckInterval = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	base := "switchboard.journal." + opts.Name
	j := &Journal{
		name:        opts.Name,
		subject:     base + ".r",
		dedupPfx:    base + ".",
		timeout:     opts.AppendTimeout,
		retryMin:    opts.RetryMin,
		retryMax:    opts.RetryMax,
		check:       opts.CheckInterval,
		logger:      opts.Logger.With("stream", opts.Name),
		notify:      make(chan struct{}),
		healthCh:    make(chan struct{}),
		failed:      make(chan struct{}, 1),
		reconnected: make(chan struct{}, 1),
		recoverDone: make(chan struct{}),
	}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	j.down, j.downStop = context.WithCancelCause(context.Background())

	nopts := append([]nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				err = nats.ErrDisconnected
			}
			j.fail(fmt.Errorf("connection to NATS lost: %w", err))
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case j.reconnected <- struct{}{}:
			default:
			}
		}),
	}, opts.NATSOptions...)
	nc, err := nats.Connect(opts.URL, nopts...)
	if err != nil {
		j.cancel()
		return nil, fmt.Errorf("jsjournal: connect to NATS: %w", err)
	}
	j.nc = nc
	if err := j.open(ctx, opts.Replicas); err != nil {
		j.mu.Lock()
		j.closed = true // so that closing the connection reports no failure
		j.mu.Unlock()
		j.cancel()
		nc.Close()
		return nil, err
	}
	go j.recoverLoop()
	return j, nil
}

func (j *Journal) open(ctx context.Context, replicas int) error {
	js, err := jetstream.New(j.nc)
	if err != nil {
		return fmt.Errorf("jsjournal: %w", err)
	}
	j.js = js
	// A record's body plus the headers Append may add must fit the
	// server's max_payload.
	j.maxBytes = int(j.nc.MaxPayload()) - 1024
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	j.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        j.name,
		Description: "Switchboard journal",
		Subjects:    []string{"switchboard.journal." + j.name + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		DenyDelete:  true,
		DenyPurge:   false, // DeleteBefore purges from the front
		AllowDirect: false, // reads go to the leader (package doc)
	})
	if err != nil {
		return fmt.Errorf("jsjournal: create stream %s: %w", j.name, err)
	}
	info, err := j.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("jsjournal: stream %s: %w", j.name, err)
	}
	j.last.Store(info.State.LastSeq)
	cons, err := j.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   info.State.LastSeq + 1,
		HeadersOnly:   true,
	})
	if err != nil {
		return fmt.Errorf("jsjournal: follow stream %s: %w", j.name, err)
	}
	j.watch, err = cons.Consume(func(m jetstream.Msg) {
		if md, err := m.Metadata(); err == nil {
			j.advance(md.Sequence.Stream)
		}
	}, jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {
		// The ordered consumer re-creates itself; health comes from
		// the connection and the appends.
	}))
	if err != nil {
		return fmt.Errorf("jsjournal: follow stream %s: %w", j.name, err)
	}
	return nil
}

// advance records that seq is committed and wakes waiters if that is news.
func (j *Journal) advance(seq uint64) {
	for {
		cur := j.last.Load()
		if seq <= cur {
			return
		}
		if j.last.CompareAndSwap(cur, seq) {
			break
		}
	}
	j.mu.Lock()
	if !j.closed {
		close(j.notify)
		j.notify = make(chan struct{})
	}
	j.mu.Unlock()
}

// callCtx returns ctx, also cancelled by Close, and an error if either is
// already done.
func (j *Journal) callCtx(ctx context.Context) (context.Context, context.CancelFunc, error) {
	j.mu.Lock()
	closed := j.closed
	j.mu.Unlock()
	if closed {
		return nil, nil, journal.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(j.ctx, cancel)
	return ctx, func() { stop(); cancel() }, nil
}

// callErr turns the error of a call that ended with the journal closed
// into ErrClosed; one the caller's context did not end (the server or the
// connection failed) wraps journal.ErrUnavailable, as Append's do.
func (j *Journal) callErr(ctx context.Context, err error) error {
	switch {
	case j.ctx.Err() != nil:
		return journal.ErrClosed
	case ctx.Err() != nil:
		return err
	}
	return fmt.Errorf("%w: %w", journal.ErrUnavailable, err)
}

// Append implements journal.Journal.
func (j *Journal) Append(ctx context.Context, r *journal.Record) (uint64, error) {
	if r.Kind == journal.KindUnspecified {
		return 0, fmt.Errorf("%w: no kind", journal.ErrInvalidRecord)
	}
	if r.DedupID != "" && r.DedupWindow <= 0 {
		return 0, fmt.Errorf("%w: DedupID without a positive DedupWindow", journal.ErrInvalidRecord)
	}
	j.mu.Lock()
	closed, health, down := j.closed, j.health, j.down
	if !closed && health == nil {
		j.inflight.Add(1)
	}
	j.mu.Unlock()
	if closed {
		return 0, journal.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		if health == nil {
			j.inflight.Done()
		}
		return 0, err
	}
	if health != nil {
		j.refused.Add(1)
		return 0, health
	}
	defer j.inflight.Done()

	n := journal.RecordLen(r)
	if n > j.maxBytes {
		return 0, fmt.Errorf("%w: %d bytes encoded, the limit is %d", journal.ErrInvalidRecord, n, j.maxBytes)
	}
	data := journal.AppendRecord(make([]byte, 0, n), r)
	if r.DedupID == "" {
		ack, err := j.publish(ctx, down, &nats.Msg{Subject: j.subject, Data: data}, jetstream.WithExpectStream(j.name))
		if err != nil {
			return 0, j.appendErr(ctx, down, err)
		}
		return j.acked(r, ack), nil
	}
	subject := j.dedupSubject(r.DedupID)
	for {
		// The id's last holder, read from the leader.
		var expect uint64
		lctx, cancel := j.bounded(ctx, down)
		last, err := j.stream.GetLastMsgForSubject(lctx, subject)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return 0, j.appendErr(ctx, down, fmt.Errorf("look up the dedup id: %w", err))
		case time.Since(last.Time) < r.DedupWindow:
			return last.Sequence, &journal.DuplicateError{ID: r.DedupID, Seq: last.Sequence}
		default:
			expect = last.Sequence
		}
		ack, err := j.publish(ctx, down, &nats.Msg{Subject: subject, Data: data}, jetstream.WithExpectStream(j.name), jetstream.WithExpectLastSequencePerSubject(expect))
		if err == nil {
			return j.acked(r, ack), nil
		}
		if code := apiCode(err); code != jetstream.JSErrCodeStreamWrongLastSequence && code != jetstream.JSErrCodeStreamWrongLastSequenceConstant {
			return 0, j.appendErr(ctx, down, err)
		}
		// Another append of the id got there first: look again.
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// bounded returns ctx limited by AppendTimeout and ended by a failure
// (down).
func (j *Journal) bounded(ctx, down context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	stop := context.AfterFunc(down, cancel)
	return ctx, func() { stop(); cancel() }
}

// maxPlainID is the longest DedupID whose subject holds it as it is
// (base64url); longer ones are hashed, to keep subjects short.
const maxPlainID = 192

// dedupSubject returns the subject of the records that hold id.
func (j *Journal) dedupSubject(id string) string {
	if len(id) <= maxPlainID {
		return j.dedupPfx + "d." + base64.RawURLEncoding.EncodeToString([]byte(id))
	}
	sum := sha256.Sum256([]byte(id))
	return j.dedupPfx + "h." + base64.RawURLEncoding.EncodeToString(sum[:])
}

func (j *Journal) publish(ctx, down context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ctx, cancel := j.bounded(ctx, down)
	defer cancel()
	// No retries on "no responders": a stream without a leader is a
	// failure to report, not to hide.
	return j.js.PublishMsg(ctx, m, append(opts, jetstream.WithRetryAttempts(0))...)
}

// acked finishes a successful append.
func (j *Journal) acked(r *journal.Record, ack *jetstream.PubAck) uint64 {
	j.commits.Add(1)
	j.appends.Add(1)
	j.advance(ack.Sequence)
	r.Seq = ack.Sequence
	return ack.Sequence
}

// appendErr classifies an append's failure: the caller's context ending is
// the caller's business; anything else means the stream cannot take
// records now, and makes the journal unavailable.
func (j *Journal) appendErr(ctx, down context.Context, err error) error {
	if j.ctx.Err() != nil && errors.Is(err, nats.ErrConnectionClosed) {
		return journal.ErrClosed
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("jsjournal: append: %w (the record may still be stored)", cerr)
	}
	j.refused.Add(1)
	if down.Err() != nil {
		// The journal failed while this append waited (it may still
		// be stored).
		return context.Cause(down)
	}
	err = fmt.Errorf("%w: append: %w", journal.ErrUnavailable, err)
	j.fail(err)
	return err
}

func apiCode(err error) jetstream.ErrorCode {
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		return je.APIError().ErrorCode
	}
	return 0
}

// info returns the stream's state from its leader.
func (j *Journal) info(ctx context.Context) (*jetstream.StreamInfo, error) {
	ctx, cancel, err := j.callCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	info, err := j.stream.Info(ctx)
	if err != nil {
		return nil, j.callErr(ctx, fmt.Errorf("jsjournal: stream %s info: %w", j.name, err))
	}
	return info, nil
}

// bounds returns FirstSeq and LastSeq as the journal defines them.
func (j *Journal) bounds(ctx context.Context) (first, last uint64, err error) {
	info, err := j.info(ctx)
	if err != nil {
		return 0, 0, err
	}
	st := info.State
	j.advance(st.LastSeq)
	if st.Msgs == 0 {
		return st.LastSeq + 1, st.LastSeq, nil
	}
	return st.FirstSeq, st.LastSeq, nil
}

// LastSeq implements journal.Journal.
func (j *Journal) LastSeq(ctx context.Context) (uint64, error) {
	_, last, err := j.bounds(ctx)
	return last, err
}

// FirstSeq implements journal.Journal.
func (j *Journal) FirstSeq(ctx context.Context) (uint64, error) {
	first, _, err := j.bounds(ctx)
	return first, err
}

// Read implements journal.Journal.
func (j *Journal) Read(ctx context.Context, from uint64, maxRecords, maxBytes int) ([]journal.Record, error) {
	ctx, cancel, err := j.callCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if from == 0 {
		if from, _, err = j.bounds(ctx); err != nil {
			return nil, err
		}
	}
	maxRecords = max(maxRecords, 1)
	var out []journal.Record
	total := 0
	for seq := from; len(out) < maxRecords; seq++ {
		m, err := j.stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			if len(out) > 0 {
				break // the end, or a purge under way: no gap either way
			}
			first, _, err := j.bounds(ctx)
			if err != nil {
				return nil, err
			}
			if from < first {
				return nil, &journal.NotRetainedError{From: from, First: first}
			}
			return nil, nil // past the end
		}
		if err != nil {
			return nil, j.callErr(ctx, fmt.Errorf("jsjournal: read %d from stream %s: %w", seq, j.name, err))
		}
		rec, err := journal.DecodeRecord(m.Sequence, m.Data)
		if err != nil {
			return nil, fmt.Errorf("jsjournal: record %d in stream %s: %w", m.Sequence, j.name, err)
		}
		if len(out) > 0 && total+len(rec.Payload) > maxBytes {
			break
		}
		total += len(rec.Payload)
		out = append(out, rec)
	}
	return out, nil
}

// Wait implements journal.Journal.
func (j *Journal) Wait(ctx context.Context, after uint64) error {
	for {
		j.mu.Lock()
		closed, ch := j.closed, j.notify
		j.mu.Unlock()
		if closed {
			return journal.ErrClosed
		}
		if j.last.Load() > after {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// DeleteBefore deletes the records before seq (a purge of the stream up to
// seq), the building block of retention. seq must be at most LastSeq, so
// the last record is never deleted; the purge deletes from the front only,
// and FirstSeq is seq once it returns. A seq at or below FirstSeq deletes
// nothing.
func (j *Journal) DeleteBefore(ctx context.Context, seq uint64) error {
	first, last, err := j.bounds(ctx)
	if err != nil {
		return err
	}
	if seq <= first {
		return nil // nothing before it (and a purge up to 0 would delete all)
	}
	if seq > last {
		return fmt.Errorf("jsjournal: delete before %d: the last record is %d and is never deleted", seq, last)
	}
	ctx, cancel, err := j.callCtx(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	if err := j.stream.Purge(ctx, jetstream.WithPurgeSequence(seq)); err != nil {
		return j.callErr(ctx, fmt.Errorf("jsjournal: delete before %d in stream %s: %w", seq, j.name, err))
	}
	j.logger.Info("journal records deleted", "before", seq)
	return nil
}

// Health implements journal.Journal.
func (j *Journal) Health() (error, <-chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return journal.ErrClosed, nil
	}
	return j.health, j.healthCh
}

// Stats implements journal.Journal. Every record is its own commit (one
// PubAck), so Commits and Records both count acknowledged appends.
func (j *Journal) Stats() journal.Stats {
	commits := j.commits.Load()
	return journal.Stats{
		Appends:    j.appends.Load(),
		Refused:    j.refused.Load(),
		Commits:    commits,
		Records:    commits,
		Failures:   j.failures.Load(),
		Recoveries: j.recoveries.Load(),
	}
}

// fail makes the journal unavailable with cause, if it is not already.
func (j *Journal) fail(cause error) {
	if !errors.Is(cause, journal.ErrUnavailable) {
		cause = fmt.Errorf("%w: %w", journal.ErrUnavailable, cause)
	}
	j.mu.Lock()
	if j.closed || j.health != nil {
		j.mu.Unlock()
		return
	}
	j.health = cause
	j.downStop(cause)
	close(j.healthCh)
	j.healthCh = make(chan struct{})
	j.mu.Unlock()
	j.failures.Add(1)
	j.logger.Warn("journal unavailable", "err", cause)
	select {
	case j.failed <- struct{}{}:
	default:
	}
}

// recoverLoop probes the stream every CheckInterval while the journal is
// healthy, and after each failure until it works again.
func (j *Journal) recoverLoop() {
	defer close(j.recoverDone)
	var tick <-chan time.Time
	if j.check > 0 {
		t := time.NewTicker(j.check)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-j.ctx.Done():
			return
		case <-tick:
			if err := j.probe(); err != nil && j.ctx.Err() == nil {
				j.fail(fmt.Errorf("health check: %w", err))
			}
			continue
		case <-j.failed:
		}
		wait := j.retryMin
		for {
			t := time.NewTimer(wait)
			select {
			case <-j.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-j.reconnected:
				t.Stop()
			}
			if err := j.probe(); err == nil {
				break
			}
			wait = min(2*wait, j.retryMax)
		}
		j.mu.Lock()
		if j.closed {
			j.mu.Unlock()
			return
		}
		j.health = nil
		j.down, j.downStop = context.WithCancelCause(context.Background())
		close(j.healthCh)
		j.healthCh = make(chan struct{})
		j.mu.Unlock()
		j.recoveries.Add(1)
		j.logger.Info("journal available again", "last_seq", j.last.Load())
	}
}

// probe checks that the stream can commit: that it has a leader and, when
// replicated, a quorum. A leader that lost its quorum still answers
// stream info for a while (until it steps down), so the probe also
// commits a purge of nothing (up to the oldest record still held), which
// a replicated stream answers only once a quorum has applied it. It
// deletes nothing and takes no sequence.
func (j *Journal) probe() error {
	if !j.nc.IsConnected() {
		return nats.ErrDisconnected
	}
	ctx, cancel := context.WithTimeout(j.ctx, j.timeout)
	defer cancel()
	info, err := j.stream.Info(ctx)
	if err != nil {
		return err
	}
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return errors.New("the stream has no leader")
	}
	st := info.State
	first := st.FirstSeq
	if st.Msgs == 0 {
		first = st.LastSeq + 1
	}
	if err := j.stream.Purge(ctx, jetstream.WithPurgeSequence(first)); err != nil {
		return err
	}
	j.advance(st.LastSeq)
	return nil
}

// Close implements journal.Journal.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() {
		j.mu.Lock()
		j.closed = true
		close(j.notify)
		close(j.healthCh)
		j.mu.Unlock()
		j.cancel()
		<-j.recoverDone
		j.inflight.Wait() // appends under way get their PubAck or error
		j.mu.Lock()
		j.downStop(journal.ErrClosed)
		j.mu.Unlock()
		j.watch.Stop()
		select {
		case <-j.watch.Closed():
		case <-time.After(j.timeout): // closing the connection ends it
		}
		j.nc.Close()
	})
	return nil
}
