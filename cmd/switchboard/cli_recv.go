package main

// recv and events: the two streams.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

const recvLong = `recv prints the messages Switchboard received and journaled: a line about
each (sequence, time, listener, connection, peer, type, control id, size)
followed by the message itself, segments on their own lines. Without
--follow it prints what the journal holds (from --from, default the oldest
retained) and exits; with --follow it goes on with new messages until
interrupted (and starts with new ones unless --from is given).

--out-dir writes each message, byte for byte, to a file named by its
sequence (000000000042.hl7), written whole before it appears. --consumer
reads as a durable consumer: the server remembers what it acked (each
message is acked once printed or written), so the next run resumes there.
-o json prints each ReceivedMessage on a line of its own.`

func newRecvCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	var (
		listeners, connections, kinds []string
		from                          uint64
		follow, noPayload             bool
		outDir, consumer              string
		limit                         int
	)
	cmd := &cobra.Command{
		Use:   "recv",
		Short: "Print (or save) received messages; --follow streams them",
		Long:  recvLong,
		Example: `  switchboard recv                      # everything retained, then exit
  switchboard recv --follow --listener adt
  switchboard recv --follow --out-dir inbox/ --consumer archive
  switchboard recv --from 1200 --limit 10 -o json`,
		Args: noArgs,
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, _ []string) error {
			req := &switchboardv1.ReceiveRequest{ListenerIds: listeners, ConnectionIds: connections, Consumer: consumer, StopAtHead: !follow}
			for _, k := range kinds {
				v, err := parseEnum("kind", k, switchboardv1.RecordKind_value, "RECORD_KIND_")
				if err != nil {
					return usageError(cmd, "%v", err)
				}
				req.Kinds = append(req.Kinds, switchboardv1.RecordKind(v))
			}
			switch {
			case cmd.Flags().Changed("from"):
				req.StartSequence = &from
			case !follow && consumer == "":
				one := uint64(1)
				req.StartSequence = &one
			}
			if outDir != "" {
				if err := os.MkdirAll(outDir, 0o750); err != nil {
					return &exitError{code: exitFailure, err: fmt.Errorf("--out-dir: %w", err)}
				}
			}
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := c.api.Receive(sctx, req)
			if err != nil {
				return err
			}
			n := 0
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					if ctx.Err() != nil && status.Code(err) == codes.Canceled {
						return nil // interrupted
					}
					return err
				}
				if l := resp.GetLost(); l != nil {
					if c.json() {
						if err := printJSON(env.stdout, resp, true); err != nil {
							return err
						}
					} else {
						fmt.Fprintf(env.stderr, "lost: sequences %d to %d were deleted by retention before this consumer acked them\n", l.GetFirstSequence(), l.GetLastSequence())
					}
				}
				var acked []uint64
				for _, m := range resp.GetMessages() {
					if err := printReceived(env, c, m, outDir, noPayload); err != nil {
						return err
					}
					acked = append(acked, m.GetSequence())
					n++
					if limit > 0 && n >= limit {
						break
					}
				}
				if consumer != "" && len(acked) > 0 {
					actx, acancel := c.call(ctx)
					_, err := c.api.Ack(actx, &switchboardv1.AckRequest{Consumer: consumer, Sequences: acked})
					acancel()
					if err != nil {
						return fmt.Errorf("ack: %w", err)
					}
				}
				if limit > 0 && n >= limit {
					return nil
				}
			}
		}),
	}
	fs := cmd.Flags()
	fs.BoolVarP(&follow, "follow", "f", false, "keep streaming new messages until interrupted")
	fs.Uint64Var(&from, "from", 0, "start at this journal sequence (0 or 1: the oldest retained)")
	fs.StringSliceVar(&listeners, "listener", nil, "only messages from these listeners (repeatable)")
	fs.StringSliceVar(&connections, "connection", nil, "only messages from these connections (repeatable)")
	fs.StringSliceVar(&kinds, "kind", nil, "only records of these kinds: message, ack (acknowledgements nobody waited for)")
	fs.IntVar(&limit, "limit", 0, "stop after this many messages (0: no limit)")
	fs.StringVar(&outDir, "out-dir", "", "write each message to a file in this directory instead of printing it")
	fs.BoolVar(&noPayload, "no-payload", false, "print only the line about each message, not the message")
	fs.StringVar(&consumer, "consumer", "", "read as this durable consumer, acking each message once handled")
	return clientCmd(cmd, o)
}

