package main

// switchboard peer: the test peer of internal/peersim on the command line.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/switchboard-dev/switchboard/internal/peersim"
	"github.com/switchboard-dev/switchboard/transport"
)

// Exit codes of `peer send`, the same as `switchboard send`'s: the most
// serious wins, in doubt, then unreachable, then not sent, then rejected.
const (
	peerExitUnavailable = 6
	peerExitRejected    = 7
	peerExitInDoubt     = 8
	peerExitNotSent     = 9
)

const peerLong = `A stand-in for the system on the other end of a Switchboard listener or
connection, for trying an integration before the real peer is there, and
for seeing what Switchboard does when a peer misbehaves.

  peer listen ADDR   accept connections and answer each message as a
                     scenario says: AA, AE, AR, CA, CE, CR, a NAK, late,
                     never, with the wrong MSA-2, or by closing or
                     resetting the connection
  peer send ADDR FILE|DIR...
                     send messages, at a rate if asked, and report the
                     ACKs: counts by code, round-trip p50 and p99

Both speak MLLP with HL7 ACKs unless told otherwise (--framing, --ack), with
Switchboard's own framing and acknowledgement code. Nothing they print or log
holds message content: control ids and message types at most.

See docs/peer.md.`

// newPeerCmd is `switchboard peer`.
func newPeerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peer",
		Short: "A test peer: answer as a scenario says, or send messages and report the ACKs",
		Long:  peerLong,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var output string
	cmd.PersistentFlags().StringVarP(&output, "output", "o", "table", "output: table for people, json (one object per line) for scripts")
	cmd.AddCommand(newPeerListenCmd(&output), newPeerSendCmd(&output))
	return cmd
}

// peerWire is the framing and acknowledgement flags of both subcommands.
type peerWire struct {
	framing, delimiter, start, end string
	strict                         bool
	maxFrameBytes                  int
	ack, fixedACK, fixedNAK        string
	fs                             *pflag.FlagSet
}

func (w *peerWire) register(fs *pflag.FlagSet) {
	w.fs = fs
	fs.StringVar(&w.framing, "framing", "mllp", "framing: mllp, length-prefix, delimiter or start-end")
	fs.StringVar(&w.delimiter, "delimiter", "", `delimiter framing's delimiter, Go escapes allowed (e.g. '\n'); implies --framing delimiter`)
	fs.StringVar(&w.start, "start", "", `start-end framing's start bytes (e.g. '\x02'); implies --framing start-end`)
	fs.StringVar(&w.end, "end", "", `start-end framing's end bytes (e.g. '\x03')`)
	fs.BoolVar(&w.strict, "strict", false, "strict MLLP or start-end framing: bytes outside frames are errors")
	fs.IntVar(&w.maxFrameBytes, "max-frame-bytes", 0, "largest frame read (default 4 MiB)")
	fs.StringVar(&w.ack, "ack", "hl7", "acknowledgements: hl7, single-byte, mllp-commit, fixed or none")
	fs.StringVar(&w.fixedACK, "fixed-ack", "", "fixed ack mode's ACK payload, Go escapes allowed; implies --ack fixed")
	fs.StringVar(&w.fixedNAK, "fixed-nak", "", "fixed ack mode's NAK payload")
}

func (w *peerWire) changed(name string) bool { return w.fs.Changed(name) }

