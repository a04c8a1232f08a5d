package console_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/observe/console"
	"github.com/switchboard-dev/switchboard/service/delivery"
)

// TestOverviewListenerCounters: the overview lists the listener with its
// state, bound address and frame counters, and they move with traffic.
func TestOverviewListenerCounters(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	addr := e.listen(ctx, "adt")
	p := dialPeer(t, addr)
	for i := range 3 {
		if code := p.send(hl7Message(fmt.Sprintf("MSG%d", i))); code != "AA" {
			t.Fatalf("ACK %s, want AA", code)
		}
	}
	e.waitListener(ctx, "adt", 3, 3)
	body := e.page("/console/")
	for _, want := range []string{`data-listener="adt"`, addr, "LISTENING", `<meta http-equiv="refresh" content="5">`} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	if got := cell(t, body, `data-listener="adt"`, "frames-in"); got != "3" {
		t.Errorf("frames in = %q, want 3", got)
	}
	if got := cell(t, body, `data-listener="adt"`, "frames-out"); got != "3" {
		t.Errorf("frames out = %q, want 3 (the ACKs)", got)
	}
	if got := cell(t, body, `data-listener="adt"`, "rate-in"); got != "–" {
		t.Errorf("first load rate = %q, want none", got)
	}
	// The open inbound connection is listed.
	if !strings.Contains(body, `id="inbound-table"`) || !strings.Contains(body, p.nc.LocalAddr().String()) {
		t.Errorf("overview lacks the inbound connection from %s", p.nc.LocalAddr())
	}
	if !strings.Contains(body, "CONNECTION_OPENED") {
		t.Errorf("events panel lacks the connection opening")
	}

	for i := range 2 {
		p.send(hl7Message(fmt.Sprintf("MSG%d", 10+i)))
	}
	e.waitListener(ctx, "adt", 5, 5)
	body = e.page("/console/?refresh=0")
	if got := cell(t, body, `data-listener="adt"`, "frames-in"); got != "5" {
		t.Errorf("frames in after two more = %q, want 5", got)
	}
	if got := cell(t, body, `data-listener="adt"`, "rate-in"); got == "–" || got == "0/s" {
		t.Errorf("rate after two more frames = %q, want a positive rate", got)
	}
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Errorf("refresh=0 still refreshes")
	}
}

// TestRates: the rate is the counters' change since the previous load,
// over the time between the loads.
func TestRates(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, envOptions{now: clock})
	ctx := testCtx(t)
	p := dialPeer(t, e.listen(ctx, "adt"))
	p.send(hl7Message("R0"))
	e.waitListener(ctx, "adt", 1, 1)
	e.page("/console/")
	for i := range 4 {
		p.send(hl7Message(fmt.Sprintf("R%d", i+1)))
	}
	e.waitListener(ctx, "adt", 5, 5)
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	body := e.page("/console/")
	if got := cell(t, body, `data-listener="adt"`, "rate-in"); got != "2.00/s" {
		t.Errorf("rate in = %q, want 2.00/s (4 frames in 2 s)", got)
	}
	if !strings.Contains(body, "since the previous load of this page") || !strings.Contains(body, "2.0 s ago") {
		t.Errorf("the rate note does not say what the rate is over")
	}
}

