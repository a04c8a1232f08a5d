package syslog_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/switchboard-dev/switchboard/internal/syslog"
	"github.com/switchboard-dev/switchboard/internal/tlstest"
)

// parsed is an RFC 5424 message as the test collector reads it.
type parsed struct {
	pri                                 int
	timestamp, host, app, procID, msgID string
	sdID                                string
	params                              []syslog.Param
	msg                                 string
}

// parseMessage parses what Format writes, strictly: it is the test's
// check that the output is RFC 5424.
func parseMessage(b []byte) (parsed, error) {
	var p parsed
	s := string(b)
	if !strings.HasPrefix(s, "<") {
		return p, errors.New("no PRI")
	}
	end := strings.IndexByte(s, '>')
	if end < 2 {
		return p, errors.New("bad PRI")
	}
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri > 191 {
		return p, fmt.Errorf("bad PRI %q", s[1:end])
	}
	p.pri = pri
	s = s[end+1:]
	if !strings.HasPrefix(s, "1 ") {
		return p, errors.New("not version 1")
	}
	s = s[2:]
	fields := strings.SplitN(s, " ", 6)
	if len(fields) != 6 {
		return p, errors.New("short header")
	}
	for _, f := range fields[:5] {
		for i := 0; i < len(f); i++ {
			if f[i] < 33 || f[i] > 126 {
				return p, fmt.Errorf("header field %q not printable ASCII", f)
			}
		}
	}
	p.timestamp, p.host, p.app, p.procID, p.msgID = fields[0], fields[1], fields[2], fields[3], fields[4]
	if _, err := time.Parse(time.RFC3339Nano, p.timestamp); err != nil {
		return p, fmt.Errorf("timestamp: %v", err)
	}
	s = fields[5]
	if strings.HasPrefix(s, "-") {
		s = s[1:]
	} else {
		if !strings.HasPrefix(s, "[") {
			return p, errors.New("no structured data")
		}
		s = s[1:]
		i := strings.IndexAny(s, " ]")
		if i < 0 {
			return p, errors.New("unterminated SD-ID")
		}
		p.sdID = s[:i]
		s = s[i:]
		for strings.HasPrefix(s, " ") {
			s = s[1:]
			eq := strings.Index(s, `="`)
			if eq < 1 {
				return p, errors.New("bad SD-PARAM")
			}
			name := s[:eq]
			if strings.ContainsAny(name, ` ="]`) {
				return p, fmt.Errorf("bad SD-NAME %q", name)
			}
			s = s[eq+2:]
			var v strings.Builder
			for {
				if s == "" {
					return p, errors.New("unterminated PARAM-VALUE")
				}
				c := s[0]
				if c == '\\' && len(s) > 1 && (s[1] == '"' || s[1] == '\\' || s[1] == ']') {
					v.WriteByte(s[1])
					s = s[2:]
					continue
				}
				if c == '"' {
					s = s[1:]
					break
				}
				if c == ']' || c == '\\' {
					return p, fmt.Errorf("unescaped %q in PARAM-VALUE", c)
				}
				v.WriteByte(c)
				s = s[1:]
			}
			if !utf8.ValidString(v.String()) {
				return p, errors.New("PARAM-VALUE not UTF-8")
			}
			p.params = append(p.params, syslog.Param{Name: name, Value: v.String()})
		}
		if !strings.HasPrefix(s, "]") {
			return p, errors.New("unterminated SD-ELEMENT")
		}
		s = s[1:]
	}
	if s != "" {
		msg, ok := strings.CutPrefix(s, " \ufeff")
		if !ok {
			return p, errors.New("MSG without BOM")
		}
		p.msg = msg
	}
	return p, nil
}

// collector is a TLS syslog receiver on loopback reading RFC 5425 frames.
type collector struct {
	t      *testing.T
	ln     net.Listener
	mu     sync.Mutex
	got    []parsed
	conns  int
	notify chan struct{}
	wg     sync.WaitGroup
	// closeAfter: close each connection after this many frames (0: never).
	closeAfter int
}

func newCollector(t *testing.T, ca *tlstest.CA, closeAfter int) *collector {
	leaf := ca.Issue(t, tlstest.LeafOptions{CommonName: "collector", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlstest.ServerConfig(leaf, nil))
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{t: t, ln: ln, notify: make(chan struct{}, 1000), closeAfter: closeAfter}
	c.wg.Add(1)
	go c.accept()
	t.Cleanup(func() { _ = ln.Close(); c.wg.Wait() })
	return c
}

func (c *collector) accept() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns++
		c.mu.Unlock()
		c.wg.Add(1)
		go c.read(conn)
	}
}

func (c *collector) read(conn net.Conn) {
	defer c.wg.Done()
	defer conn.Close()
	go func() { <-c.t.Context().Done(); conn.Close() }()
	r := bufio.NewReader(conn)
	for n := 0; c.closeAfter == 0 || n < c.closeAfter; n++ {
		lenStr, err := r.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSuffix(lenStr, " "))
		if err != nil || size <= 0 {
			c.t.Errorf("bad frame length %q", lenStr)
			return
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		p, err := parseMessage(buf)
		if err != nil {
			c.t.Errorf("frame %q: %v", buf, err)
			return
		}
		c.mu.Lock()
		c.got = append(c.got, p)
		c.mu.Unlock()
		c.notify <- struct{}{}
	}
}

