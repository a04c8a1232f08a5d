package observe

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// Metrics are Switchboard's Prometheus metrics (the names are fixed:
// dashboards and alerts use them; README lists them). Nothing is done per
// message that allocates or takes a shared lock:
//
//   - transport's counters (frames, bytes, acknowledgements by code), which
//     every connection already keeps in atomics for the API, are read at
//     scrape time from the connections the Observer saw open, plus the
//     final counts of those that closed, so the read loop does no work for
//     metrics at all;
//   - the events that carry something the counters do not (opened, closed
//     with its reason, rejected, framing errors by kind, in-doubt sends,
//     acknowledgement round trips) come through Observer, per connection,
//     not per message, except the round trip, observed on a histogram
//     child cached for the connection when it opened;
//   - the registry's, journal's and outbox's figures are read at scrape
//     time (SetSources).
//
// Labels are bounded: a connection is counted under its listener's id
// (inbound) or its own configured id (outbound), never under a generated
// connection id or a peer's address, and the series of a listener or
// connection that was removed go once it has no connection left.
type Metrics struct {
	grpc          *grpcprom.ServerMetrics
	appendSeconds prometheus.Histogram
	commitRecords prometheus.Histogram
	roundTrip     *prometheus.HistogramVec

	srcMu sync.Mutex
	src   Sources

	// open finds an open connection's entry without a lock (SendDone runs
	// per message); mu guards groups and every entry's fields.
	open   sync.Map // *transport.Conn -> *connEntry
	mu     sync.Mutex
	groups map[groupKey]*group
}

// Sources are what Metrics reads at scrape time; zero fields are skipped.
type Sources struct {
	// Journal gives the journal figures; DiskBytes comes from a journal
	// that has the method (pebblejournal.Journal).
	Journal journal.Journal
	// Resources gives listener_up and connection_up (and lets the series
	// of removed resources go); *registry.Registry implements it.
	Resources Resources
	// Outbox gives the outbox figures; *outbox.Outbox implements it.
	Outbox OutboxStats
	// Consumers gives the durable consumers' figures; *delivery.Manager
	// implements it.
	Consumers ConsumerStats
}

// ConsumerStats lists the durable consumers; *delivery.Manager implements
// it.
type ConsumerStats interface {
	List(ctx context.Context) ([]delivery.Info, error)
}

// Resources lists the listeners and connections; *registry.Registry
// implements it.
type Resources interface {
	Listeners(after string, n int) ([]registry.ListenerView, bool)
	Connections(f registry.ConnFilter, after string, n int) ([]registry.ConnectionView, bool)
}

// OutboxStats gives the outbox's figures; *outbox.Outbox implements it.
type OutboxStats interface {
	Stats(ctx context.Context) []outbox.ConnStats
}

// diskSizer is a journal that knows its size on disk.
type diskSizer interface{ DiskBytes() uint64 }

// scrapeTimeout bounds the store reads one scrape makes (the outbox's
// oldest messages), so that a stuck disk cannot hang /metrics.
const scrapeTimeout = 5 * time.Second

// Histogram buckets, in seconds or records.
var (
	appendBuckets    = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	roundTripBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	recordBuckets    = prometheus.ExponentialBuckets(1, 2, 13) // 1 .. 4096 (MaxBatchRecords)
)

// NewMetrics creates the metrics and registers them, with the gRPC server
// metrics and the Go runtime and process collectors, on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram()),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_journal_append_seconds",
			Help:    "Journal append latency, per group commit: from the first write of the group to the end of its commit (queue and fsync), the longest any of its records waited.",
			Buckets: appendBuckets,
		}),
		commitRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_journal_group_commit_records",
			Help:    "Journal records per group commit (one fsync).",
			Buckets: recordBuckets,
		}),
		roundTrip: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchboard_ack_round_trip_seconds",
			Help:    "From the end of a Send's (or a queued message's) write to its acknowledgement; by outbound connection id (listener id for Sends on inbound connections).",
			Buckets: roundTripBuckets,
		}, []string{"listener", "connection"}),
		groups: make(map[groupKey]*group),
	}
	for _, c := range []prometheus.Collector{
		m.grpc, m.appendSeconds, m.commitRecords, m.roundTrip, (*collector)(m),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// SetSources sets what the scrape-time figures are read from. The service
// is made after its Observer, so this comes later; until then those
// figures are absent.
func (m *Metrics) SetSources(s Sources) {
	m.srcMu.Lock()
	m.src = s
	m.srcMu.Unlock()
}

func (m *Metrics) sources() Sources {
	m.srcMu.Lock()
	defer m.srcMu.Unlock()
	return m.src
}

// GRPCInterceptors returns the gRPC server metrics' interceptors, for
// service.ServerOptions.OuterUnaryInterceptors and OuterStreamInterceptors.
func (m *Metrics) GRPCInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	return m.grpc.UnaryServerInterceptor(), m.grpc.StreamServerInterceptor()
}

// InitializeGRPC gives every method of s its series at zero, so a rate
// can be taken from the first call on.
func (m *Metrics) InitializeGRPC(s *grpc.Server) { m.grpc.InitializeMetrics(s) }

// JournalCommitted is pebblejournal.Options.OnCommit: one group commit of
// records, whose oldest record waited d.
func (m *Metrics) JournalCommitted(records int, d time.Duration) {
	m.commitRecords.Observe(float64(records))
	m.appendSeconds.Observe(d.Seconds())
}

// Observer returns the transport Observer that feeds the metrics; put it in
// service.Config.Observer (observe.Join it with others).
func (m *Metrics) Observer() *transport.Observer {
	return &transport.Observer{
		ConnOpened:   m.connOpened,
		SendDone:     m.sendDone,
		FramingError: m.framingError,
		ConnClosed:   m.connClosed,
		ConnRejected: m.connRejected,
	}
}