// TestOutboundKilledPeer: an outbound connection shows its peer, counters
// and queue; once its peer dies it shows BACKING_OFF with the error, and
// "needs attention" names it.
func TestOutboundKilledPeer(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	remote := startAckPeer(t)
	e.connect(ctx, "lab", remote.addr())
	for i := range 3 {
		resp, err := e.svc.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: oruMessage(fmt.Sprintf("OUT%d", i))})
		if err != nil || resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED {
			t.Fatalf("Send: %v %v", resp, err)
		}
	}
	body := e.page("/console/")
	row := `data-connection="lab"`
	if got := cell(t, body, row, "frames-out"); got != "3" {
		t.Errorf("frames out = %q, want 3", got)
	}
	if !strings.Contains(body, remote.addr()) || !strings.Contains(body, ">OPEN<") {
		t.Errorf("overview lacks the open connection to %s", remote.addr())
	}
	if !strings.Contains(body, "AA 3") {
		t.Errorf("overview lacks the 3 AAs received")
	}

	remote.kill()
	e.waitConn(ctx, "lab", switchboardv1.ConnectionState_CONNECTION_STATE_BACKING_OFF)
	// Queued while the peer is down: the queue shows.
	if _, err := e.svc.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: oruMessage("OUTQ"), Queued: true}); err != nil {
		t.Fatalf("queued Send: %v", err)
	}
	body = e.page("/console/")
	if !strings.Contains(body, ">BACKING_OFF<") {
		t.Errorf("overview does not show lab BACKING_OFF")
	}
	if got := cell(t, body, row, "queued"); got != "1" {
		t.Errorf("queued = %q, want 1", got)
	}
	att := body[strings.Index(body, `id="attention"`):]
	att = att[:strings.Index(att, "</div>")]
	if !strings.Contains(att, "Outbound connection lab to "+remote.addr()+" is BACKING_OFF") || !strings.Contains(att, "1 queued") {
		t.Errorf("needs attention does not name lab: %s", att)
	}
	if !strings.Contains(body, "CONNECTION_CLOSED") {
		t.Errorf("events panel lacks the close")
	}
}

// TestEscaping: strings from messages (a peer's control id) are escaped on
// every page; no page has a script at all.
func TestEscaping(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	p := dialPeer(t, e.listen(ctx, "adt"))
	p.send(hl7Message(hostile))
	escaped := "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"

	list := e.page("/console/messages")
	msg := e.page("/console/message?id=in-1")
	filtered := e.page("/console/messages?control_id=" + url.QueryEscape(hostile))
	for name, body := range map[string]string{"messages": list, "message": msg, "filtered messages": filtered, "overview": e.page("/console/")} {
		if strings.Contains(strings.ToLower(body), "<script") {
			t.Errorf("%s page has a <script", name)
		}
		if name != "overview" && !strings.Contains(body, escaped) {
			t.Errorf("%s page lacks the escaped control id %s", name, escaped)
		}
	}
	if !strings.Contains(filtered, `data-message="in-1"`) {
		t.Errorf("the control id filter does not find the message")
	}
	// A hostile value in a filter is echoed escaped into its input.
	_, body := e.get("/console/messages?message_type=" + url.QueryEscape(`"><script>x</script>`))
	if strings.Contains(body, "<script") || !strings.Contains(body, `value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"`) {
		t.Errorf("the message type filter is not escaped in its input")
	}
	// An error that quotes the request is escaped too.
	_, body = e.get("/console/messages?since=" + url.QueryEscape("<script>"))
	if strings.Contains(body, "<script") {
		t.Errorf("an error page carries the request's <script")
	}
}

// TestPayloadsNeverShown: with ShowPayloads off no page has the payload,
// not even the payload URL; with it on, only the payload page does, after
// the click.
func TestPayloadsNeverShown(t *testing.T) {
	for _, show := range []bool{false, true} {
		t.Run(fmt.Sprintf("ShowPayloads=%v", show), func(t *testing.T) {
			e := newEnv(t, envOptions{showPayloads: show})
			ctx := testCtx(t)
			p := dialPeer(t, e.listen(ctx, "adt"))
			p.send(hl7Message("IN1"))
			remote := startAckPeer(t)
			e.connect(ctx, "lab", remote.addr())
			resp, err := e.svc.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: oruMessage("OUT1"), Queued: true})
			if err != nil {
				t.Fatalf("queued Send: %v", err)
			}
			out := resp.GetMessageId()
			pages := []string{"/console/", "/console/?refresh=0", "/console/messages", "/console/messages?direction=outbound",
				"/console/messages?control_id=IN1", "/console/message?id=in-1", "/console/message?id=" + url.QueryEscape(out)}
			for _, path := range pages {
				body := e.page(path)
				if strings.Contains(body, secret) || strings.Contains(body, "PATID1234") {
					t.Errorf("%s shows the payload", path)
				}
			}
			msg := e.page("/console/message?id=in-1")
			code, payload := e.get("/console/message/payload?id=in-1")
			if !show {
				if strings.Contains(msg, "show payload") || !strings.Contains(msg, "payloads off") {
					t.Errorf("the message page offers a payload with payloads off")
				}
				if code != http.StatusForbidden || strings.Contains(payload, secret) {
					t.Errorf("payload URL with payloads off: %d, shows payload %v", code, strings.Contains(payload, secret))
				}
				return
			}
			if !strings.Contains(msg, `href="/console/message/payload?id=in-1"`) || !strings.Contains(msg, "no authorization yet") {
				t.Errorf("the message page lacks the show payload link or the warning")
			}
			if code != http.StatusOK || !strings.Contains(payload, secret) || !strings.Contains(payload, "\nPID|1||PATID1234") {
				t.Errorf("payload page: %d\n%s", code, payload)
			}
			// The outbound message's page has the ACK too once delivered.
			waitState(t, e, out, switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED)
			_, payload = e.get("/console/message/payload?id=" + url.QueryEscape(out))
			if !strings.Contains(payload, "MSA|AA|OUT1") {
				t.Errorf("outbound payload page lacks the ACK as received")
			}
		})
	}
}

