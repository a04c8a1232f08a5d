package peersim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/switchboard-dev/switchboard/transport"
)

// SendConfig configures sending messages to a listening peer.
type SendConfig struct {
	// Address is the peer's "host:port".
	Address string
	// Framing and Ack are the wire settings; zero Kinds: MLLP and HL7.
	Framing transport.Framing
	Ack     AckMode
	// Rate is messages per second; 0: each message as soon as the previous
	// one is acknowledged.
	Rate float64
	// Timeout bounds each message's write and acknowledgement; 0: 10 s.
	Timeout time.Duration
	// ConnectTimeout bounds each connect; 0: 10 s.
	ConnectTimeout time.Duration
	// Logger receives the connection's logs; nil discards them.
	Logger *slog.Logger
	// OnResult, when set, is called after every message.
	OnResult func(Result)
}

// WithDefaults returns cfg with MLLP and HL7 acknowledgements where it has
// none; zero timeouts stay transport's defaults.
func (cfg SendConfig) WithDefaults() SendConfig {
	cfg.Framing = cfg.Framing.WithDefaults()
	if cfg.Ack.Kind == "" {
		cfg.Ack.Kind = AckHL7
	}
	return cfg
}

// Validate reports whether cfg (after WithDefaults) is usable; the address
// is checked when Send dials it.
func (cfg SendConfig) Validate() error {
	if err := cfg.Ack.Validate(cfg.Framing); err != nil {
		return err
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return errors.New("the rate must be a positive number of messages per second (or 0: as fast as answers come)")
	}
	if cfg.Timeout < 0 || cfg.ConnectTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	return nil
}

// Result is what became of one sent message.
type Result struct {
	Message Message
	// ControlID is the sent MSH-10 (HL7).
	ControlID string
	// Outcome is set when the peer answered (or, for the none mode, the
	// message was written); Code is the answer's code then.
	Outcome transport.Outcome
	Code    string
	// RoundTrip is from the start of the send (write included) to the
	// answer.
	RoundTrip time.Duration
	// Err is why there is no trustworthy answer: a *transport.SendError
	// (see InDoubt), an invalid payload or a failed connect.
	Err error
}

// Positive reports whether the message was accepted (or written, under
// the none mode).
func (r Result) Positive() bool {
	return r.Err == nil && (r.Outcome == transport.OutcomeAccepted || r.Outcome == transport.OutcomeWritten)
}

// InDoubt reports whether the message was written and no trustworthy
// answer came: it may or may not have been taken.
func (r Result) InDoubt() bool {
	var se *transport.SendError
	return errors.As(r.Err, &se) && se.Written
}

// Failure names why a message has no answer, e.g. "ack timeout" or "ack
// mismatch" (transport's causes), "invalid payload" or "connect failed".
func (r Result) Failure() string {
	var se *transport.SendError
	switch {
	case r.Err == nil:
		return ""
	case errors.As(r.Err, &se):
		return se.Cause.String()
	case errors.Is(r.Err, transport.ErrInvalidPayload):
		return "invalid payload"
	case errors.Is(r.Err, errConnect):
		return "connect failed"
	}
	return "error"
}

var errConnect = errors.New("connect failed")

// Report sums up a send.
type Report struct {
	Address  string         `json:"address"`
	Sent     int            `json:"sent"` // messages attempted
	Codes    map[string]int `json:"codes"`
	Accepted int            `json:"accepted"`
	Rejected int            `json:"rejected"`
	Written  int            `json:"written,omitempty"`
	InDoubt  int            `json:"in_doubt"`
	NotSent  int            `json:"not_sent"`
	// Failures counts messages without an answer by Result.Failure.
	Failures map[string]int `json:"failures,omitempty"`
	Elapsed  time.Duration  `json:"-"`
	Seconds  float64        `json:"seconds"`
	Rate     float64        `json:"rate"`
	// P50 and P99 are round-trip percentiles of the answered messages.
	P50     time.Duration `json:"-"`
	P99     time.Duration `json:"-"`
	P50Ms   float64       `json:"p50_ms"`
	P99Ms   float64       `json:"p99_ms"`
	results []time.Duration
}

// AllPositive reports whether every message was accepted (or written).
func (r *Report) AllPositive() bool { return r.Accepted+r.Written == r.Sent }

