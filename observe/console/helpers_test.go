package console_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/observe/console"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

func TestMain(m *testing.M) {
	// chromedp's goroutines (its allocator's process waiter, the browser's
	// websocket reader and event loop) all end when its contexts are
	// cancelled, and the browser tests cancel them and wait before they
	// return, so nothing needs ignoring here.
	goleak.VerifyTestMain(m)
}

// secret is in the PID segment of every message the tests send: it must be
// on no page unless payloads are on and asked for.
const secret = "EVERYMAN^ADAMSECRET"

// hostile is a control id a peer could send to attack the console.
const hostile = `<script>alert("x")</script>`

// env is a real Switchboard in process: a Pebble journal in a temp dir,
// the service with its outbox and state store, and the console on an
// httptest server, mounted as the lead mounts it on the admin mux.
type env struct {
	t      *testing.T
	j      *pebblejournal.Journal
	svc    *service.Service
	srv    *httptest.Server
	events *eventLog
}

type envOptions struct {
	showPayloads bool
	noEvents     bool
	now          func() time.Time
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{})
	if err != nil {
		t.Fatalf("pebblejournal.Open: %v", err)
	}
	ev := &eventLog{}
	svc, err := service.New(service.Config{
		Journal:  j,
		State:    j.StateStore(),
		Outbox:   j.Outbox(),
		Observer: ev.observer(),
	})
	if err != nil {
		_ = j.Close()
		t.Fatalf("service.New: %v", err)
	}
	cfg := console.Config{API: svc, Journal: j, ShowPayloads: o.showPayloads, Now: o.now}
	if !o.noEvents {
		cfg.Events = ev
	}
	mux := http.NewServeMux()
	mux.Handle("/console/", console.Handler(cfg))
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "# metrics\n") })
	e := &env{t: t, j: j, svc: svc, srv: httptest.NewServer(mux), events: ev}
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
		if err := j.Close(); err != nil {
			t.Errorf("journal.Close: %v", err)
		}
	})
	return e
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// get fetches a console path and returns the status and body.
func (e *env) get(path string) (int, string) {
	e.t.Helper()
	resp, err := e.srv.Client().Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// page fetches a path that must answer 200.
func (e *env) page(path string) string {
	e.t.Helper()
	code, body := e.get(path)
	if code != http.StatusOK {
		e.t.Fatalf("GET %s: %d\n%s", path, code, body)
	}
	return body
}

// listen starts an MLLP/HL7 listener on a free loopback port and returns
// its bound address.
func (e *env) listen(ctx context.Context, id string) string {
	e.t.Helper()
	resp, err := e.svc.StartListener(ctx, &switchboardv1.StartListenerRequest{
		ListenerId: id, Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"},
	})
	if err != nil {
		e.t.Fatalf("StartListener %s: %v", id, err)
	}
	return resp.GetListener().GetStatus().GetBoundAddress()
}

// connect creates an outbound connection to addr.
func (e *env) connect(ctx context.Context, id, addr string) {
	e.t.Helper()
	_, err := e.svc.Connect(ctx, &switchboardv1.ConnectRequest{
		ConnectionId: id,
		Config: &switchboardv1.ConnectionConfig{
			Address: addr,
			// A lost peer is retried after 5 s: long enough for a person
			// (and the tests) to see it BACKING_OFF.
			Reconnect: &switchboardv1.ReconnectPolicy{InitialDelay: durationpb.New(5 * time.Second), MaxDelay: durationpb.New(30 * time.Second)},
		},
	})
	if err != nil {
		e.t.Fatalf("Connect %s: %v", id, err)
	}
}

// waitConn waits (bounded) until the connection's state is one of want.
func (e *env) waitConn(ctx context.Context, id string, want ...switchboardv1.ConnectionState) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := e.svc.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
		if err != nil {
			e.t.Fatalf("GetConnection %s: %v", id, err)
		}
		st := resp.GetConnection().GetStatus().GetState()
		for _, w := range want {
			if st == w {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("connection %s is %v, want one of %v", id, st, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hl7Message is an ADT^A01 with control id ctl and the secret in PID.
func hl7Message(ctl string) []byte {
	return []byte("MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB|GOOD HEALTH HOSPITAL|20261125101500||ADT^A01^ADT_A01|" +
		ctl + "|P|2.5\rPID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR||" + secret + "\r")
}

func oruMessage(ctl string) []byte {
	return []byte("MSH|^~\\&|LAB|GOOD HEALTH HOSPITAL|EHR|GOOD HEALTH HOSPITAL|20261125101500||ORU^R01^ORU_R01|" +
		ctl + "|P|2.5\rPID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR||" + secret + "\r")
}

var mllp = transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()

// peer is a hospital system sending MLLP to a listener.
type peer struct {
	t   *testing.T
	nc  net.Conn
	dec *transport.Decoder
}

func dialPeer(t *testing.T, addr string) *peer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &peer{t: t, nc: nc, dec: transport.NewDecoder(nc, mllp)}
}

// send writes one message and returns the ACK's MSA-1.
func (p *peer) send(msg []byte) string {
	p.t.Helper()
	if _, err := p.nc.Write(mllp.AppendFrame(nil, msg)); err != nil {
		p.t.Fatalf("peer write: %v", err)
	}
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := p.dec.Next()
	if err != nil {
		p.t.Fatalf("peer read: %v", err)
	}
	ack, err := hl7.ParseAck(f)
	if err != nil {
		p.t.Fatalf("peer: not an ACK: %v", err)
	}
	return string(ack.Code)
}

// ackPeer is a remote system that Switchboard connects to: it answers
// every HL7 message with AA. kill drops it as a crashed host would: the
// listening socket and every connection are closed (reset) at once.
type ackPeer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startAckPeer(t *testing.T) *ackPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ackPeer{ln: ln}
	p.wg.Go(p.accept)
	t.Cleanup(p.kill)
	return p
}

func (p *ackPeer) addr() string { return p.ln.Addr().String() }

func (p *ackPeer) accept() {
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, nc)
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(nc) })
	}
}