// resolve returns the framing and ack mode: flags given on the command line,
// else the scenario's, else the defaults.
func (w *peerWire) resolve(sc *peersim.Scenario) (transport.Framing, peersim.AckMode, error) {
	var f transport.Framing
	var mode peersim.AckMode
	if sc != nil && sc.Framing != nil {
		f = *sc.Framing
	}
	if sc != nil && sc.Ack != nil {
		mode = *sc.Ack
	}
	framingFlags := w.changed("framing") || w.changed("delimiter") || w.changed("start") || w.changed("end") || w.changed("strict")
	if framingFlags || f.Kind == 0 {
		kind := w.framing
		switch {
		case w.changed("framing"):
		case w.delimiter != "":
			kind = "delimiter"
		case w.start != "" || w.end != "":
			kind = "start-end"
		case f.Kind != 0:
			kind = f.Kind.String()
		}
		k, err := peersim.ParseFramingKind(kind)
		if err != nil {
			return f, mode, fmt.Errorf("--framing: %w", err)
		}
		f = transport.Framing{Kind: k, Strict: w.strict}
		for _, m := range []struct {
			flag, val string
			dst       *[]byte
		}{{"delimiter", w.delimiter, &f.Delimiter}, {"start", w.start, &f.Start}, {"end", w.end, &f.End}} {
			if m.val == "" {
				continue
			}
			b, err := peersim.Unescape(m.val)
			if err != nil {
				return f, mode, fmt.Errorf("--%s: %w", m.flag, err)
			}
			*m.dst = b
		}
	}
	if w.changed("max-frame-bytes") {
		f.MaxFrameBytes = w.maxFrameBytes
	}
	if err := f.Validate(); err != nil {
		return f, mode, errors.New(strings.TrimPrefix(err.Error(), "transport: "))
	}
	if w.changed("ack") || w.changed("fixed-ack") || w.changed("fixed-nak") || mode.Kind == "" {
		kind := w.ack
		if !w.changed("ack") && w.fixedACK != "" {
			kind = string(peersim.AckFixed)
		} else if !w.changed("ack") && mode.Kind != "" {
			kind = string(mode.Kind)
		}
		k, err := peersim.ParseAckKind(kind)
		if err != nil {
			return f, mode, fmt.Errorf("--ack: %w", err)
		}
		if k != mode.Kind {
			mode = peersim.AckMode{Kind: k}
		}
		for _, m := range []struct {
			flag, val string
			dst       *[]byte
		}{{"fixed-ack", w.fixedACK, &mode.FixedACK}, {"fixed-nak", w.fixedNAK, &mode.FixedNAK}} {
			if m.val == "" {
				continue
			}
			b, err := peersim.Unescape(m.val)
			if err != nil {
				return f, mode, fmt.Errorf("--%s: %w", m.flag, err)
			}
			*m.dst = b
		}
		if k == peersim.AckFixed && len(mode.FixedACK) == 0 {
			return f, mode, errors.New("--ack fixed needs --fixed-ack")
		}
	}
	if err := mode.Validate(f.WithDefaults()); err != nil {
		return f, mode, err
	}
	return f, mode, nil
}