func (r *Report) add(res Result) {
	r.Sent++
	switch {
	case res.Err != nil:
		if res.InDoubt() {
			r.InDoubt++
		} else {
			r.NotSent++
		}
		r.Failures[res.Failure()]++
		return
	case res.Outcome == transport.OutcomeWritten:
		r.Written++
		return
	case res.Outcome == transport.OutcomeAccepted:
		r.Accepted++
	default:
		r.Rejected++
	}
	r.Codes[res.Code]++
	r.results = append(r.results, res.RoundTrip)
}

func (r *Report) finish(elapsed time.Duration) {
	r.Elapsed, r.Seconds = elapsed, elapsed.Seconds()
	if elapsed > 0 {
		r.Rate = math.Round(float64(r.Sent)/elapsed.Seconds()*10) / 10
	}
	slices.Sort(r.results)
	r.P50, r.P99 = percentile(r.results, 50), percentile(r.results, 99)
	r.P50Ms, r.P99Ms = ms(r.P50), ms(r.P99)
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// percentile is the nearest-rank percentile p of sorted ds; 0 when empty.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := (p*len(ds)+99)/100 - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// Send sends msgs one at a time, each after the previous one's answer (the
// MLLP rule), paced by cfg.Rate, and reports what came back. A message in
// doubt resets the connection (transport does); the next one is sent on a
// new connection. A connect that fails ends the send: the messages not
// tried count as not sent. Send returns early, with what it has, when ctx
// ends.
func Send(ctx context.Context, cfg SendConfig, msgs []Message) (*Report, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dial := transport.DialConfig{
		ID:      "peer",
		Address: cfg.Address,
		Conn: transport.ConnConfig{
			Framing: cfg.Framing, Ack: cfg.Ack.Policy(), AckTimeout: cfg.Timeout,
		},
		ConnectTimeout: cfg.ConnectTimeout,
		Sink:           discard{},
		Logger:         cfg.Logger,
	}
	var lim *rate.Limiter
	if cfg.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(cfg.Rate), 1)
	}
	rep := &Report{Address: cfg.Address, Codes: map[string]int{}, Failures: map[string]int{}}
	start := time.Now()
	defer func() { rep.finish(time.Since(start)) }()
	var conn *transport.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	for i, m := range msgs {
		if lim != nil {
			if err := lim.Wait(ctx); err != nil {
				return rep, nil
			}
		}
		if ctx.Err() != nil {
			return rep, nil
		}
		if conn != nil && conn.State() != transport.StateOpen {
			_ = conn.Close()
			conn = nil
		}
		if conn == nil {
			c, err := transport.Dial(ctx, dial)
			if err != nil {
				if errors.Is(err, transport.ErrInvalidConfig) {
					return rep, err
				}
				if ctx.Err() != nil {
					return rep, nil
				}
				for _, m := range msgs[i:] {
					res := Result{Message: m, Err: fmt.Errorf("%w: %w", errConnect, err)}
					rep.add(res)
					if f := cfg.OnResult; f != nil {
						f(res)
					}
				}
				return rep, err
			}
			conn = c
		}
		t0 := time.Now()
		sr, err := conn.Send(ctx, m.Payload, cfg.Timeout)
		if ctx.Err() != nil && err != nil {
			return rep, nil // interrupted: this message is not counted
		}
		// The round trip as a client sees it: from handing the message over
		// to having its answer, the write included.
		res := Result{Message: m, ControlID: sr.SentControlID, Outcome: sr.Outcome, RoundTrip: time.Since(t0), Err: err}
		var se *transport.SendError
		if errors.As(err, &se) {
			res.ControlID = se.ControlID
		}
		if sr.Ack.Code != 0 {
			res.Code = sr.Ack.Code.String()
		}
		switch sr.Ack.Code {
		case transport.AckByteACK, transport.AckFixedACK:
			res.Code = "ACK"
		case transport.AckByteNAK, transport.AckFixedNAK:
			res.Code = "NAK"
		}
		rep.add(res)
		if f := cfg.OnResult; f != nil {
			f(res)
		}
	}
	return rep, nil
}

// discard takes what the listening peer sends on its own initiative (an
// application ACK, say) and lets transport acknowledge it.
type discard struct{}

func (discard) Append(context.Context, *transport.Message) (uint64, error) { return 0, nil }
