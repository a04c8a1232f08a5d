package main

// send: messages from files, a directory or stdin, each waiting for its
// acknowledgement, with a progress bar and a summary.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

const sendLong = `send writes messages on a connection and waits for each one's
acknowledgement, one after the other, in order: an outbound connection
(switchboard connect) or an inbound one (to answer a peer that connected).

The messages come from files, the files of a directory (in name order, not
recursively, skipping dot files), or standard input ("-", or no argument when
it is not a terminal). A file holding HL7 is split into one message per MSH
segment (--split auto, the default; none sends each file whole), and its line
ends (\n, \r\n) become the \r HL7 wants, unless --raw.

With one message it prints the outcome and the peer's ACK. With more, a
progress bar on a terminal, and a summary: messages sent, outcomes by code,
the rate and the latency of the calls (p50, p99); each message that was not
accepted is reported on stderr. -o json prints one object per message,
{"source": ..., "response": SendResponse} or {"source": ..., "error": {...}},
then {"summary": {...}}.

The exit code says how it went (see "switchboard --help"): 0 when every
message was accepted (or written, or queued), 7 when one was rejected, 8 when
one is in doubt, 9 when one was not sent.`

// sendItem is one message to send and where it came from.
type sendItem struct {
	source  string
	payload []byte
}

// sendClass is how a message's send ended, from best to worst for the exit
// code's precedence.
type sendClass int

const (
	sendOK sendClass = iota
	sendRejected
	sendNotSent
	sendFailed // another error; its own exit code
	sendInDoubt
)

func newSendCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	var (
		split            string
		raw, queued      bool
		failFast, stopOn bool
		noProgress       bool
		ackTimeout       time.Duration
		idemKey          string
	)
	cmd := &cobra.Command{
		Use:   "send CONNECTION [FILE|DIR|-]...",
		Short: "Send messages on a connection and wait for their ACKs",
		Long:  sendLong,
		Example: `  switchboard send lab msg.hl7
  switchboard send lab messages/            # every file, in name order
  switchboard send lab batch.hl7            # several messages, split on MSH
  cat msg.hl7 | switchboard send lab
  switchboard send lab msg.hl7 --queued     # into the outbox, delivered with retries`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usageError(cmd, "give the CONNECTION to send on, then files, directories or - for stdin")
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return completeIDs(env, o, false, true)(cmd, args, toComplete)
			}
			return nil, cobra.ShellCompDirectiveDefault
		},
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			switch split {
			case "auto", "msh", "none":
			default:
				return usageError(cmd, "--split %q: want auto, msh or none", split)
			}
			paths := args[1:]
			if len(paths) == 0 {
				if isTerminal(env.stdin) {
					return usageError(cmd, "no message: give files, a directory, or - to read standard input")
				}
				paths = []string{"-"}
			}
			items, err := readMessages(env.stdin, paths, split, raw)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if len(items) == 0 {
				return &exitError{code: exitUsage, err: errors.New("no message to send: the input is empty")}
			}
			if idemKey != "" && (!queued || len(items) > 1) {
				return usageError(cmd, "--idempotency-key needs --queued and a single message")
			}
			if queued && cmd.Flags().Changed("ack-timeout") {
				return usageError(cmd, "--ack-timeout does not apply to --queued sends (the outbox uses the connection's)")
			}
			s := &sender{c: c, conn: args[0], queued: queued, failFast: failFast, idemKey: idemKey, stopOnFailure: stopOn}
			if cmd.Flags().Changed("ack-timeout") {
				s.ackTimeout = durationpb.New(ackTimeout)
			}
			if len(items) > 1 && !noProgress && !c.json() && isTerminal(env.stderr) {
				s.bar = progressbar.NewOptions(len(items),
					progressbar.OptionSetWriter(env.stderr),
					progressbar.OptionSetDescription("sending"),
					progressbar.OptionShowCount(),
					progressbar.OptionShowIts(),
					progressbar.OptionSetItsString("msg"),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish(),
				)
			}
			return s.run(ctx, items)
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&split, "split", "auto", "auto: split HL7 files into one message per MSH segment; msh: always; none: one message per file")
	fs.BoolVar(&raw, "raw", false, "send the bytes as they are (no line-end conversion, no trimming)")
	fs.DurationVar(&ackTimeout, "ack-timeout", 0, "how long each message's write and ACK may take (default: the connection's)")
	fs.BoolVar(&queued, "queued", false, "store each message in the connection's outbox and return at once; Switchboard delivers it with retries (see 'switchboard messages')")
	fs.StringVar(&idemKey, "idempotency-key", "", "--queued: a key that makes a retried send store the message only once")
	fs.BoolVar(&failFast, "fail-fast", false, "fail at once (not sent) when the connection is not open, instead of waiting for it to reconnect")
	fs.BoolVar(&stopOn, "stop-on-failure", false, "stop at the first message that is not accepted")
	fs.BoolVar(&noProgress, "no-progress", false, "no progress bar (there is none when stderr is not a terminal)")
	return clientCmd(cmd, o)
}

