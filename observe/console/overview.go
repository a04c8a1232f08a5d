package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// The overview's bounds: it lists at most this many listeners and outbound
// connections (a page of the API each), and this many open inbound
// connections; it says when there are more.
const (
	maxListeners = 1000
	maxOutbound  = 1000
	maxInbound   = 200
	maxEvents    = 50
	maxConsumers = 200
	// refreshSeconds is the overview's auto-refresh (meta refresh, no
	// script).
	refreshSeconds = 5
)

type overviewPage struct {
	page
	Attention     []attention
	Listeners     []listenerRow
	ListenersMore bool
	ListenersErr  string
	Outbound      []connRow
	OutboundMore  bool
	OutboundErr   string
	Inbound       []connRow
	InboundMore   bool
	InboundErr    string
	InboundOpen   int64 // open inbound connections, over every listener
	Consumers     []consumerRow
	ConsumersMore bool
	ConsumersErr  string
	RateNote      string
	Journal       *journalView
	Events        []EventRow
	EventsNone    bool // no EventSource
	RefreshURL    string
	ShowPayloads  bool
}

// attention is one line of "needs attention": what an on-call engineer
// looks for first.
type attention struct {
	Text   string
	Anchor string // #id of the row
}

type listenerRow struct {
	ID, Anchor, State, StateClass, Address, BoundAddress string
	LastError, NextAttempt, Created                      string
	Open, Accepted, Rejected, SourceRejected             int64
	FramesIn, FramesOut, BytesIn, BytesOut               int64
	RateIn, RateOut                                      string
	AcksSent                                             string
	FramingErrors, JournalErrors, InvalidMessages        int64
	MessagesURL                                          string
}

type connRow struct {
	ID, Anchor, Direction, ListenerID, State, StateClass string
	Peer, Remote, Local                                  string
	LastError, CloseReason, CloseDetail, CloseTime       string
	NextAttempt, LastActivity, Opened                    string
	Queued, Reconnects, FailedConnects                   int64
	FramesIn, FramesOut, BytesIn, BytesOut               int64
	RateIn, RateOut                                      string
	AcksSent, AcksReceived                               string
	AckTimeouts, AckMismatches, FramingErrors            int64
	UnsolicitedAcks, JournalErrors                       int64
	MessagesURL, QueuedURL                               string
}

type consumerRow struct {
	Name, Anchor, Mode, Filter, OldestPending string
	Pending, Backlog, Redeliveries, Dead      int64
	Streams                                   int32
	Next, AckFloor                            uint64
}

type journalView struct {
	Healthy     bool
	Error       string
	First, Last uint64
	Retained    uint64
	FigureErr   string
	HasStats    bool
	Appends     uint64
	Refused     uint64
	Commits     uint64
	Records     uint64
	Failures    uint64
	Recoveries  uint64
}

