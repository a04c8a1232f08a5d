package observe

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// collector is Metrics' scrape-time side: every figure read when
// Prometheus asks, nothing kept up to date per message.
type collector Metrics

var (
	connLabels = []string{"direction", "listener", "connection"}

	descConnectionsOpen = prometheus.NewDesc("switchboard_connections_open",
		"Open TCP connections: inbound by listener id (connection=\"\"), outbound by connection id (listener=\"\").", connLabels, nil)
	descAccepted = prometheus.NewDesc("switchboard_connections_accepted_total",
		"Inbound connections a listener accepted.", []string{"listener"}, nil)
	descRejected = prometheus.NewDesc("switchboard_connections_rejected_total",
		"Inbound connections a listener closed at once, by reason: a limit was reached, or the source address is not allowed.", []string{"listener", "reason"}, nil)
	descHandshakeFailed = prometheus.NewDesc("switchboard_connections_handshake_failed_total",
		"Inbound connections a listener closed before their first frame because the handshake failed: reason tls (the TLS handshake failed or timed out), peer_name (the client certificate matched no allowed peer name) or proxy_header (no valid PROXY header from a trusted proxy). Counted since the listener last started.", []string{"listener", "reason"}, nil)
	descConnectionUp = prometheus.NewDesc("switchboard_connection_up",
		"1 while an outbound connection is open, 0 while it is connecting, backing off or closed.", []string{"connection"}, nil)
	descListenerUp = prometheus.NewDesc("switchboard_listener_up",
		"1 while a listener is listening, 0 while it backs off (its address cannot be bound), drains or is stopped.", []string{"listener"}, nil)
	descInboundDuplicates = prometheus.NewDesc("switchboard_inbound_duplicates_total",
		"Messages a listener with duplicate suppression did not store again (a resend within the window), answered with the first answer.",
		[]string{"listener"}, nil)
	descFramesReceived = prometheus.NewDesc("switchboard_frames_received_total",
		"Frames received (messages and acknowledgements).", connLabels, nil)
	descBytesReceived = prometheus.NewDesc("switchboard_bytes_received_total",
		"Payload bytes of the frames received (without framing).", connLabels, nil)
	descFramesSent = prometheus.NewDesc("switchboard_frames_sent_total",
		"Frames sent (messages and acknowledgements).", connLabels, nil)
	descBytesSent = prometheus.NewDesc("switchboard_bytes_sent_total",
		"Payload bytes of the frames sent (without framing).", connLabels, nil)
	descAcksSent = prometheus.NewDesc("switchboard_acks_sent_total",
		"Acknowledgements sent to peers, by code (AA, AE, AR, CA, CE, CR, ACK, NAK, FIXED_ACK, FIXED_NAK).",
		[]string{"listener", "connection", "code"}, nil)
	descAcksReceived = prometheus.NewDesc("switchboard_acks_received_total",
		"Acknowledgements received for sent messages, by code.", []string{"listener", "connection", "code"}, nil)
	descFramingErrors = prometheus.NewDesc("switchboard_framing_errors_total",
		"Framing violations and refused frames that closed a connection, by kind.", append(connLabels[:3:3], "kind"), nil)
	descInDoubt = prometheus.NewDesc("switchboard_sends_in_doubt_total",
		"Messages written that got no trustworthy acknowledgement (timeout, mismatch, connection lost): their outcome is unknown.",
		[]string{"listener", "connection"}, nil)
	descClosed = prometheus.NewDesc("switchboard_connections_closed_total",
		"Connections closed, by reason.", append(connLabels[:3:3], "reason"), nil)

	descFsyncs = prometheus.NewDesc("switchboard_journal_fsyncs_total",
		"Durable journal commits, one fsync each (with --no-fsync: commits, without one).", nil, nil)
	descDiskBytes = prometheus.NewDesc("switchboard_journal_disk_bytes",
		"Disk space the journal's database takes (journal, outbox and desired state).", nil, nil)
	descFirstSeq = prometheus.NewDesc("switchboard_journal_first_sequence",
		"Oldest retained journal sequence (last sequence + 1 while the journal holds no record).", nil, nil)
	descLastSeq = prometheus.NewDesc("switchboard_journal_last_sequence",
		"Newest committed journal sequence.", nil, nil)
	descHealthy = prometheus.NewDesc("switchboard_journal_healthy",
		"1 while the journal stores messages, 0 while it fails (peers get negative acknowledgements).", nil, nil)
	descJournalFailures = prometheus.NewDesc("switchboard_journal_failures_total",
		"Times the journal turned unavailable (a failing or full disk).", nil, nil)

	descOutboxQueued = prometheus.NewDesc("switchboard_outbox_queued_messages",
		"Queued messages of an outbound connection that are neither delivered nor failed (held IN_DOUBT ones included).",
		[]string{"connection"}, nil)
	descOutboxOldest = prometheus.NewDesc("switchboard_outbox_oldest_message_age_seconds",
		"Age of the oldest queued message that is neither delivered nor failed; 0 when there is none.", []string{"connection"}, nil)
	descOutboxAttempts = prometheus.NewDesc("switchboard_outbox_attempts_total",
		"Delivery attempts of queued messages, by result (accepted, rejected, not_sent, in_doubt).", []string{"connection", "result"}, nil)
	descOutboxInDoubt = prometheus.NewDesc("switchboard_outbox_in_doubt_messages",
		"Queued messages held IN_DOUBT; each blocks its connection's queue until ResolveMessage.", []string{"connection"}, nil)
	descOutboxFailed = prometheus.NewDesc("switchboard_outbox_failed_total",
		"Queued messages that failed (by the policy or an operator).", []string{"connection"}, nil)

	descConsumerPending = prometheus.NewDesc("switchboard_consumer_pending_messages",
		"Messages delivered to a durable consumer and not yet acked.", []string{"consumer"}, nil)
	descConsumerBacklog = prometheus.NewDesc("switchboard_consumer_backlog_records",
		"Journal records stored after a durable consumer's position, before its filters: an upper bound of what it has still to get.",
		[]string{"consumer"}, nil)
	descConsumerOldest = prometheus.NewDesc("switchboard_consumer_oldest_pending_age_seconds",
		"Time since the oldest message pending for a durable consumer was first delivered; 0 when none is.", []string{"consumer"}, nil)
	descConsumerRedeliveries = prometheus.NewDesc("switchboard_consumer_redeliveries_total",
		"Messages delivered again to a durable consumer (ack wait passed, its stream ended, or a nak), since the server started.",
		[]string{"consumer"}, nil)
	descConsumerDead = prometheus.NewDesc("switchboard_consumer_dead_letters",
		"Messages a durable consumer gave up on after max_deliveries (ListDeadLetters, ReplayDeadLetters).", []string{"consumer"}, nil)
	descConsumerStreams = prometheus.NewDesc("switchboard_consumer_streams",
		"Receive streams attached to a durable consumer.", []string{"consumer"}, nil)

	allDescs = []*prometheus.Desc{
		descConsumerPending, descConsumerBacklog, descConsumerOldest, descConsumerRedeliveries, descConsumerDead, descConsumerStreams,
		descConnectionsOpen, descAccepted, descRejected, descHandshakeFailed, descConnectionUp, descListenerUp,
		descFramesReceived, descBytesReceived, descFramesSent, descBytesSent, descAcksSent, descAcksReceived,
		descFramingErrors, descInDoubt, descClosed, descInboundDuplicates,
		descFsyncs, descDiskBytes, descFirstSeq, descLastSeq, descHealthy, descJournalFailures,
		descOutboxQueued, descOutboxOldest, descOutboxAttempts, descOutboxInDoubt, descOutboxFailed,
	}
	rejectReasons = []transport.RejectReason{transport.RejectMaxConnections, transport.RejectPerSource, transport.RejectTotalConnections, transport.RejectSourceDenied}
	ackCodes      = transport.AckCodes()
)

