package main

// messages, consumers and journal.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

func newMessagesCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "messages",
		Short: "List, show and resolve stored messages (queued outbound, journaled inbound)",
		Long: `messages looks at what Switchboard stored: outbound messages queued with
"send --queued" (their state, attempts and ACK) and inbound journaled ones.
A queued message held IN_DOUBT (connect --in-doubt hold) blocks its
connection's queue until "messages resolve".`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	clientCmd(cmd, o)

	var (
		connection, listener, direction, controlID string
		states                                     []string
		since, until                               string
		limit                                      int
		payloads                                   bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List messages matching filters",
		Example: `  switchboard messages list --connection lab --state in-doubt
  switchboard messages list --direction inbound --since 1h
  switchboard messages list --control-id MSG00042 -o json`,
		Args: noArgs,
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, _ []string) error {
			req := &switchboardv1.ListMessagesRequest{ConnectionId: connection, ListenerId: listener, ControlId: controlID, IncludePayloads: payloads}
			if direction != "" {
				v, err := parseEnum("direction", direction, switchboardv1.Direction_value, "DIRECTION_")
				if err != nil {
					return usageError(cmd, "%v", err)
				}
				req.Direction = switchboardv1.Direction(v)
			}
			for _, s := range states {
				v, err := parseEnum("state", s, switchboardv1.MessageState_value, "MESSAGE_STATE_")
				if err != nil {
					return usageError(cmd, "%v", err)
				}
				req.States = append(req.States, switchboardv1.MessageState(v))
			}
			var err error
			if req.StartTime, err = parseWhen("since", since); err != nil {
				return usageError(cmd, "%v", err)
			}
			if req.EndTime, err = parseWhen("until", until); err != nil {
				return usageError(cmd, "%v", err)
			}
			ms, next, err := listAll(ctx, c, limit, func(ctx context.Context, token string, size int32) ([]*switchboardv1.Message, string, error) {
				r := req
				r.PageToken, r.PageSize = token, size
				resp, err := c.api.ListMessages(ctx, r)
				return resp.GetMessages(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, &switchboardv1.ListMessagesResponse{Messages: ms, NextPageToken: next}, false)
			}
			if len(ms) == 0 {
				fmt.Fprintln(env.stdout, "No messages.")
				return nil
			}
			t := newTable(env.stdout, "MESSAGE", "DIRECTION", "STATE", "CONNECTION", "TYPE", "CONTROL ID", "CREATED", "ATTEMPTS", "ACK", "FAILURE")
			for _, m := range ms {
				t.row(m.GetMessageId(), strings.ToLower(enumName(m.GetDirection(), "DIRECTION_")), enumName(m.GetState(), "MESSAGE_STATE_"), m.GetConnectionId(),
					m.GetMessageType(), m.GetControlId(), ts(m.GetCreateTime()), strconv.Itoa(len(m.GetAttempts())), enumName(m.GetAck().GetCode(), "ACK_CODE_"), m.GetFailure())
			}
			if err := t.flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(env.stderr, "(first %d shown; raise --limit for more)\n", len(ms))
			}
			return nil
		}),
	}
	lf := list.Flags()
	lf.StringVar(&connection, "connection", "", "only messages of this connection")
	lf.StringVar(&listener, "listener", "", "only inbound messages of this listener")
	lf.StringVar(&direction, "direction", "", "only inbound or outbound messages")
	lf.StringSliceVar(&states, "state", nil, "only messages in these states: queued, sending, awaiting-ack, accepted, failed, in-doubt, received")
	lf.StringVar(&since, "since", "", "only messages created at or after this time: RFC 3339, or a duration ago (1h)")
	lf.StringVar(&until, "until", "", "only messages created before this time: RFC 3339, or a duration ago")
	lf.StringVar(&controlID, "control-id", "", "only messages with this HL7 control id (MSH-10)")
	lf.IntVar(&limit, "limit", 100, "most messages to list (0: all)")
	lf.BoolVar(&payloads, "payloads", false, "include payloads in -o json (they are patient data)")

	var raw bool
	get := &cobra.Command{
		Use:   "get MESSAGE_ID",
		Short: "Show one message, with its payload",
		Long: `get shows one message: its state, attempts and ACK, then its payload
(segments on their own lines). --raw prints only the payload, byte for byte.
Ids are "out-<connection>-<n>" for queued messages, "in-<sequence>" for
received ones.`,
		Example: `  switchboard messages get out-lab-17
  switchboard messages get in-42 --raw > msg.hl7`,
		Args: exactArgs(1),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.GetMessage(cctx, &switchboardv1.GetMessageRequest{MessageId: args[0]})
			if err != nil {
				return err
			}
			if raw {
				_, err := env.stdout.Write(resp.GetMessage().GetPayload())
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			writeMessage(env, resp.GetMessage())
			return nil
		}),
	}
	get.Flags().BoolVar(&raw, "raw", false, "print only the payload, byte for byte")

	resolve := &cobra.Command{
		Use:   "resolve MESSAGE_ID resend|mark-accepted|fail",
		Short: "Settle a queued message held in doubt",
		Long: `resolve settles a queued message held IN_DOUBT: send it again (resend, with
the same MSH-10), mark it accepted (you know the peer has it) or fail it.
Any other state is refused (exit 1, FAILED_PRECONDITION).`,
		Example:   `  switchboard messages resolve out-lab-17 resend`,
		Args:      exactArgs(2),
		ValidArgs: []cobra.Completion{"resend", "mark-accepted", "fail"},
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			what := args[1]
			if what == "accept" || what == "accepted" {
				what = "mark-accepted"
			}
			v, err := parseEnum("resolution", what, switchboardv1.Resolution_value, "RESOLUTION_")
			if err != nil {
				return usageError(cmd, "%v", err)
			}
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.ResolveMessage(cctx, &switchboardv1.ResolveMessageRequest{MessageId: args[0], Resolution: switchboardv1.Resolution(v)})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			m := resp.GetMessage()
			fmt.Fprintf(env.stdout, "%s: %s\n", m.GetMessageId(), enumName(m.GetState(), "MESSAGE_STATE_"))
			return nil
		}),
	}
	cmd.AddCommand(list, get, resolve)
	return cmd
}

