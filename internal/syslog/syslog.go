// Package syslog sends RFC 5424 syslog messages over TLS with RFC 5425
// octet-counting framing: the transport IHE ATNA asks audit records to
// take to an audit repository.
//
// A Writer never blocks its caller: messages go to a bounded queue that
// one goroutine writes, reconnecting with backoff when the collector is
// unreachable. A full queue drops messages, counted (Dropped) and logged.
package syslog

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Severity is an RFC 5424 severity.
type Severity int

// Severities used by audit records.
const (
	SeverityWarning Severity = 4
	SeverityNotice  Severity = 5
	SeverityInfo    Severity = 6
)

// FacilityLogAudit is RFC 5424 facility 13, "log audit".
const FacilityLogAudit = 13

// Param is one SD-PARAM.
type Param struct{ Name, Value string }

// Message is one syslog message.
type Message struct {
	Time     time.Time // zero: now
	Severity Severity
	MsgID    string // at most 32 printable ASCII characters; "-" if empty
	// SDID names the structured data element ("audit@32473"); empty: no
	// structured data.
	SDID   string
	Params []Param
	Msg    string // free text, UTF-8
}

// Config configures Dial.
type Config struct {
	// Addr is the collector's host:port (6514 is the RFC 5425 port).
	Addr string
	// TLS is the client configuration (RootCAs, ServerName, a client
	// certificate for mutual TLS). Required: plain TCP is not offered.
	TLS *tls.Config
	// Hostname and AppName go in every header; empty: os.Hostname and
	// "switchboard".
	Hostname, AppName string
	// Facility; 0 means FacilityLogAudit.
	Facility int
	// QueueSize bounds the messages waiting to be written; 0: 4096.
	QueueSize int
	// Logger gets connection failures and drops; nil discards them.
	Logger *slog.Logger
	// DialTimeout bounds one connection attempt with its handshake, and
	// WriteTimeout one write; 0: 10 s each.
	DialTimeout, WriteTimeout time.Duration
	// MaxBackoff bounds the wait between connection attempts, which starts
	// at 100 ms and doubles; 0: 30 s.
	MaxBackoff time.Duration
}

// ErrClosed is returned by Close when messages were left unsent at its
// deadline.
var ErrClosed = errors.New("syslog writer closed with messages unsent")

// Writer sends messages to one collector.
type Writer struct {
	cfg     Config
	header  string // " HOSTNAME APP-NAME PROCID "
	queue   chan []byte
	dropped atomic.Uint64
	sent    atomic.Uint64

	closing   chan struct{}
	closeOnce sync.Once
	ctx       context.Context // cancelled when Close gives up
	cancel    context.CancelFunc
	done      chan struct{}
	mu        sync.Mutex
	conn      net.Conn
	stopAfter func() bool // unregisters conn's cancellation hook
}

// Dial starts a Writer. It does not wait for the collector: connecting,
// and reconnecting after a failure, happen in the background.
func Dial(cfg Config) (*Writer, error) {
	if cfg.Addr == "" {
		return nil, errors.New("syslog: no collector address")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("syslog: collector address %q: %w", cfg.Addr, err)
	}
	if cfg.TLS == nil {
		return nil, errors.New("syslog: TLS configuration required (RFC 5425)")
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.AppName == "" {
		cfg.AppName = "switchboard"
	}
	if cfg.Facility == 0 {
		cfg.Facility = FacilityLogAudit
	}
	if cfg.Facility < 0 || cfg.Facility > 23 {
		return nil, fmt.Errorf("syslog: facility %d out of range 0-23", cfg.Facility)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Writer{
		cfg:     cfg,
		header:  " " + headerField(cfg.Hostname, 255) + " " + headerField(cfg.AppName, 48) + " " + strconv.Itoa(os.Getpid()) + " ",
		queue:   make(chan []byte, cfg.QueueSize),
		closing: make(chan struct{}),
		ctx:     ctx, cancel: cancel,
		done: make(chan struct{}),
	}
	go w.run()
	return w, nil
}

// Write queues m; it never blocks. After Close, or with the queue full,
// m is dropped and counted.
func (w *Writer) Write(m Message) {
	select {
	case <-w.closing:
		w.dropped.Add(1)
		return
	default:
	}
	frame := w.frame(m)
	select {
	case w.queue <- frame:
	default:
		if w.dropped.Add(1) == 1 {
			w.cfg.Logger.Warn("syslog queue full: dropping audit records", "addr", w.cfg.Addr, "queue", w.cfg.QueueSize)
		}
	}
}

// Dropped is the number of messages dropped so far.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Sent is the number of messages written to a collector so far.
func (w *Writer) Sent() uint64 { return w.sent.Load() }

// Close stops taking messages and writes the queued ones, until ctx ends;
// then it closes the connection. Messages left count as dropped, and the
// error wraps ErrClosed.
func (w *Writer) Close(ctx context.Context) error {
	w.closeOnce.Do(func() { close(w.closing) })
	select {
	case <-w.done:
	case <-ctx.Done():
		w.cancel()
		<-w.done
	}
	w.cancel()
	if n := len(w.queue); n > 0 {
		w.dropped.Add(uint64(n))
		for len(w.queue) > 0 {
			<-w.queue
		}
		return fmt.Errorf("%w: %d messages", ErrClosed, n)
	}
	return nil
}

// frame formats m as an RFC 5425 frame: its length, a space, the message.
func (w *Writer) frame(m Message) []byte {
	msg := Format(m, w.cfg.Facility, w.header)
	return append(strconv.AppendInt(make([]byte, 0, len(msg)+8), int64(len(msg)), 10), append([]byte{' '}, msg...)...)
}

func (w *Writer) run() {
	defer close(w.done)
	var (
		pending []byte // a frame taken from the queue and not yet written
		backoff = 100 * time.Millisecond
		lastLog uint64
	)
	defer w.setConn(nil)
	for {
		if pending == nil {
			select {
			case pending = <-w.queue:
			case <-w.closing:
				select {
				case pending = <-w.queue:
				default:
					return // closing and drained
				}
			case <-w.ctx.Done():
				return
			}
		}
		conn := w.getConn()
		if conn == nil {
			c, err := w.dial()
			if err != nil {
				if w.ctx.Err() != nil {
					w.dropped.Add(1)
					return
				}
				w.cfg.Logger.Warn("syslog collector unreachable; retrying", "addr", w.cfg.Addr, "err", err, "retry_in", backoff, "dropped", w.dropped.Load())
				select {
				case <-time.After(backoff):
				case <-w.ctx.Done():
					w.dropped.Add(1)
					return
				}
				backoff = min(backoff*2, w.cfg.MaxBackoff)
				continue
			}
			backoff = 100 * time.Millisecond
			w.setConn(c)
			conn = c
		}
		_ = conn.SetWriteDeadline(time.Now().Add(w.cfg.WriteTimeout))
		if _, err := conn.Write(pending); err != nil {
			// The frame may have been written in part; the collector
			// drops a partial frame with the connection, so send it again
			// on the next one.
			w.cfg.Logger.Warn("syslog write failed; reconnecting", "addr", w.cfg.Addr, "err", err)
			w.setConn(nil)
			continue
		}
		pending = nil
		w.sent.Add(1)
		if d := w.dropped.Load(); d != lastLog {
			w.cfg.Logger.Warn("audit records were dropped (syslog queue full)", "addr", w.cfg.Addr, "dropped_total", d)
			lastLog = d
		}
	}
}

func (w *Writer) dial() (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: w.cfg.DialTimeout}, Config: w.cfg.TLS}
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.DialTimeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", w.cfg.Addr)
}