func (c *console) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	p := overviewPage{page: c.newPage("Switchboard console", "overview"), ShowPayloads: c.cfg.ShowPayloads}
	if r.URL.Query().Get("refresh") == "0" {
		p.RefreshURL = Prefix
	} else {
		p.Refresh = refreshSeconds
		p.RefreshURL = Prefix + "?refresh=0"
	}

	listeners, more, err := c.listListeners(ctx)
	p.ListenersMore = more
	if err != nil {
		_, p.ListenersErr = apiError("ListListeners", err)
	}
	outbound, more, err := c.listConnections(ctx, switchboardv1.Direction_DIRECTION_OUTBOUND, maxOutbound)
	p.OutboundMore = more
	if err != nil {
		_, p.OutboundErr = apiError("ListConnections (outbound)", err)
	}
	inbound, more, err := c.listConnections(ctx, switchboardv1.Direction_DIRECTION_INBOUND, maxInbound)
	p.InboundMore = more
	if err != nil {
		_, p.InboundErr = apiError("ListConnections (inbound)", err)
	}

	// Read every counter first, then take the rates in one step.
	cur := make(map[string]sample, len(listeners)+len(outbound)+len(inbound))
	for _, l := range listeners {
		t := l.GetStatus().GetConnectionTotals()
		cur["l/"+l.GetListenerId()] = sample{in: t.GetReceivedFrameCount(), out: t.GetSentFrameCount()}
	}
	for _, cs := range [][]*switchboardv1.Connection{outbound, inbound} {
		for _, cn := range cs {
			k := cn.GetStatus().GetCounters()
			cur["c/"+cn.GetConnectionId()] = sample{in: k.GetReceivedFrameCount(), out: k.GetSentFrameCount()}
		}
	}
	now := c.cfg.Now()
	rates := c.rates.observe(now, cur)
	var over time.Duration
	for _, rt := range rates {
		over = max(over, rt.over)
	}
	if over > 0 {
		p.RateNote = fmt.Sprintf("Rates are frames per second since the previous load of this page (by anyone), %s ago: the console keeps the last counters of each row in memory and compares.", fmtDuration(over))
	} else {
		p.RateNote = "Rates are frames per second since the previous load of this page (by anyone): the console keeps the last counters of each row in memory and compares; this is the first load, so there is no rate yet. Reload to see one."
	}

	for _, l := range listeners {
		row := listenerToRow(l, rates["l/"+l.GetListenerId()])
		p.InboundOpen += row.Open
		p.Listeners = append(p.Listeners, row)
		if l.GetStatus().GetState() != switchboardv1.ListenerState_LISTENER_STATE_LISTENING {
			p.Attention = append(p.Attention, attention{
				Text:   fmt.Sprintf("Listener %s is %s%s", row.ID, row.State, withErr(row.LastError)),
				Anchor: "#" + row.Anchor,
			})
		}
	}
	for _, cn := range outbound {
		row := connToRow(cn, rates["c/"+cn.GetConnectionId()])
		p.Outbound = append(p.Outbound, row)
		if cn.GetStatus().GetState() != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN {
			why := row.LastError
			if why == "" {
				why = strings.TrimSpace(row.CloseReason + " " + row.CloseDetail)
			}
			p.Attention = append(p.Attention, attention{
				Text:   fmt.Sprintf("Outbound connection %s to %s is %s%s", row.ID, row.Peer, row.State, withErr(why)),
				Anchor: "#" + row.Anchor,
			})
		}
		if row.Queued > 0 {
			p.Attention = append(p.Attention, attention{
				Text:   fmt.Sprintf("Outbound connection %s has %d queued messages not yet delivered", row.ID, row.Queued),
				Anchor: "#" + row.Anchor,
			})
		}
	}
	for _, cn := range inbound {
		p.Inbound = append(p.Inbound, connToRow(cn, rates["c/"+cn.GetConnectionId()]))
	}

	consumers, err := c.cfg.API.ListConsumers(ctx, &switchboardv1.ListConsumersRequest{PageSize: maxConsumers})
	if err != nil {
		_, p.ConsumersErr = apiError("ListConsumers", err)
	}
	p.ConsumersMore = consumers.GetNextPageToken() != ""
	for _, cs := range consumers.GetConsumers() {
		row := consumerToRow(cs, now)
		p.Consumers = append(p.Consumers, row)
		if row.Dead > 0 {
			p.Attention = append(p.Attention, attention{
				Text:   fmt.Sprintf("Consumer %s holds %d dead letters (ListDeadLetters, ReplayDeadLetters)", row.Name, row.Dead),
				Anchor: "#" + row.Anchor,
			})
		}
	}

	if c.cfg.Journal != nil {
		p.Journal = c.journalFigures(ctx)
		if !p.Journal.Healthy {
			p.Attention = append(p.Attention, attention{Text: "The journal cannot store messages: " + p.Journal.Error, Anchor: "#journal"})
		}
	}
	if c.cfg.Events == nil {
		p.EventsNone = true
	} else {
		p.Events = c.cfg.Events.Recent(maxEvents)
		if len(p.Events) > maxEvents {
			p.Events = p.Events[:maxEvents]
		}
	}
	c.render(w, r, http.StatusOK, "overview.html", p)
}