// printReceived prints m, or writes it to outDir.
func printReceived(env *cliEnv, c *client, m *switchboardv1.ReceivedMessage, outDir string, noPayload bool) error {
	path := ""
	if outDir != "" {
		ext := ".bin"
		if m.GetMessageType() != "" || isHL7(m.GetPayload()) {
			ext = ".hl7"
		}
		path = filepath.Join(outDir, fmt.Sprintf("%012d%s", m.GetSequence(), ext))
		if err := writeFileAtomic(path, m.GetPayload()); err != nil {
			return &exitError{code: exitFailure, err: err}
		}
	}
	if c.json() {
		return printJSON(env.stdout, m, true)
	}
	w := env.stdout
	kind := ""
	if m.GetKind() == switchboardv1.RecordKind_RECORD_KIND_ACK {
		kind = " ACK"
	}
	redelivered := ""
	if m.GetRedelivered() {
		redelivered = fmt.Sprintf(" redelivery %d", m.GetDeliveryCount())
	}
	origin := m.GetListenerId()
	if origin == "" {
		origin = "-"
	}
	fmt.Fprintf(w, "#%d %s %s/%s %s%s %s %s %d bytes%s", m.GetSequence(), ts(m.GetReceiveTime()), origin, m.GetConnectionId(), m.GetRemoteAddress(), kind,
		orDash(m.GetMessageType()), orDash(m.GetControlId()), len(m.GetPayload()), redelivered)
	if path != "" {
		fmt.Fprintf(w, " -> %s\n", path)
		return nil
	}
	fmt.Fprintln(w)
	if noPayload {
		return nil
	}
	p := m.GetPayload()
	if isHL7(p) {
		p = bytes.ReplaceAll(bytes.TrimRight(p, "\r\n"), []byte("\r"), []byte("\n"))
	}
	_, err := w.Write(append(bytes.TrimRight(p, "\n"), "\n\n"...))
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeFileAtomic writes data to a temporary file beside path, syncs it
// and renames it, so a reader of the directory never sees half a message.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".recv-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

const eventsLong = `events streams what happens on the server as it happens: listeners
started, stopped or unable to bind; connections opened, closed (with the
reason), rejected or reconnecting; negative ACKs sent and received; ACK
mismatches and timeouts; framing errors; queued messages held in doubt or
failed; the journal failing and recovering. Events never carry message
bytes. --recent first replays the last ones the server keeps in memory
(about a thousand). -o json prints each Event on a line of its own.

A gap in the sequence numbers means events were missed (filters skip some).`

func newEventsCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	var (
		listener, connection string
		kinds                []string
		recent               bool
		limit                int
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream what happens to listeners, connections, messages and the journal",
		Long:  eventsLong,
		Example: `  switchboard events
  switchboard events --recent --listener adt
  switchboard events --kind connection-closed,nak-received -o json
  switchboard events --kind connection-opened --limit 1     # wait for a peer`,
		Args: noArgs,
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, _ []string) error {
			req := &switchboardv1.WatchEventsRequest{ListenerId: listener, ConnectionId: connection, ReplayRecent: recent}
			for _, k := range kinds {
				v, err := parseEnum("kind", k, switchboardv1.EventKind_value, "EVENT_KIND_")
				if err != nil {
					return usageError(cmd, "%v", err)
				}
				req.Kinds = append(req.Kinds, switchboardv1.EventKind(v))
			}
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := c.api.WatchEvents(sctx, req)
			if err != nil {
				return err
			}
			n := 0
			if !c.json() {
				fmt.Fprintf(env.stdout, "%-6s %-25s %-22s %-14s %-14s %s\n", "SEQ", "TIME", "KIND", "LISTENER", "CONNECTION", "DETAIL")
			}
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					if ctx.Err() != nil && status.Code(err) == codes.Canceled {
						return nil
					}
					return err
				}
				for _, ev := range resp.GetEvents() {
					if c.json() {
						if err := printJSON(env.stdout, ev, true); err != nil {
							return err
						}
					} else {
						fmt.Fprintf(env.stdout, "%-6d %-25s %-22s %-14s %-14s %s\n", ev.GetSequence(), ev.GetTime().AsTime().Local().Format(time.RFC3339),
							enumName(ev.GetKind(), "EVENT_KIND_"), orDash(ev.GetListenerId()), orDash(ev.GetConnectionId()), eventDetail(ev))
					}
					n++
					if limit > 0 && n >= limit {
						return nil
					}
				}
			}
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&listener, "listener", "", "only events of this listener and its connections")
	fs.StringVar(&connection, "connection", "", "only events of this connection")
	fs.StringSliceVar(&kinds, "kind", nil, "only these kinds (repeatable or comma-separated), e.g. connection-opened, connection-closed, nak-received, ack-timeout, message-in-doubt")
	fs.BoolVar(&recent, "recent", false, "first replay the recent events the server still holds")
	fs.IntVar(&limit, "limit", 0, "stop after this many events (0: until interrupted)")
	return clientCmd(cmd, o)
}

// eventDetail is what an event says besides its kind and resources.
func eventDetail(ev *switchboardv1.Event) string {
	var parts []string
	add := func(label, v string) {
		if v != "" {
			parts = append(parts, label+v)
		}
	}
	add("", enumName(ev.GetCloseReason(), "CLOSE_REASON_"))
	add("ack ", enumName(ev.GetAckCode(), "ACK_CODE_"))
	add("remote ", ev.GetRemoteAddress())
	add("control id ", ev.GetControlId())
	add("message ", ev.GetMessageId())
	add("", ev.GetDetail())
	if t := ev.GetNextAttemptTime(); t != nil {
		add("next attempt ", ts(t))
	}
	return strings.Join(parts, "; ")
}
