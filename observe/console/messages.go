package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

const (
	// messagesPage is how many messages the messages page shows at once.
	messagesPage = 50
	// maxTypeCalls bounds the ListMessages calls of one page filtered by
	// message type, which the API cannot filter on: the console filters
	// each page it gets and asks for more until its page is full.
	maxTypeCalls = 10
)

// The filters of the messages page, as query parameters.
type msgFilter struct {
	ControlID    string
	MessageType  string
	Since        string
	Until        string
	Direction    string
	State        string
	ConnectionID string
	ListenerID   string
	PageToken    string
}

func readFilter(q url.Values) msgFilter {
	g := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	return msgFilter{
		ControlID:    g("control_id"),
		MessageType:  g("message_type"),
		Since:        g("since"),
		Until:        g("until"),
		Direction:    g("direction"),
		State:        g("state"),
		ConnectionID: g("connection_id"),
		ListenerID:   g("listener_id"),
		PageToken:    q.Get("page_token"),
	}
}

// values are the filters as query parameters (without the page token).
func (f msgFilter) values() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{
		"control_id": f.ControlID, "message_type": f.MessageType, "since": f.Since, "until": f.Until,
		"direction": f.Direction, "state": f.State, "connection_id": f.ConnectionID, "listener_id": f.ListenerID,
	} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

var directions = map[string]switchboardv1.Direction{
	"":         switchboardv1.Direction_DIRECTION_UNSPECIFIED,
	"inbound":  switchboardv1.Direction_DIRECTION_INBOUND,
	"outbound": switchboardv1.Direction_DIRECTION_OUTBOUND,
}

// stateNames are the states the filter offers, in their lifecycle order.
var stateNames = []string{"queued", "sending", "awaiting_ack", "accepted", "failed", "in_doubt", "received"}

func parseState(s string) (switchboardv1.MessageState, bool) {
	if s == "" {
		return switchboardv1.MessageState_MESSAGE_STATE_UNSPECIFIED, true
	}
	v, ok := switchboardv1.MessageState_value["MESSAGE_STATE_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, false
	}
	return switchboardv1.MessageState(v), true
}

// timeLayouts are the forms since and until take; without a zone they are
// UTC. The second and third are what an <input type="datetime-local">
// sends.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"}

func parseTime(s string) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return timestamppb.New(t), nil
		}
	}
	return nil, fmt.Errorf("%q is not a time: use 2006-01-02T15:04:05Z (RFC 3339), 2006-01-02T15:04 or 2006-01-02 (UTC)", s)
}

// request is the ListMessagesRequest of the filters, checked with the API's
// validation rules (the console calls the service in process, past the gRPC
// server's validating interceptor).
func (f msgFilter) request() (*switchboardv1.ListMessagesRequest, error) {
	req := &switchboardv1.ListMessagesRequest{
		ConnectionId: f.ConnectionID,
		ListenerId:   f.ListenerID,
		ControlId:    f.ControlID,
		PageToken:    f.PageToken,
		PageSize:     messagesPage,
	}
	d, ok := directions[f.Direction]
	if !ok {
		return nil, fmt.Errorf("direction %q: use inbound, outbound or nothing", f.Direction)
	}
	req.Direction = d
	st, ok := parseState(f.State)
	if !ok {
		return nil, fmt.Errorf("state %q: use one of %s", f.State, strings.Join(stateNames, ", "))
	}
	if st != switchboardv1.MessageState_MESSAGE_STATE_UNSPECIFIED {
		req.States = []switchboardv1.MessageState{st}
	}
	var err error
	if req.StartTime, err = parseTime(f.Since); err != nil {
		return nil, fmt.Errorf("since: %w", err)
	}
	if req.EndTime, err = parseTime(f.Until); err != nil {
		return nil, fmt.Errorf("until: %w", err)
	}
	if err := protovalidate.Validate(req); err != nil {
		return nil, err
	}
	return req, nil
}