func newPeerListenCmd(output *string) *cobra.Command {
	var (
		wire      peerWire
		scenario  string
		answer    string
		untilDone bool
		verbose   bool
	)
	cmd := &cobra.Command{
		Use:   "listen ADDR",
		Short: "Accept connections and answer each message as a scenario says",
		Long: `Listen on ADDR (HOST:PORT; port 0 picks a free one) and answer every message
as the scenario says, one step after the other across all connections, so a
peer that reconnects after a reset goes on where the script was. Without a
scenario every message gets AA (ACK in the byte and fixed modes).

--answer CODE answers every message the same way: AA, AE, AR, CA, CE, CR,
ACK, NAK, or silence, close, reset. A scenario file (YAML) scripts more:

  framing: mllp                 # optional; flags override
  ack: hl7
  repeat: false                 # start again after the last step
  steps:
    - answer: AA
      count: 3                  # the first three messages
    - answer: AE
      text: unknown patient     # MSA-3
      error_code: "204"         # and an ERR segment
      delay: 2s                 # answered late
    - answer: AA
      wrong_control_id: true    # MSA-2 acknowledges another message
    - silence: true             # never answered (silence: 5s also stops reading for 5 s)
    - close: true               # FIN instead of an answer
    - reset: true               # RST instead of an answer

After the last step of a script that does not repeat, messages get AA again.
HL7 ACKs received are never answered and use up no step. Each message is
printed as it is dealt with; Ctrl-C (or, with --until-done, the end of the
script) stops the peer and prints what it did.`,
		Example: `  switchboard peer listen 127.0.0.1:2576
  switchboard peer listen 127.0.0.1:2576 --answer AE
  switchboard peer listen 127.0.0.1:2576 --scenario three-aa-silence-reset.yaml --until-done
  switchboard peer listen 127.0.0.1:9000 --framing length-prefix --ack single-byte --answer NAK`,
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := peerCheckOutput(*output); err != nil {
				return err
			}
			var sc *peersim.Scenario
			switch {
			case scenario != "" && answer != "":
				return peerUsage(cmd, "--scenario and --answer exclude each other")
			case scenario != "":
				var err error
				if sc, err = peersim.Load(scenario); err != nil {
					return peerExit(2, err)
				}
			case answer != "":
				step, err := peerAnswerStep(answer)
				if err != nil {
					return peerUsage(cmd, "--answer: %v", err)
				}
				sc = peersim.Always(step)
			}
			f, mode, err := wire.resolve(sc)
			if err != nil {
				return peerUsage(cmd, "%v", err)
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			out := cmd.OutOrStdout()
			p := peerPrinter{w: out, json: *output == "json", mode: mode}
			srv, err := peersim.Listen(peersim.ServerConfig{
				Address: args[0], Framing: f, Ack: mode, Scenario: sc,
				Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})),
				OnTurn: p.turn,
			})
			if err != nil {
				var se *peersim.ScenarioError
				if errors.As(err, &se) {
					return peerExit(2, err)
				}
				return peerExit(1, err)
			}
			p.listening(srv.Addr().String(), f, mode, scenario, sc)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = srv.ServeUntil(ctx, untilDone)
			p.stopped(srv.Stats())
			return err
		},
	}
	wire.register(cmd.Flags())
	cmd.Flags().StringVar(&scenario, "scenario", "", "YAML scenario file (see above and internal/peersim/testdata)")
	cmd.Flags().StringVar(&answer, "answer", "", "answer every message this way: AA AE AR CA CE CR ACK NAK silence close reset")
	cmd.Flags().BoolVar(&untilDone, "until-done", false, "exit once the last step of the scenario is done")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "log connections opening and closing to standard error")
	return cmd
}

// peerAnswerStep reads --answer.
func peerAnswerStep(s string) (peersim.Step, error) {
	switch strings.ToLower(s) {
	case "silence":
		return peersim.Step{Action: peersim.Silence}, nil
	case "close":
		return peersim.Step{Action: peersim.Close}, nil
	case "reset":
		return peersim.Step{Action: peersim.Reset}, nil
	}
	code := strings.ToUpper(s)
	for _, c := range []string{"AA", "AE", "AR", "CA", "CE", "CR", "ACK", "NAK"} {
		if code == c {
			return peersim.Step{Action: peersim.Answer, Code: code}, nil
		}
	}
	return peersim.Step{}, fmt.Errorf("%q: want AA, AE, AR, CA, CE, CR, ACK, NAK, silence, close or reset", s)
}