// parseWhen reads a time flag: RFC 3339, or a duration before now.
func parseWhen(flag, s string) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return timestamppb.New(time.Now().Add(-d)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: want an RFC 3339 time (2026-12-02T08:00:00Z) or a duration ago (90m)", flag, s)
	}
	return timestamppb.New(t), nil
}

func writeMessage(env *cliEnv, m *switchboardv1.Message) {
	w := env.stdout
	fmt.Fprintf(w, "Message %s (%s)\n", m.GetMessageId(), strings.ToLower(enumName(m.GetDirection(), "DIRECTION_")))
	k := kv{w}
	k.line("State", "%s", enumName(m.GetState(), "MESSAGE_STATE_"))
	k.line("Connection", "%s", m.GetConnectionId())
	k.line("Listener", "%s", m.GetListenerId())
	k.line("Type", "%s", m.GetMessageType())
	k.line("Control id", "%s", m.GetControlId())
	k.line("Created", "%s", ts(m.GetCreateTime()))
	k.line("Updated", "%s", ts(m.GetUpdateTime()))
	k.line("Idempotency key", "%s", m.GetIdempotencyKey())
	if a := m.GetAck(); a != nil {
		k.line("ACK", "%s %s", enumName(a.GetCode(), "ACK_CODE_"), a.GetText())
	}
	k.line("Failure", "%s", m.GetFailure())
	k.line("Next attempt", "%s", ts(m.GetNextAttemptTime()))
	for i, a := range m.GetAttempts() {
		k.line(fmt.Sprintf("Attempt %d", i+1), "%s %s %s %s", ts(a.GetStartTime()), enumName(a.GetResult(), "ATTEMPT_RESULT_"), enumName(a.GetAck().GetCode(), "ACK_CODE_"), a.GetError())
	}
	if an := m.GetAnswer(); an != nil {
		k.line("Answer", "%s %s by %s (fallback %v)", enumName(an.GetCode(), "ACK_CODE_"), an.GetText(), orDash(an.GetConsumer()), an.GetFallback())
	}
	fmt.Fprintln(w)
	p := m.GetPayload()
	if isHL7(p) {
		p = []byte(strings.ReplaceAll(strings.TrimRight(string(p), "\r\n"), "\r", "\n"))
	}
	_, _ = w.Write(append([]byte(strings.TrimRight(string(p), "\n")), '\n'))
}

func newConsumersCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "consumers",
		Short: "List, show and delete durable consumers; their dead letters",
		Long: `consumers manages durable consumers (recv --consumer, or the API's Receive
with a consumer name): where each is, what it has pending, and the messages
it gave up on (dead letters), which can be replayed.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	clientCmd(cmd, o)

	list := &cobra.Command{
		Use:   "list",
		Short: "List durable consumers",
		Args:  noArgs,
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, _ []string) error {
			cs, _, err := listAll(ctx, c, 0, func(ctx context.Context, token string, size int32) ([]*switchboardv1.Consumer, string, error) {
				r, err := c.api.ListConsumers(ctx, &switchboardv1.ListConsumersRequest{PageSize: size, PageToken: token})
				return r.GetConsumers(), r.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, &switchboardv1.ListConsumersResponse{Consumers: cs}, false)
			}
			if len(cs) == 0 {
				fmt.Fprintln(env.stdout, "No consumers.")
				return nil
			}
			t := newTable(env.stdout, "CONSUMER", "MODE", "NEXT", "ACK FLOOR", "PENDING", "BACKLOG", "DEAD", "STREAMS", "FILTERS")
			for _, cn := range cs {
				st := cn.GetStatus()
				t.row(cn.GetName(), enumName(cn.GetConfig().GetMode(), "CONSUMER_MODE_"), strconv.FormatUint(st.GetNextSequence(), 10), strconv.FormatUint(st.GetAckFloor(), 10),
					itoa(st.GetPendingCount()), itoa(st.GetBacklogCount()), itoa(st.GetDeadLetterCount()), strconv.Itoa(int(st.GetAttachedStreamCount())), consumerFilters(cn))
			}
			return t.flush()
		}),
	}
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a durable consumer",
		Args:  exactArgs(1),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.GetConsumer(cctx, &switchboardv1.GetConsumerRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			cn, st := resp.GetConsumer(), resp.GetConsumer().GetStatus()
			fmt.Fprintf(env.stdout, "Consumer %s\n", cn.GetName())
			k := kv{env.stdout}
			k.line("Mode", "%s", enumName(cn.GetConfig().GetMode(), "CONSUMER_MODE_"))
			k.line("ACK wait", "%s", dur(cn.GetConfig().GetAckWait()))
			k.line("Max deliveries", "%d", cn.GetConfig().GetMaxDeliveries())
			k.line("Max ACK pending", "%d", cn.GetConfig().GetMaxAckPending())
			k.line("Filters", "%s", consumerFilters(cn))
			k.line("Created", "%s", ts(st.GetCreateTime()))
			k.line("Next sequence", "%d", st.GetNextSequence())
			k.line("ACK floor", "%d", st.GetAckFloor())
			k.line("Pending", "%d (oldest delivered %s)", st.GetPendingCount(), orDash(ts(st.GetOldestPendingTime())))
			k.line("Backlog", "%d", st.GetBacklogCount())
			k.line("Redeliveries", "%d", st.GetRedeliveryCount())
			k.line("Dead letters", "%d", st.GetDeadLetterCount())
			k.line("Streams", "%d", st.GetAttachedStreamCount())
			return nil
		}),
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a durable consumer, its position and its dead letters",
		Args:  exactArgs(1),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.DeleteConsumer(cctx, &switchboardv1.DeleteConsumerRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			fmt.Fprintf(env.stdout, "consumer %s deleted\n", args[0])
			return nil
		}),
	}
	dead := &cobra.Command{
		Use:   "dead-letters",
		Short: "List or replay a consumer's dead letters",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	deadList := &cobra.Command{
		Use:   "list CONSUMER",
		Short: "List the messages a consumer gave up on",
		Args:  exactArgs(1),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			ds, _, err := listAll(ctx, c, 0, func(ctx context.Context, token string, size int32) ([]*switchboardv1.DeadLetter, string, error) {
				r, err := c.api.ListDeadLetters(ctx, &switchboardv1.ListDeadLettersRequest{Consumer: args[0], PageSize: size, PageToken: token})
				return r.GetDeadLetters(), r.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, &switchboardv1.ListDeadLettersResponse{DeadLetters: ds}, false)
			}
			if len(ds) == 0 {
				fmt.Fprintln(env.stdout, "No dead letters.")
				return nil
			}
			t := newTable(env.stdout, "SEQUENCE", "DELIVERIES", "DEAD SINCE")
			for _, d := range ds {
				t.row(strconv.FormatUint(d.GetSequence(), 10), strconv.Itoa(int(d.GetDeliveryCount())), ts(d.GetDeadTime()))
			}
			return t.flush()
		}),
	}
	deadReplay := &cobra.Command{
		Use:   "replay CONSUMER [SEQUENCE...]",
		Short: "Put dead letters back in the consumer's queue (all, or these)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usageError(cmd, "give the CONSUMER, and optionally the sequences to replay")
			}
			return nil
		},
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			req := &switchboardv1.ReplayDeadLettersRequest{Consumer: args[0]}
			for _, a := range args[1:] {
				n, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return usageError(cmd, "sequence %q is not a number", a)
				}
				req.Sequences = append(req.Sequences, n)
			}
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.ReplayDeadLetters(cctx, req)
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			fmt.Fprintf(env.stdout, "%d dead letters replayed\n", resp.GetReplayedCount())
			return nil
		}),
	}
	dead.AddCommand(deadList, deadReplay)
	cmd.AddCommand(list, get, del, dead)
	return cmd
}

func consumerFilters(c *switchboardv1.Consumer) string {
	var parts []string
	if l := c.GetListenerIds(); len(l) > 0 {
		parts = append(parts, "listeners="+strings.Join(l, ","))
	}
	if l := c.GetConnectionIds(); len(l) > 0 {
		parts = append(parts, "connections="+strings.Join(l, ","))
	}
	for _, k := range c.GetKinds() {
		parts = append(parts, "kind="+strings.ToLower(enumName(k, "RECORD_KIND_")))
	}
	return strings.Join(parts, " ")
}

func newJournalCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "journal",
		Short: "Show the journal's first and last retained sequence",
		Long: `journal shows the oldest retained and the last stored sequence of the
journal, so you can choose where "recv --from" starts. The first is the last
+ 1 when nothing is retained; the last is 0 when nothing was ever stored.`,
		Args: noArgs,
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, _ []string) error {
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.GetJournal(cctx, &switchboardv1.GetJournalRequest{})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			t := newTable(env.stdout, "FIRST", "LAST")
			t.row(strconv.FormatUint(resp.GetFirstSequence(), 10), strconv.FormatUint(resp.GetLastSequence(), 10))
			return t.flush()
		}),
	}
	return clientCmd(cmd, o)
}