// matchType is the message type filter: the whole MSH-9, or its first
// components ("ADT" and "ADT^A01" match "ADT^A01^ADT_A01").
func matchType(want, got string) bool {
	return want == "" || got == want || strings.HasPrefix(got, want+"^")
}

type messagesPageData struct {
	page
	F          msgFilter
	States     []string
	Rows       []messageRow
	NextURL    string
	FirstURL   string
	Filtered   bool // by message type, in the console
	TypeCalls  int
	Incomplete bool // a message-type page that stopped at maxTypeCalls
}

type messageRow struct {
	ID, URL, Direction, State, StateClass string
	ConnectionID, ListenerID              string
	MessageType, ControlID                string
	Created, Updated, Failure             string
	Attempts                              int
	Sequence                              uint64
}

func (c *console) messages(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	f := readFilter(r.URL.Query())
	p := messagesPageData{
		page:     c.newPage("Messages", "messages"),
		F:        f,
		States:   stateNames,
		Filtered: f.MessageType != "",
		FirstURL: messagesURL(f.values()),
	}
	req, err := f.request()
	if err != nil {
		p.Error = "The filters are not valid: " + err.Error()
		c.render(w, r, http.StatusBadRequest, "messages.html", p)
		return
	}
	var msgs []*switchboardv1.Message
	token := f.PageToken
	for {
		q := proto.CloneOf(req)
		q.PageToken = token
		if f.MessageType != "" {
			// Never more than the page has room for, so that no match is
			// skipped by the next page's token.
			q.PageSize = int32(messagesPage - len(msgs))
		}
		resp, err := c.cfg.API.ListMessages(ctx, q)
		p.TypeCalls++
		if err != nil {
			code, msg := apiError("ListMessages", err)
			p.Error = msg
			c.render(w, r, code, "messages.html", p)
			return
		}
		for _, m := range resp.GetMessages() {
			if matchType(f.MessageType, m.GetMessageType()) {
				msgs = append(msgs, m)
			}
		}
		token = resp.GetNextPageToken()
		if token == "" || f.MessageType == "" || len(msgs) >= messagesPage {
			break
		}
		if p.TypeCalls >= maxTypeCalls {
			p.Incomplete = true
			break
		}
	}
	for _, m := range msgs {
		m.Payload = nil // never on this page
		p.Rows = append(p.Rows, messageToRow(m))
	}
	if token != "" {
		q := f.values()
		q.Set("page_token", token)
		p.NextURL = messagesURL(q)
	}
	c.render(w, r, http.StatusOK, "messages.html", p)
}

func messageToRow(m *switchboardv1.Message) messageRow {
	return messageRow{
		ID:           m.GetMessageId(),
		URL:          messageURL(m.GetMessageId()),
		Direction:    enumName(m.GetDirection().String(), "DIRECTION_"),
		State:        enumName(m.GetState().String(), "MESSAGE_STATE_"),
		StateClass:   messageClass(m.GetState()),
		ConnectionID: m.GetConnectionId(),
		ListenerID:   m.GetListenerId(),
		MessageType:  m.GetMessageType(),
		ControlID:    m.GetControlId(),
		Created:      fmtTimestamp(m.GetCreateTime()),
		Updated:      fmtTimestamp(m.GetUpdateTime()),
		Failure:      m.GetFailure(),
		Attempts:     len(m.GetAttempts()),
		Sequence:     m.GetSequence(),
	}
}

func messageClass(s switchboardv1.MessageState) string {
	switch s {
	case switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED, switchboardv1.MessageState_MESSAGE_STATE_RECEIVED:
		return "ok"
	case switchboardv1.MessageState_MESSAGE_STATE_FAILED, switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT:
		return "bad"
	}
	return "warn"
}

type messagePageData struct {
	page
	ID           string
	M            *messageView
	ShowPayloads bool
	PayloadURL   string
}

type messageView struct {
	messageRow
	Kind, IdempotencyKey, NextAttempt string
	PayloadBytes                      int
	Ack                               *ackView
	AttemptRows                       []attemptRow
	ListURL                           string
}

type ackView struct {
	Code, ControlID, Text string
}