func newPeerSendCmd(output *string) *cobra.Command {
	var (
		wire           peerWire
		rate           float64
		timeout        time.Duration
		connectTimeout time.Duration
		quiet          bool
		verbose        bool
	)
	cmd := &cobra.Command{
		Use:   "send ADDR FILE|DIR|-...",
		Short: "Send messages to a listening peer and report the ACKs",
		Long: `Connect to ADDR and send the messages of the files, directories (their
files in name order, not descending) and standard input ("-") one at a time,
each once the previous one is answered, at most --rate per second.

A file whose first line starts with MSH holds one message per MSH segment;
its line ends (LF or CRLF, as editors leave them) are sent as CR, HL7's
segment end. A file starting with FHS or BHS is one batch. Any other file is
one message, sent byte for byte.

Each message's answer is printed (unless --quiet), then a summary: how many
got which code, how many are in doubt (written, no trustworthy answer: a
timeout, the connection lost, an ACK for another message) or not sent, and
the round-trip p50 and p99. A message in doubt resets the connection and the
next one goes on a new one. The exit code is 0 when every message was
accepted, else the most serious of: 8 in doubt, 6 the peer unreachable,
9 not sent, 7 answered negatively (AE, AR, CE, CR, NAK).`,
		Example: `  switchboard peer send 127.0.0.1:2575 adt.hl7
  switchboard peer send 127.0.0.1:2575 messages/ --rate 50
  switchboard peer send 127.0.0.1:2575 - < adt.hl7
  switchboard peer send 127.0.0.1:9000 msgs/ --framing length-prefix --ack single-byte -o json`,
		Args:          cobra.MinimumNArgs(2),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := peerCheckOutput(*output); err != nil {
				return err
			}
			f, mode, err := wire.resolve(nil)
			if err != nil {
				return peerUsage(cmd, "%v", err)
			}
			if rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
				return peerUsage(cmd, "--rate must be a positive number of messages per second (0: no limit)")
			}
			msgs, err := peersim.ReadMessages(args[1:], cmd.InOrStdin())
			if err != nil {
				return peerExit(2, err)
			}
			if len(msgs) == 0 {
				return peerExit(2, errors.New("no message to send: the input is empty"))
			}
			level := slog.LevelError
			if verbose {
				level = slog.LevelInfo
			}
			p := peerPrinter{w: cmd.OutOrStdout(), json: *output == "json", mode: mode}
			cfg := peersim.SendConfig{
				Address: args[0], Framing: f, Ack: mode, Rate: rate, Timeout: timeout, ConnectTimeout: connectTimeout,
				Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})),
			}
			if !quiet {
				cfg.OnResult = p.result
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := peersim.Send(ctx, cfg, msgs)
			if rep != nil {
				p.report(rep)
			}
			interrupted := ctx.Err() != nil && rep != nil && rep.Sent < len(msgs)
			switch {
			case rep == nil:
				return peerExit(2, err)
			case interrupted:
				return peerExit(1, fmt.Errorf("interrupted after %d of %d messages", rep.Sent, len(msgs)))
			case rep.InDoubt > 0:
				return peerExit(peerExitInDoubt, nil)
			case err != nil && errors.Is(err, transport.ErrInvalidConfig):
				return peerExit(2, err)
			case err != nil:
				return peerExit(peerExitUnavailable, err)
			case rep.NotSent > 0:
				return peerExit(peerExitNotSent, nil)
			case !rep.AllPositive():
				return peerExit(peerExitRejected, nil)
			}
			return nil
		},
	}
	wire.register(cmd.Flags())
	cmd.Flags().Float64Var(&rate, "rate", 0, "messages per second at most (0: each as soon as the previous one is answered)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long each message's write and answer may take")
	cmd.Flags().DurationVar(&connectTimeout, "connect-timeout", 10*time.Second, "how long each connect may take")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "print the summary only, not each message's answer")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "log the connection's events to standard error")
	return cmd
}

// peerPrinter prints the peer's progress as lines for people or JSON
// objects (one a line) for scripts.
type peerPrinter struct {
	w    io.Writer
	json bool
	mode peersim.AckMode
}

func (p *peerPrinter) emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = fmt.Appendf(nil, `{"error":%q}`, err.Error())
	}
	_, _ = p.w.Write(append(b, '\n'))
}

func (p *peerPrinter) listening(addr string, f transport.Framing, mode peersim.AckMode, scenario string, sc *peersim.Scenario) {
	steps := 0
	if sc != nil {
		steps = len(sc.Steps)
	}
	if p.json {
		p.emit(map[string]any{"listening": addr, "framing": f.WithDefaults().String(), "ack": mode.Kind, "scenario": scenario, "steps": steps})
		return
	}
	what := "every message: " + peersim.Step{Action: peersim.Answer}.Describe(mode)
	switch {
	case scenario != "":
		what = fmt.Sprintf("scenario %s (%d steps)", scenario, steps)
	case steps > 0:
		what = "every message: " + sc.Steps[0].Describe(mode)
	}
	fmt.Fprintf(p.w, "listening on %s (%s, %s acks), %s\n", addr, f.WithDefaults(), mode.Kind, what)
}