// readMessages reads and splits the messages of paths ("-": stdin).
func readMessages(stdin io.Reader, paths []string, split string, raw bool) ([]sendItem, error) {
	var items []sendItem
	add := func(source string, data []byte) {
		msgs := splitMessages(data, split)
		for i, m := range msgs {
			if !raw {
				m = normalizeHL7(m)
			}
			if len(m) == 0 {
				continue
			}
			src := source
			if len(msgs) > 1 {
				src = fmt.Sprintf("%s#%d", source, i+1)
			}
			items = append(items, sendItem{source: src, payload: m})
		}
	}
	for _, p := range paths {
		if p == "-" {
			b, err := io.ReadAll(io.LimitReader(stdin, 1<<30))
			if err != nil {
				return nil, fmt.Errorf("standard input: %w", err)
			}
			add("stdin", b)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			add(p, b)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
				continue
			}
			f := filepath.Join(p, e.Name())
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			add(f, b)
		}
	}
	return items, nil
}

// isHL7 reports whether data starts with an MSH segment (after MLLP's
// start byte and blank space, which editors and captures leave).
func isHL7(data []byte) bool {
	d := bytes.TrimLeft(data, "\x0b\r\n\t \ufeff")
	d = bytes.TrimPrefix(d, []byte("\xef\xbb\xbf"))
	return bytes.HasPrefix(d, []byte("MSH"))
}

// splitMessages cuts data before every line that starts with MSH (split
// msh, or auto on HL7), dropping pieces of blank space only; otherwise it
// is one message.
func splitMessages(data []byte, split string) [][]byte {
	if split == "none" || (split == "auto" && !isHL7(data)) {
		return [][]byte{data}
	}
	var out [][]byte
	for _, chunk := range cutOnMSH(data) {
		if len(bytes.Trim(chunk, "\x0b\x1c\r\n\t ")) > 0 {
			out = append(out, chunk)
		}
	}
	return out
}

// cutOnMSH cuts data before each MSH that starts a line (or follows
// MLLP's start byte); the pieces, joined, are data.
func cutOnMSH(data []byte) [][]byte {
	var out [][]byte
	start := 0
	for i := 1; i+3 <= len(data); i++ {
		if (data[i-1] == '\r' || data[i-1] == '\n' || data[i-1] == 0x0b) && string(data[i:i+3]) == "MSH" {
			out = append(out, data[start:i])
			start = i
		}
	}
	if start < len(data) {
		out = append(out, data[start:])
	}
	return out
}

// normalizeHL7 makes an HL7 message from a file what the wire wants:
// segments ended by \r (not \n or \r\n), MLLP bytes and blank lines at
// either end trimmed, one final \r. Other payloads are left alone.
func normalizeHL7(m []byte) []byte {
	if !isHL7(m) {
		return m
	}
	m = bytes.TrimPrefix(bytes.TrimLeft(m, "\x0b\r\n\t "), []byte("\xef\xbb\xbf"))
	m = bytes.ReplaceAll(m, []byte("\r\n"), []byte("\r"))
	m = bytes.ReplaceAll(m, []byte("\n"), []byte("\r"))
	m = bytes.TrimRight(m, "\x0b\x1c\r\t ")
	for bytes.Contains(m, []byte("\r\r")) {
		m = bytes.ReplaceAll(m, []byte("\r\r"), []byte("\r"))
	}
	return append(m, '\r')
}