func waitState(t *testing.T, e *env, id string, want switchboardv1.MessageState) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := e.svc.GetMessage(t.Context(), &switchboardv1.GetMessageRequest{MessageId: id})
		if err != nil {
			t.Fatalf("GetMessage: %v", err)
		}
		if resp.GetMessage().GetState() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s is %v, want %v", id, resp.GetMessage().GetState(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMessagesPage: filters (control id, message type, direction, state,
// time) and paging.
func TestMessagesPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	before := time.Now().UTC().Add(-time.Second)
	p := dialPeer(t, e.listen(ctx, "adt"))
	// 60 ADT and 5 ORU messages, the ORUs at the end: a type-filtered page
	// must read past the first API pages to find them.
	for i := range 60 {
		p.send(hl7Message(fmt.Sprintf("A%03d", i)))
	}
	for i := range 5 {
		p.send(oruMessage(fmt.Sprintf("O%03d", i)))
	}

	first := e.page("/console/messages")
	if n := strings.Count(first, "data-message="); n != 50 {
		t.Fatalf("first page has %d messages, want 50", n)
	}
	i := strings.Index(first, `id="next"`)
	if i < 0 {
		t.Fatalf("first page has no next link")
	}
	href := first[strings.LastIndex(first[:i], `href="`)+6:]
	href = strings.ReplaceAll(href[:strings.Index(href, `"`)], "&amp;", "&")
	second := e.page(href)
	if n := strings.Count(second, "data-message="); n != 15 {
		t.Errorf("second page has %d messages, want 15", n)
	}
	if strings.Contains(second, `id="next"`) {
		t.Errorf("the last page has a next link")
	}

	oru := e.page("/console/messages?message_type=ORU")
	if n := strings.Count(oru, "data-message="); n != 5 || strings.Contains(oru, ">ADT^A01") {
		t.Errorf("message_type=ORU: %d messages (want 5), ADT shown: %v", n, strings.Contains(oru, ">ADT^A01"))
	}
	if n := strings.Count(e.page("/console/messages?message_type="+url.QueryEscape("ADT^A01")), "data-message="); n != 50 {
		t.Errorf("message_type=ADT^A01: %d messages, want a full page of 50", n)
	}
	if n := strings.Count(e.page("/console/messages?control_id=A007"), "data-message="); n != 1 {
		t.Errorf("control_id=A007: %d messages, want 1", n)
	}
	if n := strings.Count(e.page("/console/messages?direction=outbound"), "data-message="); n != 0 {
		t.Errorf("direction=outbound: %d messages, want 0", n)
	}
	if n := strings.Count(e.page("/console/messages?direction=inbound&state=received&message_type=ORU"), "data-message="); n != 5 {
		t.Errorf("inbound received ORU: %d messages, want 5", n)
	}
	since := url.QueryEscape(before.Format(time.RFC3339))
	if n := strings.Count(e.page("/console/messages?message_type=ORU&since="+since), "data-message="); n != 5 {
		t.Errorf("since %s: %d messages, want 5", before, n)
	}
	if n := strings.Count(e.page("/console/messages?until="+since), "data-message="); n != 0 {
		t.Errorf("until %s: %d messages, want 0", before, n)
	}
	if n := strings.Count(e.page("/console/messages?until="+before.Add(time.Hour).Format("2006-01-02T15:04")), "data-message="); n != 50 {
		t.Errorf("until an hour later (datetime-local form): %d messages, want 50", n)
	}
	for _, bad := range []string{"since=yesterday", "direction=sideways", "state=lost", "page_token=nonsense", "control_id=" + strings.Repeat("x", 201)} {
		code, body := e.get("/console/messages?" + bad)
		if code != http.StatusBadRequest || !strings.Contains(body, `id="error"`) {
			t.Errorf("%s: %d, want 400 with the error", bad, code)
		}
	}
	// The message page.
	msg := e.page("/console/message?id=in-3")
	for _, want := range []string{"A002", "ADT^A01^ADT_A01", "RECEIVED", "adt"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message page lacks %q", want)
		}
	}
	if code, _ := e.get("/console/message?id=in-999"); code != http.StatusNotFound {
		t.Errorf("unknown message: %d, want 404", code)
	}
	if code, _ := e.get("/console/message?id="); code != http.StatusBadRequest {
		t.Errorf("empty message id: %d, want 400", code)
	}
}