// turn prints one message dealt with; it runs on the connections'
// goroutines, and one Write a line keeps lines whole.
func (p *peerPrinter) turn(e peersim.Exchange) {
	did := e.Step.Describe(p.mode)
	if e.Err != nil {
		did += ": " + e.Err.Error()
	}
	if p.json {
		v := map[string]any{
			"turn": e.N, "step": e.Index, "line": e.Step.Line, "remote_addr": e.RemoteAddr,
			"control_id": e.ControlID, "message_type": e.MessageType, "action": e.Step.Action.String(), "did": did,
		}
		if e.Code != "" {
			v["code"] = e.Code
		}
		p.emit(v)
		return
	}
	step := "after the script"
	if e.Index > 0 {
		step = fmt.Sprintf("step %d", e.Index)
		if e.Step.Line > 0 {
			step += fmt.Sprintf(", line %d", e.Step.Line)
		}
	}
	fmt.Fprintf(p.w, "#%d %s %s %s: %s (%s)\n", e.N, e.RemoteAddr, peerOr(e.ControlID, "-"), peerOr(e.MessageType, "-"), did, step)
}

func (p *peerPrinter) stopped(st peersim.Stats) {
	if p.json {
		p.emit(map[string]any{"stopped": st})
		return
	}
	fmt.Fprintf(p.w, "stopped: %s\n", st)
}

func (p *peerPrinter) result(r peersim.Result) {
	if p.json {
		v := map[string]any{"source": r.Message.Source, "control_id": r.ControlID}
		if r.Code != "" {
			v["code"] = r.Code
			v["round_trip_ms"] = float64(r.RoundTrip.Round(time.Microsecond).Microseconds()) / 1e3
		}
		if r.Err != nil {
			v["failure"], v["in_doubt"], v["error"] = r.Failure(), r.InDoubt(), r.Err.Error()
		}
		p.emit(v)
		return
	}
	what := r.Code
	switch {
	case r.Err != nil && r.InDoubt():
		what = "in doubt: " + r.Failure()
	case r.Err != nil:
		what = "not sent: " + r.Failure()
	case r.Code == "":
		what = r.Outcome.String()
	default:
		what += " in " + peerRound(r.RoundTrip).String()
	}
	fmt.Fprintf(p.w, "%s %s %s\n", r.Message.Source, peerOr(r.ControlID, "-"), what)
}

func (p *peerPrinter) report(r *peersim.Report) {
	if p.json {
		p.emit(map[string]any{"summary": r})
		return
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "sent\t%d in %s (%.1f/s) to %s\n", r.Sent, peerRound(r.Elapsed), r.Rate, r.Address)
	for _, c := range []string{"AA", "AE", "AR", "CA", "CE", "CR", "ACK", "NAK"} {
		if n := r.Codes[c]; n > 0 {
			fmt.Fprintf(tw, "%s\t%d\n", c, n)
		}
	}
	if r.Written > 0 {
		fmt.Fprintf(tw, "written\t%d (no answer expected)\n", r.Written)
	}
	for _, x := range []struct {
		name string
		n    int
	}{{"in doubt", r.InDoubt}, {"not sent", r.NotSent}} {
		if x.n > 0 {
			fmt.Fprintf(tw, "%s\t%d\n", x.name, x.n)
		}
	}
	for _, cause := range slices.Sorted(maps.Keys(r.Failures)) {
		fmt.Fprintf(tw, "  %s\t%d\n", cause, r.Failures[cause])
	}
	if len(r.Codes) > 0 {
		fmt.Fprintf(tw, "round trip\tp50 %s, p99 %s\n", peerRound(r.P50), peerRound(r.P99))
	}
	_ = tw.Flush()
}

func peerOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// peerRound keeps durations readable: three significant digits or so.
func peerRound(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func peerCheckOutput(o string) error {
	if o != "table" && o != "json" {
		return peerExit(2, fmt.Errorf("--output %q: want table or json", o))
	}
	return nil
}

func peerUsage(cmd *cobra.Command, format string, args ...any) error {
	return peerExit(2, fmt.Errorf(format+"\nRun '%s --help' for usage.", append(args, cmd.CommandPath())...))
}

// peerExit ends the command with an exit code, printing err when not nil.
func peerExit(code int, err error) error { return &exitError{code: code, err: err} }