func (p *ackPeer) serve(nc net.Conn) {
	defer nc.Close()
	dec := transport.NewDecoder(nc, mllp)
	for n := 1; ; n++ {
		f, err := dec.Next()
		if err != nil {
			return
		}
		h, err := hl7.ParseHeader(f)
		if err != nil {
			return
		}
		ack := hl7.AppendAck(nil, h, hl7.AckRequest{Code: hl7.AA, ControlID: fmt.Sprintf("PEERACK%d", n), Time: time.Now()})
		if _, err := nc.Write(mllp.AppendFrame(nil, ack)); err != nil {
			return
		}
	}
}

func (p *ackPeer) kill() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, nc := range p.conns {
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, as from a crashed host
		}
		_ = nc.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// eventLog is a stand-in for the event bus (which lands in another
// branch): it records connections opening and closing from the service's
// transport Observer, so the events panel shows real events.
type eventLog struct {
	mu   sync.Mutex
	rows []console.EventRow
}

func (l *eventLog) observer() *transport.Observer {
	return &transport.Observer{
		ConnOpened: func(c *transport.Conn) {
			i := c.Info()
			l.add(console.EventRow{Kind: "CONNECTION_OPENED", ListenerID: i.ListenerID, ConnectionID: i.ID, Detail: i.RemoteAddr})
		},
		ConnClosed: func(c *transport.Conn, i transport.ConnInfo) {
			d := i.CloseReason.String()
			if i.CloseErr != nil {
				d += ": " + i.CloseErr.Error()
			}
			l.add(console.EventRow{Kind: "CONNECTION_CLOSED", ListenerID: i.ListenerID, ConnectionID: i.ID, Detail: d})
		},
	}
}

func (l *eventLog) add(r console.EventRow) {
	r.Time = time.Now().UTC().Format("15:04:05.000")
	l.mu.Lock()
	l.rows = append(l.rows, r)
	l.mu.Unlock()
}

// Recent returns the newest n, newest first.
func (l *eventLog) Recent(n int) []console.EventRow {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []console.EventRow
	for i := len(l.rows) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, l.rows[i])
	}
	return out
}

// cell returns the text of the first <td class="...CLASS..."> in the row
// whose opening tag contains rowAttr, or fails.
func cell(t *testing.T, body, rowAttr, class string) string {
	t.Helper()
	i := strings.Index(body, rowAttr)
	if i < 0 {
		t.Fatalf("no row %s in the page", rowAttr)
	}
	row := body[i:]
	row = row[:strings.Index(row, "</tr>")]
	j := strings.Index(row, class+`">`)
	if j < 0 {
		t.Fatalf("row %s has no cell %s: %s", rowAttr, class, row)
	}
	v := row[j+len(class)+2:]
	return stripTags(v[:strings.Index(v, "</td>")])
}

func stripTags(s string) string {
	var b strings.Builder
	in := false
	for _, r := range s {
		switch {
		case r == '<':
			in = true
		case r == '>':
			in = false
		case !in:
			b.WriteRune(r)
		}
	}
	return strings.TrimSpace(b.String())
}

// waitListener waits (bounded) until the listener's totals count in
// frames received and out frames sent: the counters move just after the
// bytes, so a peer can read its ACK a moment before it is counted.
func (e *env) waitListener(ctx context.Context, id string, in, out int64) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := e.svc.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: id})
		if err != nil {
			e.t.Fatalf("GetListener %s: %v", id, err)
		}
		k := resp.GetListener().GetStatus().GetConnectionTotals()
		if k.GetReceivedFrameCount() == in && k.GetSentFrameCount() == out {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("listener %s: %d frames in and %d out, want %d and %d", id, k.GetReceivedFrameCount(), k.GetSentFrameCount(), in, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