// TestPanels: the journal figures, the events panel without a source, and
// an event's strings escaped.
func TestPanels(t *testing.T) {
	e := newEnv(t, envOptions{noEvents: true})
	ctx := testCtx(t)
	p := dialPeer(t, e.listen(ctx, "adt"))
	p.send(hl7Message("J1"))
	p.send(hl7Message("J2"))
	body := e.page("/console/")
	if !strings.Contains(body, "Events not available.") {
		t.Errorf("no events source, and the panel does not say so")
	}
	if !strings.Contains(body, `id="journal-first">1<`) || !strings.Contains(body, `id="journal-last">2<`) || !strings.Contains(body, "HEALTHY") {
		t.Errorf("journal figures missing: %s", body[strings.Index(body, `id="journal"`):])
	}

	// An events source whose rows carry hostile text.
	h := console.Handler(console.Config{API: e.svc, Events: fixedEvents{{Kind: "NAK_SENT", Detail: hostile}}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/console/", nil))
	body = rec.Body.String()
	if rec.Code != http.StatusOK || strings.Contains(body, "<script") || !strings.Contains(body, "NAK_SENT") {
		t.Errorf("events panel: %d, hostile detail not escaped, or event missing", rec.Code)
	}
	if !strings.Contains(body, "Journal figures are not available") {
		t.Errorf("no journal source, and the panel does not say so")
	}
}

type fixedEvents []console.EventRow

func (f fixedEvents) Recent(n int) []console.EventRow { return f[:min(n, len(f))] }

// TestHTTP: methods other than GET, unknown paths, and the headers that
// keep scripts, caches and frames out.
func TestHTTP(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, err := e.srv.Client().Post(e.srv.URL+"/console/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	if code, _ := e.get("/console/nowhere"); code != http.StatusNotFound {
		t.Errorf("unknown page: %d, want 404", code)
	}
	resp, err = e.srv.Client().Get(e.srv.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("CSP %q allows scripts", csp)
	}
	for k, v := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Content-Type": "text/html; charset=utf-8"} {
		if h.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, h.Get(k), v)
		}
	}
}

// TestOverviewConsumers: the overview lists the durable consumers with
// their streams and what they have pending.
func TestOverviewConsumers(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	addr := e.listen(ctx, "adt")
	spec := delivery.Spec{ListenerIDs: []string{"adt"}}.WithDefaults()
	st, err := e.svc.Consumers().Attach(ctx, "billing", delivery.AttachOptions{Spec: &spec})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := dialPeer(t, addr)
	for i := range 2 {
		if code := p.send(hl7Message(fmt.Sprintf("MSG%d", i))); code != "AA" {
			t.Fatalf("ACK %s, want AA", code)
		}
	}
	for got := 0; got < 2; {
		b, err := st.Next(ctx, 10, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got += len(b.Deliveries)
	}
	body := e.page("/console/?refresh=0")
	row := body[strings.Index(body, `id="consumer-billing"`):]
	row = row[:strings.Index(row, "</tr>")]
	for _, want := range []string{">billing<", "SHARED", "listeners adt", `<td class="n">1</td>`, `<td class="n">2</td>`, " ago<"} {
		if !strings.Contains(row, want) {
			t.Errorf("consumer row lacks %q:\n%s", want, row)
		}
	}
}