type attemptRow struct {
	Start, End, Result, Error string
	Ack                       *ackView
}

func ackToView(a *switchboardv1.PeerAck) *ackView {
	if a == nil {
		return nil
	}
	return &ackView{Code: enumName(a.GetCode().String(), "ACK_CODE_"), ControlID: a.GetControlId(), Text: a.GetText()}
}

// getMessage reads the message of the request's id, or renders the error
// page and returns nil.
func (c *console) getMessage(w http.ResponseWriter, r *http.Request, title string) (*switchboardv1.Message, string) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	id := r.URL.Query().Get("id")
	req := &switchboardv1.GetMessageRequest{MessageId: id}
	fail := func(code int, msg string) {
		p := c.newPage(title, "messages")
		p.Error = msg
		c.render(w, r, code, "error.html", errorPage{p})
	}
	if err := protovalidate.Validate(req); err != nil {
		fail(http.StatusBadRequest, "The message id is not valid: "+err.Error())
		return nil, id
	}
	resp, err := c.cfg.API.GetMessage(ctx, req)
	if err != nil {
		fail(apiError("GetMessage", err))
		return nil, id
	}
	return resp.GetMessage(), id
}

func (c *console) message(w http.ResponseWriter, r *http.Request) {
	m, id := c.getMessage(w, r, "Message")
	if m == nil {
		return
	}
	v := &messageView{
		messageRow:     messageToRow(m),
		Kind:           enumName(m.GetKind().String(), "RECORD_KIND_"),
		IdempotencyKey: m.GetIdempotencyKey(),
		NextAttempt:    fmtTimestamp(m.GetNextAttemptTime()),
		PayloadBytes:   len(m.GetPayload()),
		Ack:            ackToView(m.GetAck()),
		ListURL:        messagesURL(url.Values{"connection_id": {m.GetConnectionId()}}),
	}
	if m.GetKind() == switchboardv1.RecordKind_RECORD_KIND_UNSPECIFIED {
		v.Kind = ""
	}
	for _, a := range m.GetAttempts() {
		v.AttemptRows = append(v.AttemptRows, attemptRow{
			Start:  fmtTimestamp(a.GetStartTime()),
			End:    fmtTimestamp(a.GetEndTime()),
			Result: enumName(a.GetResult().String(), "ATTEMPT_RESULT_"),
			Error:  a.GetError(),
			Ack:    ackToView(a.GetAck()),
		})
	}
	p := messagePageData{page: c.newPage("Message "+id, "messages"), ID: id, M: v, ShowPayloads: c.cfg.ShowPayloads}
	if c.cfg.ShowPayloads {
		p.PayloadURL = Prefix + "message/payload?" + url.Values{"id": {id}}.Encode()
	}
	c.render(w, r, http.StatusOK, "message.html", p)
}

type payloadPageData struct {
	page
	ID, MessageURL string
	Payload        string
	PayloadBytes   int
	AckPayload     string
	HasAck         bool
}

// payload is the only page that shows a payload: with ShowPayloads, after a
// person clicked "show payload" on the message page.
func (c *console) payload(w http.ResponseWriter, r *http.Request) {
	if !c.cfg.ShowPayloads {
		p := c.newPage("Payload", "messages")
		p.Error = "Payloads are not shown: this console runs with payloads off (console.Config.ShowPayloads is false)."
		c.render(w, r, http.StatusForbidden, "error.html", errorPage{p})
		return
	}
	m, id := c.getMessage(w, r, "Payload")
	if m == nil {
		return
	}
	p := payloadPageData{
		page:         c.newPage("Payload of "+id, "messages"),
		ID:           id,
		MessageURL:   messageURL(id),
		Payload:      payloadText(m.GetPayload()),
		PayloadBytes: len(m.GetPayload()),
	}
	if a := m.GetAck(); len(a.GetPayload()) > 0 {
		p.HasAck, p.AckPayload = true, payloadText(a.GetPayload())
	}
	c.render(w, r, http.StatusOK, "payload.html", p)
}