// sender sends items one after the other and keeps the tally.
type sender struct {
	c             *client
	conn          string
	queued        bool
	failFast      bool
	idemKey       string
	ackTimeout    *durationpb.Duration
	stopOnFailure bool
	bar           *progressbar.ProgressBar

	outcomes  map[string]int
	latencies []time.Duration
	worst     sendClass
	worstCode int
	failed    int
}

func (s *sender) run(ctx context.Context, items []sendItem) error {
	s.outcomes = map[string]int{}
	w := s.c.env.stdout
	start := time.Now()
	sent := 0
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		req := &switchboardv1.SendRequest{ConnectionId: s.conn, Payload: it.payload, AckTimeout: s.ackTimeout, Queued: s.queued, FailFast: s.failFast, IdempotencyKey: s.idemKey}
		cctx, cancel := s.c.call(ctx)
		t0 := time.Now()
		resp, err := s.c.api.Send(cctx, req)
		cancel()
		s.latencies = append(s.latencies, time.Since(t0))
		sent++
		class, key, code := classifySend(resp, err)
		s.outcomes[key]++
		if class > s.worst || (class == s.worst && class == sendFailed && code > s.worstCode) {
			s.worst, s.worstCode = class, code
		}
		if class != sendOK {
			s.failed++
		}
		if s.bar != nil {
			if class != sendOK {
				_ = s.bar.Clear()
			}
			_ = s.bar.Add(1)
		}
		if err := s.report(it, resp, err, class, len(items) == 1); err != nil {
			return err
		}
		if class != sendOK && (s.stopOnFailure || fatalSendError(err)) {
			if isConnectError(err) {
				fmt.Fprintln(s.c.env.stderr, "Is `switchboard serve` running there? Set --server or SWITCHBOARD_SERVER.")
			}
			break
		}
	}
	elapsed := time.Since(start)
	if s.bar != nil {
		_ = s.bar.Finish()
	}
	if len(items) > 1 {
		if err := s.summary(w, sent, len(items), elapsed); err != nil {
			return err
		}
	}
	if ctx.Err() != nil && sent < len(items) {
		return &exitError{code: exitFailure, err: fmt.Errorf("interrupted after %d of %d messages", sent, len(items))}
	}
	switch s.worst {
	case sendRejected:
		return &exitError{code: exitRejected}
	case sendNotSent:
		return &exitError{code: exitNotSent}
	case sendFailed:
		return &exitError{code: s.worstCode}
	case sendInDoubt:
		return &exitError{code: exitInDoubt}
	}
	return nil
}

// fatalSendError reports errors every later message would get too.
func fatalSendError(err error) bool {
	if err == nil {
		return false
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.NotFound, codes.Unauthenticated, codes.PermissionDenied, codes.Canceled:
		return true
	case codes.Unavailable:
		return sendFailureOf(st) == nil // the server, not the connection
	}
	return false
}

// sendFailureOf is the SendFailure detail of st, or nil.
func sendFailureOf(st *status.Status) *switchboardv1.SendFailure {
	for _, d := range st.Details() {
		if f, ok := d.(*switchboardv1.SendFailure); ok {
			return f
		}
	}
	return nil
}