func (w *Writer) getConn() net.Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn
}

// setConn replaces the connection, closing the old one; a cancelled
// Writer's write is cut short by closing it.
func (w *Writer) setConn(c net.Conn) {
	var stop func() bool
	if c != nil {
		stop = context.AfterFunc(w.ctx, func() { _ = c.SetDeadline(time.Now()) })
	}
	w.mu.Lock()
	old, oldStop := w.conn, w.stopAfter
	w.conn, w.stopAfter = c, stop
	w.mu.Unlock()
	if oldStop != nil {
		oldStop()
	}
	if old != nil {
		_ = old.Close()
	}
}

// Format returns the RFC 5424 message:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID NAME="VALUE"...] MSG
//
// header is " HOSTNAME APP-NAME PROCID " already checked. Header fields
// are printable ASCII (others become '_'), SD-PARAM values escape '"',
// '\' and ']' and replace invalid UTF-8, and the free text is UTF-8 after
// a BOM, as RFC 5424 asks.
func Format(m Message, facility int, header string) []byte {
	t := m.Time
	if t.IsZero() {
		t = time.Now()
	}
	var b strings.Builder
	b.WriteByte('<')
	b.WriteString(strconv.Itoa(facility*8 + int(m.Severity&7)))
	b.WriteString(">1 ")
	b.WriteString(t.UTC().Format("2006-01-02T15:04:05.000000Z"))
	b.WriteString(header)
	b.WriteString(headerField(m.MsgID, 32))
	b.WriteByte(' ')
	if m.SDID == "" {
		b.WriteByte('-')
	} else {
		b.WriteByte('[')
		b.WriteString(sdName(m.SDID))
		for _, p := range m.Params {
			b.WriteByte(' ')
			b.WriteString(sdName(p.Name))
			b.WriteString(`="`)
			b.WriteString(EscapeParamValue(p.Value))
			b.WriteByte('"')
		}
		b.WriteByte(']')
	}
	if m.Msg != "" {
		b.WriteString(" \ufeff")
		b.WriteString(strings.ToValidUTF8(m.Msg, "\ufffd"))
	}
	return []byte(b.String())
}

// EscapeParamValue escapes an SD-PARAM value (RFC 5424 section 6.3.3):
// '"', '\' and ']' get a backslash; invalid UTF-8 becomes U+FFFD.
func EscapeParamValue(v string) string {
	v = strings.ToValidUTF8(v, "\ufffd")
	if !strings.ContainsAny(v, "\"\\]") {
		return v
	}
	var b strings.Builder
	for _, r := range v {
		if r == '"' || r == '\\' || r == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// headerField is a header field: printable ASCII, at most n bytes, "-"
// when empty.
func headerField(s string, n int) string {
	if s == "" {
		return "-"
	}
	b := []byte(s)
	if len(b) > n {
		b = b[:n]
	}
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	return string(b)
}

// sdName is an SD-ID or SD-NAME: printable ASCII but '=', ' ', ']' and
// '"', at most 32 bytes.
func sdName(s string) string {
	b := []byte(headerField(s, 32))
	for i, c := range b {
		if c == '=' || c == ']' || c == '"' {
			b[i] = '_'
		}
	}
	return string(b)
}