// groupKey names the connections counted together: a listener's inbound
// connections, or one outbound connection's sessions.
type groupKey struct {
	dir transport.Direction
	id  string // listener id (inbound) or connection id (outbound)
}

func keyOf(c *transport.Conn) groupKey {
	if c.Direction() == transport.Inbound {
		return groupKey{transport.Inbound, c.ListenerID()}
	}
	return groupKey{transport.Outbound, c.ID()}
}

// labels are the listener and connection label values of k.
func (k groupKey) labels() (listener, connection string) {
	if k.dir == transport.Inbound {
		return k.id, ""
	}
	return "", k.id
}

// group is what is counted for one groupKey. Guarded by Metrics.mu, but
// for roundTrip (safe for concurrent use).
type group struct {
	live     map[*transport.Conn]*connEntry
	closed   transport.Counters // the final counters of the connections that closed
	accepted uint64
	rejected map[transport.RejectReason]uint64
	closedBy map[transport.CloseReason]uint64
	framing  map[string]uint64
	inDoubt  uint64
	// roundTrip is this group's child of the round-trip histogram.
	roundTrip prometheus.Observer
}

// connEntry is an open connection. Guarded by Metrics.mu.
type connEntry struct {
	g *group
	// framing is set when a framing error is about to close the
	// connection: its kind, or "" when the close reason names it.
	framing    string
	framingErr bool
}

// groupFor returns k's group, creating it. m.mu must be held.
func (m *Metrics) groupFor(k groupKey) *group {
	g := m.groups[k]
	if g == nil {
		l, c := k.labels()
		g = &group{live: make(map[*transport.Conn]*connEntry), rejected: map[transport.RejectReason]uint64{},
			closedBy: map[transport.CloseReason]uint64{}, framing: map[string]uint64{},
			roundTrip: m.roundTrip.WithLabelValues(l, c)}
		m.groups[k] = g
	}
	return g
}

func (m *Metrics) connOpened(c *transport.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groupFor(keyOf(c))
	e := &connEntry{g: g}
	g.live[c] = e
	if c.Direction() == transport.Inbound {
		g.accepted++
	}
	m.open.Store(c, e)
}

// sendDone observes the round trip of an acknowledged message, or counts
// a message in doubt. It runs per sent message: a lock-free lookup and an
// observation on a cached histogram child; nothing allocates.
func (m *Metrics) sendDone(c *transport.Conn, res transport.SendResult, err error) {
	if err == nil {
		if res.Outcome == transport.OutcomeWritten {
			return // no acknowledgement expected
		}
		if v, ok := m.open.Load(c); ok {
			v.(*connEntry).g.roundTrip.Observe(res.RoundTrip.Seconds())
			return
		}
		m.mu.Lock()
		g := m.groupFor(keyOf(c))
		m.mu.Unlock()
		g.roundTrip.Observe(res.RoundTrip.Seconds())
		return
	}
	var se *transport.SendError
	if !errors.As(err, &se) || !se.Written {
		return
	}
	// An in-doubt Send returns once its connection was reset, so usually
	// after ConnClosed: counted on the group, which outlives it.
	m.mu.Lock()
	m.groupFor(keyOf(c)).inDoubt++
	m.mu.Unlock()
}

func (m *Metrics) framingError(c *transport.Conn, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.open.Load(c); ok {
		e := v.(*connEntry)
		e.framingErr, e.framing = true, framingKind(err)
	}
}

func (m *Metrics) connClosed(c *transport.Conn, info transport.ConnInfo) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.open.LoadAndDelete(c)
	if !ok {
		return
	}
	e := v.(*connEntry)
	g := e.g
	delete(g.live, c)
	g.closed.Add(&info.Counters)
	g.closedBy[info.CloseReason]++
	if e.framingErr {
		kind := e.framing
		if kind == "" {
			kind = closeReasonLabel(info.CloseReason)
		}
		g.framing[kind]++
	}
}

func (m *Metrics) connRejected(listenerID, _ string, reason transport.RejectReason) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.groupFor(groupKey{transport.Inbound, listenerID}).rejected[reason]++
}

// framingKind names a framing error for the kind label; "" when only the
// connection's close reason says what it was (a frame timeout, a peer that
// closed or reset mid-frame).
func framingKind(err error) string {
	switch {
	case errors.Is(err, transport.ErrFrameTooLarge):
		return "frame_too_large"
	case errors.Is(err, transport.ErrNoMemory):
		return "memory_limit"
	case errors.Is(err, transport.ErrTooMuchJunk):
		return "junk_limit"
	case errors.Is(err, transport.ErrJunk):
		return "junk"
	case errors.Is(err, transport.ErrMissingTrailer):
		return "missing_trailer"
	case errors.Is(err, transport.ErrNestedStart):
		return "nested_start"
	}
	var fe *transport.FrameError
	if errors.As(err, &fe) {
		return "invalid_frame"
	}
	return ""
}

// snake turns a name in words ("peer closed mid-frame") into a label
// value ("peer_closed_mid_frame").
func snake(s string) string {
	return strings.NewReplacer(" ", "_", "-", "_").Replace(strings.ToLower(s))
}

var closeReasonLabels = func() map[transport.CloseReason]string {
	out := map[transport.CloseReason]string{}
	for _, r := range transport.CloseReasons() {
		out[r] = snake(r.String())
	}
	return out
}()

func closeReasonLabel(r transport.CloseReason) string {
	if l, ok := closeReasonLabels[r]; ok {
		return l
	}
	return "unknown"
}

func rejectReasonLabel(r transport.RejectReason) string { return snake(r.String()) }