func consumerToRow(cs *switchboardv1.Consumer, now time.Time) consumerRow {
	st := cs.GetStatus()
	row := consumerRow{
		Name: cs.GetName(), Anchor: "consumer-" + cs.GetName(),
		Mode:    enumName(cs.GetConfig().GetMode().String(), "CONSUMER_MODE_"),
		Pending: st.GetPendingCount(), Backlog: st.GetBacklogCount(), Redeliveries: st.GetRedeliveryCount(),
		Dead: st.GetDeadLetterCount(), Streams: st.GetAttachedStreamCount(), Next: st.GetNextSequence(), AckFloor: st.GetAckFloor(),
	}
	var filter []string
	if ids := cs.GetListenerIds(); len(ids) > 0 {
		filter = append(filter, "listeners "+strings.Join(ids, ", "))
	}
	if ids := cs.GetConnectionIds(); len(ids) > 0 {
		filter = append(filter, "connections "+strings.Join(ids, ", "))
	}
	row.Filter = strings.Join(filter, "; ")
	if t := st.GetOldestPendingTime(); t != nil {
		row.OldestPending = fmtDuration(max(now.Sub(t.AsTime()), 0)) + " ago"
	}
	return row
}

func withErr(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func (c *console) listListeners(ctx context.Context) ([]*switchboardv1.Listener, bool, error) {
	var out []*switchboardv1.Listener
	token := ""
	for {
		resp, err := c.cfg.API.ListListeners(ctx, &switchboardv1.ListListenersRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return out, false, err
		}
		out = append(out, resp.GetListeners()...)
		token = resp.GetNextPageToken()
		if token == "" {
			return out, false, nil
		}
		if len(out) >= maxListeners {
			return out[:maxListeners], true, nil
		}
	}
}

func (c *console) listConnections(ctx context.Context, dir switchboardv1.Direction, limit int) ([]*switchboardv1.Connection, bool, error) {
	var out []*switchboardv1.Connection
	token := ""
	for {
		resp, err := c.cfg.API.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{
			Direction: dir, PageSize: int32(min(limit, 1000)), PageToken: token,
		})
		if err != nil {
			return out, false, err
		}
		out = append(out, resp.GetConnections()...)
		token = resp.GetNextPageToken()
		if token == "" {
			return out, false, nil
		}
		if len(out) >= limit {
			return out[:limit], true, nil
		}
	}
}

func (c *console) journalFigures(ctx context.Context) *journalView {
	j := c.cfg.Journal
	v := &journalView{Healthy: true}
	if err, _ := j.Health(); err != nil {
		v.Healthy, v.Error = false, err.Error()
	}
	first, err1 := j.FirstSeq(ctx)
	last, err2 := j.LastSeq(ctx)
	switch {
	case err1 != nil:
		v.FigureErr = "first sequence: " + err1.Error()
	case err2 != nil:
		v.FigureErr = "last sequence: " + err2.Error()
	default:
		v.First, v.Last = first, last
		if last >= first {
			v.Retained = last - first + 1
		}
	}
	if s, ok := j.(journalStats); ok {
		st := s.Stats()
		v.HasStats = true
		v.Appends, v.Refused, v.Commits, v.Records = st.Appends, st.Refused, st.Commits, st.Records
		v.Failures, v.Recoveries = st.Failures, st.Recoveries
	}
	return v
}

func listenerToRow(l *switchboardv1.Listener, rt rate) listenerRow {
	st := l.GetStatus()
	t := st.GetConnectionTotals()
	row := listenerRow{
		ID:              l.GetListenerId(),
		Anchor:          "listener-" + l.GetListenerId(),
		State:           enumName(st.GetState().String(), "LISTENER_STATE_"),
		StateClass:      listenerClass(st.GetState()),
		Address:         l.GetConfig().GetAddress(),
		BoundAddress:    st.GetBoundAddress(),
		LastError:       st.GetLastError(),
		NextAttempt:     fmtTimestamp(st.GetNextAttemptTime()),
		Created:         fmtTimestamp(st.GetCreateTime()),
		Open:            st.GetOpenConnectionCount(),
		Accepted:        st.GetAcceptedConnectionCount(),
		Rejected:        st.GetRejectedConnectionCount(),
		SourceRejected:  st.GetSourceRejectedConnectionCount(),
		FramesIn:        t.GetReceivedFrameCount(),
		FramesOut:       t.GetSentFrameCount(),
		BytesIn:         t.GetReceivedBytes(),
		BytesOut:        t.GetSentBytes(),
		AcksSent:        ackList(t.GetSentAcks()),
		FramingErrors:   t.GetFramingErrorCount(),
		JournalErrors:   t.GetJournalErrorCount(),
		InvalidMessages: t.GetInvalidMessageCount(),
		MessagesURL:     messagesURL(url.Values{"listener_id": {l.GetListenerId()}}),
	}
	row.RateIn, row.RateOut = fmtRates(rt)
	return row
}