// Describe sends every descriptor.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads every scrape-time figure.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	src := m.sources()
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()

	var (
		listeners []registry.ListenerView
		outbound  []registry.ConnectionView
	)
	if r := src.Resources; r != nil {
		listeners, outbound = allListeners(r), allOutbound(r)
	}
	m.collectConns(ch, listeners, outbound, src.Resources != nil)
	for _, l := range listeners {
		ch <- gauge(descListenerUp, boolValue(l.State == registry.ListenerListening), l.ID)
	}
	for _, v := range outbound {
		ch <- gauge(descConnectionUp, boolValue(v.State == registry.ConnOpen), v.ID)
	}
	if j := src.Journal; j != nil {
		st := j.Stats()
		ch <- counter(descFsyncs, float64(st.Commits))
		ch <- counter(descJournalFailures, float64(st.Failures))
		err, _ := j.Health()
		ch <- gauge(descHealthy, boolValue(err == nil))
		if first, err := j.FirstSeq(ctx); err == nil {
			ch <- gauge(descFirstSeq, float64(first))
		}
		if last, err := j.LastSeq(ctx); err == nil {
			ch <- gauge(descLastSeq, float64(last))
		}
		if d, ok := j.(diskSizer); ok {
			ch <- gauge(descDiskBytes, float64(d.DiskBytes()))
		}
	}
	if c := src.Consumers; c != nil {
		collectConsumers(ctx, ch, c)
	}
	if o := src.Outbox; o != nil {
		now := time.Now()
		for _, s := range o.Stats(ctx) {
			id := s.ConnectionID
			if s.Counted {
				ch <- gauge(descOutboxQueued, float64(s.Queued), id)
				ch <- gauge(descOutboxInDoubt, float64(s.InDoubt), id)
			}
			age := 0.0
			if !s.Oldest.IsZero() {
				age = max(now.Sub(s.Oldest).Seconds(), 0)
			}
			ch <- gauge(descOutboxOldest, age, id)
			for i, r := range outbox.AttemptResults {
				ch <- counter(descOutboxAttempts, float64(s.Attempts[i]), id, outbox.ResultName(r))
			}
			ch <- counter(descOutboxFailed, float64(s.Failed), id)
		}
	}
}

