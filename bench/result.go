// Package bench measures Switchboard and the baselines it is judged
// against: load generators (MLLP inbound, gRPC Send outbound, Receive
// delivery, idle connections), the baseline servers (a bare ACK-only server,
// a minimal durable server, a plain gRPC echo) and the storage engine's own
// synced-write rate. `switchboard bench` drives it.
//
// It never asserts timings; it reports them. Load only ever goes to the
// address it is given, and every run stops on its own after its duration or
// count.
package bench

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one measured configuration.
type Result struct {
	// Group is what was measured: inbound, outbound, receive, storage,
	// latency, idle, slow-receiver, queued, pipeline, restart, metrics.
	Group string `json:"group"`
	// Target is who was measured: switchboard, bare-ack, minimal-durable,
	// direct-tcp, grpc-echo, pebble-sync, journal-append, ...
	Target string `json:"target"`
	// Conns is the number of connections, writers or streams.
	Conns int `json:"conns"`
	// Calls is the number of concurrent calls when it differs from Conns.
	Calls int `json:"calls,omitempty"`
	// Size is the payload size in bytes.
	Size int `json:"size"`
	// OfferedRate is the paced load in messages/s (0: as fast as possible).
	OfferedRate float64 `json:"offered_rate,omitempty"`
	Msgs        uint64  `json:"msgs"`
	Seconds     float64 `json:"seconds"`
	// Rate is messages per second.
	Rate float64 `json:"rate"`
	// DeliveredRate is, for queued sends, the messages the peer accepted
	// per second, from the first call to the last acceptance.
	DeliveredRate float64 `json:"delivered_rate,omitempty"`
	// Latency percentiles in microseconds (0 when not measured).
	P50  float64 `json:"p50_us,omitempty"`
	P99  float64 `json:"p99_us,omitempty"`
	P999 float64 `json:"p999_us,omitempty"`
	// ServerCPU is the server process's CPU time per message in
	// microseconds (user+system), when the server is a separate process:
	// steadier than a rate on a shared machine.
	ServerCPU float64 `json:"server_cpu_us,omitempty"`
	// BytesPerConn is RSS growth per connection (idle group).
	BytesPerConn float64 `json:"bytes_per_conn,omitempty"`
	// Errors counts failures by kind.
	Errors map[string]uint64 `json:"errors,omitempty"`
	// Note says anything a reader needs to interpret the row.
	Note string `json:"note,omitempty"`
	// handled is, when set, every message the run handled, the unmeasured
	// ones included (ServerCPU is divided by it).
	handled uint64
}

// latencies collects per-message latencies; each worker owns one.
type latencies []time.Duration

// summarize fills r's rate and percentiles from merged samples.
func summarize(r *Result, elapsed time.Duration, all []latencies) {
	var merged []time.Duration
	for _, l := range all {
		merged = append(merged, l...)
	}
	r.Msgs = uint64(len(merged))
	r.Seconds = elapsed.Seconds()
	if r.Seconds > 0 {
		r.Rate = float64(r.Msgs) / r.Seconds
	}
	if len(merged) == 0 {
		return
	}
	slices.Sort(merged)
	pct := func(p float64) float64 {
		i := min(int(p*float64(len(merged))), len(merged)-1)
		return float64(merged[i].Nanoseconds()) / 1e3
	}
	r.P50, r.P99, r.P999 = pct(0.50), pct(0.99), pct(0.999)
}

// finish fills res from the workers' samples and errors; it is an error,
// worded by failure, when nothing succeeded.
func finish(res Result, elapsed time.Duration, lats []latencies, errs []errCounter, failure string) (Result, error) {
	summarize(&res, elapsed, lats)
	res.Errors = mergeErrors(errs)
	if res.Msgs == 0 {
		return res, fmt.Errorf("%s (errors: %s)", failure, errorsString(res.Errors))
	}
	return res, nil
}

// WriteTable prints results as an aligned table, grouped.
func WriteTable(w io.Writer, results []Result) error {
	rs := slices.Clone(results)
	slices.SortStableFunc(rs, func(a, b Result) int { return cmp.Compare(groupOrder(a.Group), groupOrder(b.Group)) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "group\ttarget\tconns\tcalls\tsize\toffered/s\tmsgs\tsecs\tmsgs/s\tdelivered/s\tp50 µs\tp99 µs\tp99.9 µs\tcpu µs/msg\tB/conn\terrors\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%d\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Group, r.Target, r.Conns, blank(float64(r.Calls)), r.Size, blank(r.OfferedRate), r.Msgs, r.Seconds, r.Rate, blank(r.DeliveredRate),
			blank(r.P50), blank(r.P99), blank(r.P999), blank(r.ServerCPU), blank(r.BytesPerConn), errorsString(r.Errors))
	}
	return tw.Flush()
}

func groupOrder(g string) int {
	if i := slices.Index(Groups, g); i >= 0 {
		return i
	}
	return len(Groups)
}

func blank(v float64) string {
	if v == 0 {
		return "-"
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func errorsString(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// errCounter counts errors by kind for one worker.
type errCounter map[string]uint64

func mergeErrors(all []errCounter) map[string]uint64 {
	out := map[string]uint64{}
	for _, e := range all {
		for k, v := range e {
			if v > 0 {
				out[k] += v
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