// wait returns once n messages have arrived.
func (c *collector) wait(ctx context.Context, n int) []parsed {
	for {
		c.mu.Lock()
		if len(c.got) >= n {
			out := append([]parsed(nil), c.got...)
			c.mu.Unlock()
			return out
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-ctx.Done():
			c.t.Fatalf("only %d of %d messages arrived", len(c.got), n)
		}
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestWriterDelivers(t *testing.T) {
	ca := tlstest.NewCA(t, "syslog CA")
	col := newCollector(t, ca, 0)
	w, err := syslog.Dial(syslog.Config{Addr: col.ln.Addr().String(), TLS: tlstest.ClientConfig(ca, nil, "127.0.0.1"), Hostname: "sb host", AppName: "switchboard"})
	if err != nil {
		t.Fatal(err)
	}
	tricky := "quote\" backslash\\ bracket] end \xff"
	at := time.Date(2026, 12, 2, 5, 0, 0, 123456000, time.UTC)
	w.Write(syslog.Message{Time: at, Severity: syslog.SeverityWarning, MsgID: "audit", SDID: "audit@32473",
		Params: []syslog.Param{{Name: "who", Value: "token:ops"}, {Name: "detail", Value: tricky}}, Msg: "denied ünïcode"})
	w.Write(syslog.Message{Severity: syslog.SeverityInfo, Msg: "no structured data"})
	ctx := testCtx(t)
	got := col.wait(ctx, 2)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m := got[0]
	if m.pri != 13*8+4 || m.timestamp != "2026-12-02T05:00:00.123456Z" || m.host != "sb_host" || m.app != "switchboard" || m.msgID != "audit" || m.sdID != "audit@32473" {
		t.Errorf("header %+v", m)
	}
	if len(m.params) != 2 || m.params[0] != (syslog.Param{Name: "who", Value: "token:ops"}) || m.params[1].Value != strings.ToValidUTF8(tricky, "\ufffd") {
		t.Errorf("params %q", m.params)
	}
	if m.msg != "denied ünïcode" {
		t.Errorf("msg %q", m.msg)
	}
	if got[1].sdID != "" || got[1].msg != "no structured data" || got[1].msgID != "-" {
		t.Errorf("second %+v", got[1])
	}
	if w.Sent() != 2 || w.Dropped() != 0 {
		t.Errorf("sent %d dropped %d", w.Sent(), w.Dropped())
	}
}

func TestWriterReconnects(t *testing.T) {
	ca := tlstest.NewCA(t, "syslog CA")
	// The collector hangs up after every frame: the writer must reconnect
	// for each further one. A frame written on a connection the collector
	// is closing can be lost (syslog over TCP has no acknowledgements), so
	// the test keeps writing until messages arrived on three connections.
	col := newCollector(t, ca, 1)
	w, err := syslog.Dial(syslog.Config{Addr: col.ln.Addr().String(), TLS: tlstest.ClientConfig(ca, nil, "127.0.0.1"), MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for i := 0; ; i++ {
		w.Write(syslog.Message{Severity: syslog.SeverityInfo, SDID: "audit@32473", Params: []syslog.Param{{Name: "n", Value: strconv.Itoa(i)}}})
		col.mu.Lock()
		n := len(col.got)
		col.mu.Unlock()
		if n >= 3 {
			break
		}
		select {
		case <-col.notify:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("messages did not arrive after reconnecting")
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Logf("close: %v", err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.conns < 3 {
		t.Errorf("%d connections for %d messages that each ended one", col.conns, len(col.got))
	}
}

func TestWriterDropsWhenFullAndCloseCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: every connection attempt fails
	ca := tlstest.NewCA(t, "syslog CA")
	w, err := syslog.Dial(syslog.Config{Addr: addr, TLS: tlstest.ClientConfig(ca, nil, "127.0.0.1"), QueueSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		w.Write(syslog.Message{Msg: "x"})
	}
	if d := w.Dropped(); d < 2 {
		t.Errorf("dropped %d of 5 with a queue of 2", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no time to flush
	if err := w.Close(ctx); !errors.Is(err, syslog.ErrClosed) {
		t.Errorf("Close: %v, want ErrClosed", err)
	}
	if d := w.Dropped(); d != 5 {
		t.Errorf("dropped %d, want all 5 after Close", d)
	}
	w.Write(syslog.Message{Msg: "after close"})
	if d := w.Dropped(); d != 6 {
		t.Errorf("write after Close: dropped %d", d)
	}
}

func TestCloseFlushes(t *testing.T) {
	ca := tlstest.NewCA(t, "syslog CA")
	col := newCollector(t, ca, 0)
	w, err := syslog.Dial(syslog.Config{Addr: col.ln.Addr().String(), TLS: tlstest.ClientConfig(ca, nil, "127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		w.Write(syslog.Message{Msg: strconv.Itoa(i)})
	}
	ctx := testCtx(t)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got := col.wait(ctx, n)
	for i, m := range got {
		if m.msg != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, m.msg)
		}
	}
}

func TestDialErrors(t *testing.T) {
	for _, c := range []syslog.Config{{}, {Addr: "nohost"}, {Addr: "127.0.0.1:6514"}, {Addr: "127.0.0.1:6514", TLS: &tls.Config{}, Facility: 24}} {
		if _, err := syslog.Dial(c); err == nil {
			t.Errorf("Dial(%+v) succeeded", c)
		}
	}
}

func FuzzEscapeParamValue(f *testing.F) {
	for _, s := range []string{"", "plain", `a"b`, `a\b`, "a]b", `\"]`, "\xff\xfe", "ü\\]\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		b := syslog.Format(syslog.Message{Time: time.Unix(0, 0), SDID: "x@32473", Params: []syslog.Param{{Name: "v", Value: v}}}, 13, " h a 1 ")
		p, err := parseMessage(b)
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if len(p.params) != 1 || p.params[0].Value != strings.ToValidUTF8(v, "\ufffd") {
			t.Fatalf("value %q came back as %q", v, p.params)
		}
	})
}
