package bench

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStreamConfig describes the JetStream publish baseline: Conns
// goroutines, each publishing a Size-byte payload synchronously (waiting
// for its PubAck) to a fresh stream, back to back. It is the simplest
// correct client of the acknowledgement settings the cluster journal
// (journal/jsjournal) uses, so `serve --cluster` is judged against
// JetStream's own rate.
type JetStreamConfig struct {
	Target string // label for the result
	// URL is the NATS server URLs, comma-separated.
	URL string
	// Conns is the number of publishing goroutines, one publish in flight
	// each.
	Conns int
	// NATSConns is the number of NATS connections the goroutines are spread
	// over, round robin: 1 shares one connection (the default, and what the
	// journal does), Conns gives each its own.
	NATSConns int
	// Replicas of the stream (file storage).
	Replicas int
	// Size is the payload size in bytes.
	Size     int
	Duration time.Duration
	Warmup   time.Duration
	// Count stops after this many publishes in all, every one measured (no
	// warm-up), instead of after Duration.
	Count int
	// Stream names the stream; default: a new name per run. It is created
	// for the run and deleted afterwards, so it must not exist.
	Stream string
	// Timeout bounds each publish (zero: 5 s, the journal's AppendTimeout).
	Timeout time.Duration
	// Follow also runs what the journal runs besides its publishes: an
	// ordered, headers-only consumer of the stream from its start, whose
	// messages are counted and dropped. A diagnostic (what the follower
	// costs), not the baseline.
	Follow bool
}

// JetStream runs the publish baseline. Line by line (docs/performance.md):
// connect (NATSConns connections, nats.go defaults), create the stream
// (file storage, Replicas, limits retention, one subject), then per
// goroutine: js.PublishMsg(subject, payload, WithExpectStream(stream),
// WithRetryAttempts(0)) and wait for the PubAck, check that it names the
// stream and that its sequence is new; repeat. Nothing else: no
// consumer, no headers beyond the expected-stream one. The stream is
// deleted afterwards.
func JetStream(ctx context.Context, cfg JetStreamConfig) (Result, error) {
	cfg.Conns = max(cfg.Conns, 1)
	cfg.NATSConns = min(max(cfg.NATSConns, 1), cfg.Conns)
	cfg.Replicas = max(cfg.Replicas, 1)
	if cfg.Size <= 0 {
		cfg.Size = 260
	}
	if cfg.Duration <= 0 && cfg.Count <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Stream == "" {
		cfg.Stream = "bench-js-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if cfg.Target == "" {
		cfg.Target = fmt.Sprintf("jetstream-r%d", cfg.Replicas)
	}
	res := Result{Group: "jetstream", Target: cfg.Target, Conns: cfg.Conns, Size: cfg.Size,
		Note: fmt.Sprintf("R%d file stream, %d NATS connection(s)", cfg.Replicas, cfg.NATSConns)}

	jss := make([]jetstream.JetStream, cfg.NATSConns)
	for k := range jss {
		nc, err := nats.Connect(cfg.URL, nats.Name("switchboard bench jetstream"))
		if err != nil {
			return res, fmt.Errorf("connect to NATS %s: %w", cfg.URL, err)
		}
		defer nc.Close()
		if jss[k], err = jetstream.New(nc); err != nil {
			return res, err
		}
	}
	subject := "bench.jetstream." + cfg.Stream
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := jss[0].CreateStream(sctx, jetstream.StreamConfig{
		Name:      cfg.Stream,
		Subjects:  []string{subject},
		Storage:   jetstream.FileStorage,
		Replicas:  cfg.Replicas,
		Retention: jetstream.LimitsPolicy,
	})
	if err != nil {
		return res, fmt.Errorf("create stream %s (R%d): %w", cfg.Stream, cfg.Replicas, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = jss[0].DeleteStream(dctx, cfg.Stream)
	}()

	if cfg.Follow {
		res.Note += ", with a headers-only follower"
		cons, err := jss[0].OrderedConsumer(sctx, cfg.Stream, jetstream.OrderedConsumerConfig{HeadersOnly: true})
		if err != nil {
			return res, fmt.Errorf("follow stream %s: %w", cfg.Stream, err)
		}
		cc, err := cons.Consume(func(jetstream.Msg) {})
		if err != nil {
			return res, fmt.Errorf("follow stream %s: %w", cfg.Stream, err)
		}
		defer cc.Stop()
	}

	payloads := make([][]byte, cfg.Conns)
	last := make([]uint64, cfg.Conns)
	for w := range payloads {
		payloads[w] = bytes.Repeat([]byte("x"), cfg.Size)
	}
	elapsed, lats, errs := closedLoop(ctx, cfg.Conns, cfg.Count, cfg.Warmup, cfg.Duration, func(w, _ int) string {
		pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		ack, err := jss[w%len(jss)].PublishMsg(pctx, &nats.Msg{Subject: subject, Data: payloads[w]},
			jetstream.WithExpectStream(cfg.Stream), jetstream.WithRetryAttempts(0))
		switch {
		case err != nil:
			return "publish_error"
		case ack.Stream != cfg.Stream:
			return "wrong_stream"
		case ack.Duplicate || ack.Sequence <= last[w]:
			return "not_new"
		}
		last[w] = ack.Sequence
		return ""
	})
	return finish(res, elapsed, lats, errs, "no publish to "+cfg.URL+" was acknowledged")
}