// classifySend says how a send ended, under which key the summary counts
// it ("ACCEPTED AA", "IN_DOUBT ACK_TIMEOUT", "NOT_FOUND") and, for another
// error, its exit code.
func classifySend(resp *switchboardv1.SendResponse, err error) (sendClass, string, int) {
	if err == nil {
		key := enumName(resp.GetOutcome(), "SEND_OUTCOME_")
		if code := enumName(resp.GetAck().GetCode(), "ACK_CODE_"); code != "" {
			key += " " + code
		}
		if resp.GetOutcome() == switchboardv1.SendOutcome_SEND_OUTCOME_REJECTED {
			return sendRejected, key, exitRejected
		}
		return sendOK, key, exitOK
	}
	st, _ := status.FromError(err)
	if f := sendFailureOf(st); f != nil {
		cause := enumName(f.GetCause(), "SEND_FAILURE_CAUSE_")
		if f.GetWritten() {
			return sendInDoubt, "IN_DOUBT " + cause, exitInDoubt
		}
		return sendNotSent, "NOT_SENT " + cause, exitNotSent
	}
	switch errorReason(st) {
	case "IN_DOUBT":
		return sendInDoubt, "IN_DOUBT", exitInDoubt
	case "NOT_SENT":
		return sendNotSent, "NOT_SENT", exitNotSent
	}
	return sendFailed, st.Code().String(), exitCodeOf(err)
}

// report prints one message's result: in detail when it is the only one,
// on stderr when it was not accepted, as a JSON line with -o json.
func (s *sender) report(it sendItem, resp *switchboardv1.SendResponse, err error, class sendClass, only bool) error {
	env := s.c.env
	if s.c.json() {
		line := map[string]any{"source": it.source}
		if err == nil {
			line["response"] = protoRaw(resp)
		} else {
			st, _ := status.FromError(err)
			e := map[string]any{"code": st.Code().String(), "message": st.Message()}
			if r := errorReason(st); r != "" {
				e["reason"] = r
			}
			if f := sendFailureOf(st); f != nil {
				e["send_failure"] = protoRaw(f)
			}
			line["error"] = e
		}
		b, jerr := json.Marshal(line)
		if jerr != nil {
			return jerr
		}
		return writeJSON(env.stdout, b, true)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %s\n", it.source, describeError(err))
		return nil
	}
	if only {
		t := newTable(env.stdout, "MESSAGE", "OUTCOME", "ACK", "CONTROL ID", "ROUND TRIP", "MESSAGE ID", "TEXT")
		t.row(it.source, enumName(resp.GetOutcome(), "SEND_OUTCOME_"), enumName(resp.GetAck().GetCode(), "ACK_CODE_"), resp.GetSentControlId(),
			dur(resp.GetRoundTrip()), resp.GetMessageId(), resp.GetAck().GetText())
		return t.flush()
	}
	if class != sendOK {
		fmt.Fprintf(env.stderr, "%s: %s %s, control id %s: %s\n", it.source, enumName(resp.GetOutcome(), "SEND_OUTCOME_"),
			enumName(resp.GetAck().GetCode(), "ACK_CODE_"), resp.GetSentControlId(), resp.GetAck().GetText())
	}
	return nil
}

// summary prints the tally of a run of several messages.
func (s *sender) summary(w io.Writer, sent, total int, elapsed time.Duration) error {
	lat := slices.Clone(s.latencies)
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(q*float64(len(lat))))]
	}
	rate := 0.0
	if elapsed > 0 {
		rate = float64(sent) / elapsed.Seconds()
	}
	keys := make([]string, 0, len(s.outcomes))
	for k := range s.outcomes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if s.c.json() {
		b, err := json.Marshal(map[string]any{"summary": map[string]any{
			"messages": total, "sent": sent, "not_accepted": s.failed, "outcomes": s.outcomes,
			"seconds": elapsed.Seconds(), "rate_per_second": rate,
			"p50_ms": float64(p(0.50)) / 1e6, "p99_ms": float64(p(0.99)) / 1e6,
		}})
		if err != nil {
			return err
		}
		return writeJSON(w, b, true)
	}
	fmt.Fprintf(w, "Sent %d of %d messages in %v (%.1f/s), latency p50 %v, p99 %v\n", sent, total, roundDuration(elapsed), rate, roundDuration(p(0.50)), roundDuration(p(0.99)))
	t := newTable(w, "OUTCOME", "COUNT")
	for _, k := range keys {
		t.row(k, fmt.Sprint(s.outcomes[k]))
	}
	return t.flush()
}
