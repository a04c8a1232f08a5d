// Package console is Switchboard's read-only web console: HTML pages,
// rendered on the server with html/template, that show an operator the
// listeners and connections with their state, peers, counters, rates and
// last errors, the journal's figures, recent events, and the stored
// messages with filters. Every page works with JavaScript off (the pages
// carry no script at all, and their Content-Security-Policy forbids one);
// the overview reloads itself every few seconds with a meta refresh.
//
// The console changes nothing: it calls only the read methods of the API
// (ListListeners, ListConnections, ListConsumers, ListMessages,
// GetMessage), in process.
// Every string that comes from a message or a peer is untrusted and is
// escaped by html/template. Payloads are patient data: they are never on
// a page unless Config.ShowPayloads is set, and then only on a page of
// their own that a person opens with an explicit click.
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
)

// Prefix is the path the console is served under.
const Prefix = "/console/"

// callTimeout bounds the API calls of one page.
const callTimeout = 10 * time.Second

// Config configures the console.
type Config struct {
	// API is the in-process service (*service.Service): the console calls
	// its methods directly, with each request's context. Required.
	API switchboardv1.SwitchboardServiceServer
	// Events gives the recent events for the overview. Nil: the overview
	// says that events are not available.
	Events EventSource
	// Journal gives the journal's figures for the overview. A
	// journal.Journal satisfies it as it is. Nil: the journal panel says
	// its figures are not available.
	Journal JournalSource
	// ShowPayloads lets a message page link to the message's payload, shown
	// on a page of its own (a separate GET URL) after an explicit click.
	// False (the default): payloads are never shown. The console has no
	// authorization yet: with ShowPayloads, anyone who reaches the admin
	// address can read payloads (the pages say so).
	ShowPayloads bool
	// Logger receives the errors of rendering. Nil discards them.
	Logger *slog.Logger
	// Now is the clock (tests). Nil: time.Now.
	Now func() time.Time
}

// EventSource gives the latest events, for the overview's events panel.
type EventSource interface {
	// Recent returns up to n of the latest events, newest first.
	Recent(n int) []EventRow
}

// EventRow is one event as the console shows it. Every field is shown as
// text, escaped; none may carry payload bytes.
type EventRow struct {
	Time         string // when it happened, as the source formats it
	Kind         string // what happened (for example CONNECTION_CLOSED)
	ListenerID   string
	ConnectionID string
	Detail       string // reason, control id, error text
}

// JournalSource gives the journal's figures. Every journal.Journal has
// these methods, so the journal itself can be passed. A source that also
// has Stats() journal.Stats (as every journal.Journal does) gets its
// counters shown too.
type JournalSource interface {
	// FirstSeq is the oldest retained sequence (LastSeq+1 when empty).
	FirstSeq(ctx context.Context) (uint64, error)
	// LastSeq is the highest committed sequence, 0 when empty.
	LastSeq(ctx context.Context) (uint64, error)
	// Health is nil while appends work, else why they do not.
	Health() (error, <-chan struct{})
}

// journalStats is the optional part of a JournalSource.
type journalStats interface {
	Stats() journal.Stats
}

var _ JournalSource = journal.Journal(nil)

//go:embed templates/*.html
var templateFS embed.FS