func connToRow(cn *switchboardv1.Connection, rt rate) connRow {
	st := cn.GetStatus()
	k := st.GetCounters()
	row := connRow{
		ID:              cn.GetConnectionId(),
		Anchor:          "connection-" + cn.GetConnectionId(),
		Direction:       enumName(cn.GetDirection().String(), "DIRECTION_"),
		ListenerID:      cn.GetListenerId(),
		State:           enumName(st.GetState().String(), "CONNECTION_STATE_"),
		StateClass:      connClass(st.GetState()),
		Peer:            cn.GetConfig().GetAddress(),
		Remote:          st.GetRemoteAddress(),
		Local:           st.GetLocalAddress(),
		LastError:       st.GetLastError(),
		CloseDetail:     st.GetCloseDetail(),
		CloseTime:       fmtTimestamp(st.GetCloseTime()),
		NextAttempt:     fmtTimestamp(st.GetNextAttemptTime()),
		LastActivity:    fmtTimestamp(st.GetLastActivityTime()),
		Opened:          fmtTimestamp(st.GetOpenTime()),
		Queued:          st.GetQueuedMessageCount(),
		Reconnects:      st.GetReconnectCount(),
		FailedConnects:  st.GetFailedConnectCount(),
		FramesIn:        k.GetReceivedFrameCount(),
		FramesOut:       k.GetSentFrameCount(),
		BytesIn:         k.GetReceivedBytes(),
		BytesOut:        k.GetSentBytes(),
		AcksSent:        ackList(k.GetSentAcks()),
		AcksReceived:    ackList(k.GetReceivedAcks()),
		AckTimeouts:     k.GetAckTimeoutCount(),
		AckMismatches:   k.GetAckMismatchCount(),
		FramingErrors:   k.GetFramingErrorCount(),
		UnsolicitedAcks: k.GetUnsolicitedAckCount(),
		JournalErrors:   k.GetJournalErrorCount(),
		MessagesURL:     messagesURL(url.Values{"connection_id": {cn.GetConnectionId()}}),
		QueuedURL:       messagesURL(url.Values{"connection_id": {cn.GetConnectionId()}, "state": {"queued"}}),
	}
	if r := st.GetCloseReason(); r != switchboardv1.CloseReason_CLOSE_REASON_UNSPECIFIED {
		row.CloseReason = enumName(r.String(), "CLOSE_REASON_")
	}
	if row.Peer == "" {
		row.Peer = row.Remote
	}
	row.RateIn, row.RateOut = fmtRates(rt)
	return row
}

func listenerClass(s switchboardv1.ListenerState) string {
	switch s {
	case switchboardv1.ListenerState_LISTENER_STATE_LISTENING:
		return "ok"
	case switchboardv1.ListenerState_LISTENER_STATE_DRAINING, switchboardv1.ListenerState_LISTENER_STATE_BACKING_OFF:
		return "warn"
	}
	return "bad"
}

func connClass(s switchboardv1.ConnectionState) string {
	switch s {
	case switchboardv1.ConnectionState_CONNECTION_STATE_OPEN:
		return "ok"
	case switchboardv1.ConnectionState_CONNECTION_STATE_CONNECTING, switchboardv1.ConnectionState_CONNECTION_STATE_DRAINING:
		return "warn"
	}
	return "bad"
}

func ackList(acks []*switchboardv1.AckCount) string {
	var b strings.Builder
	for i, a := range acks {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", enumName(a.GetCode().String(), "ACK_CODE_"), a.GetCount())
	}
	return b.String()
}

func fmtRates(rt rate) (string, string) {
	if !rt.ok {
		return "–", "–"
	}
	return fmtRate(rt.in), fmtRate(rt.out)
}

func fmtRate(f float64) string {
	switch {
	case f == 0:
		return "0/s"
	case f < 10:
		return fmt.Sprintf("%.2f/s", f)
	default:
		return fmt.Sprintf("%.0f/s", f)
	}
}