// collectConns sends the per-listener and per-connection transport
// figures: the final counters of closed connections plus the live ones of
// those open. Every listed resource has its series (at zero before its
// first connection); with prune, a group whose resource is gone and which
// has no open connection left is dropped.
func (m *Metrics) collectConns(ch chan<- prometheus.Metric, listeners []registry.ListenerView, outbound []registry.ConnectionView, prune bool) {
	// Held while the open connections' counters are read, so a connection
	// closing meanwhile is counted once, live or closed; connections that
	// open or close wait that long, messages never do.
	m.mu.Lock()
	defer m.mu.Unlock()
	exists := make(map[groupKey]bool, len(listeners)+len(outbound))
	for _, l := range listeners {
		k := groupKey{transport.Inbound, l.ID}
		exists[k] = true
		m.groupFor(k)
		ch <- counter(descHandshakeFailed, float64(l.Info.TLSFailures), l.ID, "tls")
		ch <- counter(descHandshakeFailed, float64(l.Info.PeerDenied), l.ID, "peer_name")
		ch <- counter(descHandshakeFailed, float64(l.Info.ProxyHeaderFailures), l.ID, "proxy_header")
	}
	for _, v := range outbound {
		k := groupKey{transport.Outbound, v.ID}
		exists[k] = true
		m.groupFor(k)
	}
	for k, g := range m.groups {
		l, cn := k.labels()
		if prune && len(g.live) == 0 && !exists[k] {
			delete(m.groups, k)
			m.roundTrip.DeleteLabelValues(l, cn)
			continue
		}
		total := g.closed
		for c := range g.live {
			info := c.Info()
			total.Add(&info.Counters)
		}
		dir := k.dir.String()
		ch <- gauge(descConnectionsOpen, float64(len(g.live)), dir, l, cn)
		if k.dir == transport.Inbound {
			ch <- counter(descAccepted, float64(g.accepted), l)
			for _, r := range rejectReasons {
				ch <- counter(descRejected, float64(g.rejected[r]), l, rejectReasonLabel(r))
			}
			ch <- counter(descInboundDuplicates, float64(total.Duplicates), l)
		}
		ch <- counter(descFramesReceived, float64(total.FramesIn), dir, l, cn)
		ch <- counter(descBytesReceived, float64(total.BytesIn), dir, l, cn)
		ch <- counter(descFramesSent, float64(total.FramesOut), dir, l, cn)
		ch <- counter(descBytesSent, float64(total.BytesOut), dir, l, cn)
		for _, code := range ackCodes {
			ch <- counter(descAcksSent, float64(total.AcksSent[code]), l, cn, code.String())
			ch <- counter(descAcksReceived, float64(total.AcksReceived[code]), l, cn, code.String())
		}
		for kind, n := range g.framing {
			ch <- counter(descFramingErrors, float64(n), dir, l, cn, kind)
		}
		ch <- counter(descInDoubt, float64(g.inDoubt), l, cn)
		for r, n := range g.closedBy {
			ch <- counter(descClosed, float64(n), dir, l, cn, closeReasonLabel(r))
		}
	}
}

// pageSize is how many resources one registry call lists.
const pageSize = 1000

func allListeners(r Resources) []registry.ListenerView {
	var out []registry.ListenerView
	for after := ""; ; {
		page, more := r.Listeners(after, pageSize)
		out = append(out, page...)
		if !more || len(page) == 0 {
			return out
		}
		after = page[len(page)-1].ID
	}
}

func allOutbound(r Resources) []registry.ConnectionView {
	var out []registry.ConnectionView
	for after := ""; ; {
		page, more := r.Connections(registry.ConnFilter{Direction: transport.Outbound}, after, pageSize)
		out = append(out, page...)
		if !more || len(page) == 0 {
			return out
		}
		after = page[len(page)-1].ID
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// collectConsumers sends the durable consumers' figures.
func collectConsumers(ctx context.Context, ch chan<- prometheus.Metric, c ConsumerStats) {
	infos, err := c.List(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	for _, in := range infos {
		ch <- gauge(descConsumerPending, float64(in.Pending), in.Name)
		ch <- gauge(descConsumerBacklog, float64(in.Backlog), in.Name)
		age := 0.0
		if !in.OldestPending.IsZero() {
			age = max(now.Sub(in.OldestPending).Seconds(), 0)
		}
		ch <- gauge(descConsumerOldest, age, in.Name)
		ch <- counter(descConsumerRedeliveries, float64(in.Redeliveries), in.Name)
		ch <- gauge(descConsumerDead, float64(in.DeadLetters), in.Name)
		ch <- gauge(descConsumerStreams, float64(in.Streams), in.Name)
	}
}