// Handler returns the console. It serves GET (and HEAD) requests for paths
// under /console/, the full path, not stripped; mount it on the admin mux
// as
//
//	mux.Handle("/console/", console.Handler(cfg))
//
// Pages:
//
//	/console/                    overview: listeners, connections, journal, events (?refresh=0: no auto-refresh)
//	/console/messages            messages, with filters (control_id, message_type, since, until,
//	                             direction, state, connection_id, listener_id) and page_token
//	/console/message?id=ID       one message, without its payload
//	/console/message/payload?id=ID  its payload: only with Config.ShowPayloads, else 403
//
// Other methods get 405. The handler keeps the last counters of every
// listener and connection it showed (one small entry each), to show rates
// since the previous load of the overview; it is safe for concurrent use.
// It panics when cfg.API is nil.
func Handler(cfg Config) http.Handler {
	if cfg.API == nil {
		panic("console: Config.API is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &console{cfg: cfg, pages: parseTemplates(), rates: newSampler()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/{$}", c.overview)
	mux.HandleFunc("GET /console/messages", c.messages)
	mux.HandleFunc("GET /console/message", c.message)
	mux.HandleFunc("GET /console/message/payload", c.payload)
	mux.HandleFunc("GET /console/", c.notFound)
	return mux
}

type console struct {
	cfg   Config
	pages map[string]*template.Template
	rates *sampler
}

// page is what every page template gets.
type page struct {
	Title   string
	Now     string
	Refresh int // seconds; 0: none
	Nav     string
	// Error is a failure to show instead of (or above) the content.
	Error string
}

func parseTemplates() map[string]*template.Template {
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview.html", "messages.html", "message.html", "payload.html", "error.html"} {
		pages[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name))
	}
	return pages
}

// securityHeaders: no script may run, nothing is cached (the pages show
// control ids and, on request, payloads), no framing, no referrer.
func securityHeaders(h http.Header) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// render executes a page into a buffer first, so a template error is a
// clean 500 and not half a page.
func (c *console) render(w http.ResponseWriter, r *http.Request, code int, name string, data any) {
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout.html", data); err != nil {
		c.cfg.Logger.ErrorContext(r.Context(), "console: render", "page", name, "err", err)
		http.Error(w, "console: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	securityHeaders(w.Header())
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func (c *console) newPage(title, nav string) page {
	return page{Title: title, Nav: nav, Now: fmtTime(c.cfg.Now())}
}

type errorPage struct{ page }

func (c *console) notFound(w http.ResponseWriter, r *http.Request) {
	p := c.newPage("Not found", "")
	p.Error = "There is no console page at " + r.URL.Path + "."
	c.render(w, r, http.StatusNotFound, "error.html", errorPage{p})
}

// apiError is an API error for a page, and the HTTP status that fits it.
func apiError(what string, err error) (int, string) {
	st, _ := status.FromError(err)
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.Unavailable:
		code = http.StatusServiceUnavailable
	case codes.DeadlineExceeded, codes.Canceled:
		code = http.StatusGatewayTimeout
	case codes.FailedPrecondition:
		code = http.StatusConflict
	}
	if errors.Is(err, context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	return code, what + ": " + st.Code().String() + ": " + st.Message()
}

// sampler keeps, for each listener and connection shown, the counters of
// the previous render and when they were read, so a render can show the
// rate since the previous one. A rate needs two readings and the server has
// no state of its own between page loads: this is that state, in memory,
// one entry per row shown, replaced at every render (so rates are since the
// previous load of the overview by anyone).
type sampler struct {
	mu   sync.Mutex
	last map[string]sample
}

type sample struct {
	at      time.Time
	in, out int64
}

// rate is frames per second in and out since the previous sample; ok is
// false when there is none (first load, or counters that went down: a new
// session under a reused id).
type rate struct {
	in, out float64
	over    time.Duration
	ok      bool
}

func newSampler() *sampler { return &sampler{last: map[string]sample{}} }

// observe records the counters read at now for every key and returns the
// rate of each since its previous sample. Keys not in cur are forgotten.
func (s *sampler) observe(now time.Time, cur map[string]sample) map[string]rate {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]rate, len(cur))
	for k, c := range cur {
		c.at = now
		if p, ok := s.last[k]; ok {
			dt := now.Sub(p.at)
			if dt > 0 && c.in >= p.in && c.out >= p.out {
				out[k] = rate{
					in:   float64(c.in-p.in) / dt.Seconds(),
					out:  float64(c.out-p.out) / dt.Seconds(),
					over: dt,
					ok:   true,
				}
			}
		}
		cur[k] = c
	}
	s.last = cur
	return out
}
