package main

// listen, stop, connect, disconnect, ls and status: listeners and
// connections.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// wireFlags are the framing and ACK policy flags of listen and connect.
type wireFlags struct {
	framing, delimiter, start, end string
	strict                         bool
	ack, fixedAck, fixedNak        string
}

func (w *wireFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&w.framing, "framing", "mllp", "wire framing: mllp, length-prefix (4-byte big-endian length), delimiter (--delimiter) or start-end (--start, --end)")
	fs.BoolVar(&w.strict, "strict", false, "strict framing (mllp, start-end): refuse bytes outside frames instead of skipping them")
	fs.StringVar(&w.delimiter, "delimiter", "", `delimiter framing: the bytes that end each message, with Go escapes ("\n", "\r\n"); implies --framing delimiter`)
	fs.StringVar(&w.start, "start", "", `start-end framing: the bytes that open a frame, with Go escapes ("\x02"); implies --framing start-end`)
	fs.StringVar(&w.end, "end", "", `start-end framing: the bytes that close a frame ("\x03")`)
	fs.StringVar(&w.ack, "ack", "hl7", "acknowledgements: hl7 (HL7 ACK messages), single-byte (0x06/0x15), mllp-commit (MLLP release 2 blocks), fixed (--fixed-ack, --fixed-nak) or none")
	fs.StringVar(&w.fixedAck, "fixed-ack", "", "fixed ACK policy: the acknowledgement payload, with Go escapes; implies --ack fixed")
	fs.StringVar(&w.fixedNak, "fixed-nak", "", "fixed ACK policy: the negative acknowledgement payload (empty: close the connection instead)")
}

// unescape reads a flag value with Go string escapes.
func unescape(flag, s string) ([]byte, error) {
	u, err := strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: not a string with Go escapes", flag, s)
	}
	return []byte(u), nil
}

// apply sets framing and ack from the flags that were given.
func (w *wireFlags) apply(fs *pflag.FlagSet, framing **switchboardv1.Framing, ack **switchboardv1.AckPolicy) error {
	set := fs.Changed
	kind := w.framing
	if !set("framing") {
		switch {
		case set("delimiter"):
			kind = "delimiter"
		case set("start") || set("end"):
			kind = "start-end"
		case !set("strict"):
			kind = ""
		}
	}
	switch kind {
	case "":
	case "mllp":
		*framing = &switchboardv1.Framing{Kind: &switchboardv1.Framing_Mllp{Mllp: &switchboardv1.MllpFraming{Strict: w.strict}}}
	case "length-prefix":
		*framing = &switchboardv1.Framing{Kind: &switchboardv1.Framing_LengthPrefix{LengthPrefix: &switchboardv1.LengthPrefixFraming{}}}
	case "delimiter":
		d, err := unescape("delimiter", w.delimiter)
		if err != nil {
			return err
		}
		if len(d) == 0 {
			return fmt.Errorf("--framing delimiter needs --delimiter")
		}
		*framing = &switchboardv1.Framing{Kind: &switchboardv1.Framing_Delimiter{Delimiter: &switchboardv1.DelimiterFraming{Delimiter: d}}}
	case "start-end":
		s, err := unescape("start", w.start)
		if err != nil {
			return err
		}
		e, err := unescape("end", w.end)
		if err != nil {
			return err
		}
		if len(s) == 0 || len(e) == 0 {
			return fmt.Errorf("--framing start-end needs --start and --end")
		}
		*framing = &switchboardv1.Framing{Kind: &switchboardv1.Framing_StartEnd{StartEnd: &switchboardv1.StartEndFraming{Start: s, End: e, Strict: w.strict}}}
	default:
		return fmt.Errorf("--framing %q: want mllp, length-prefix, delimiter or start-end", kind)
	}
	a := w.ack
	if !set("ack") {
		a = ""
		if set("fixed-ack") || set("fixed-nak") {
			a = "fixed"
		}
	}
	switch a {
	case "":
	case "hl7":
		*ack = &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_Hl7{Hl7: &switchboardv1.Hl7AckPolicy{}}}
	case "single-byte":
		*ack = &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_SingleByte{SingleByte: &switchboardv1.SingleByteAckPolicy{}}}
	case "mllp-commit":
		*ack = &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_MllpCommit{MllpCommit: &switchboardv1.MllpCommitAckPolicy{}}}
	case "none":
		*ack = &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_None{None: &switchboardv1.NoAckPolicy{}}}
	case "fixed":
		ok, err := unescape("fixed-ack", w.fixedAck)
		if err != nil {
			return err
		}
		nak, err := unescape("fixed-nak", w.fixedNak)
		if err != nil {
			return err
		}
		if len(ok) == 0 {
			return fmt.Errorf("--ack fixed needs --fixed-ack")
		}
		*ack = &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_Fixed{Fixed: &switchboardv1.FixedAckPolicy{Ack: ok, Nak: nak}}}
	default:
		return fmt.Errorf("--ack %q: want hl7, single-byte, mllp-commit, fixed or none", a)
	}
	return nil
}

// configJSON reads --config-json: JSON, or @FILE, or @- for stdin, into m.
func configJSON(env *cliEnv, s string, m proto.Message) error {
	if s == "" {
		return nil
	}
	b := []byte(s)
	if rest, ok := strings.CutPrefix(s, "@"); ok {
		var err error
		if rest == "-" {
			b, err = io.ReadAll(io.LimitReader(env.stdin, 16<<20))
		} else {
			b, err = os.ReadFile(rest)
		}
		if err != nil {
			return fmt.Errorf("--config-json: %w", err)
		}
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return fmt.Errorf("--config-json: %v", err)
	}
	return nil
}

// setDuration sets *d from a duration flag when it was given.
func setDuration(fs *pflag.FlagSet, name string, v time.Duration, d **durationpb.Duration) {
	if fs.Changed(name) {
		*d = durationpb.New(v)
	}
}

func setInt32(fs *pflag.FlagSet, name string, v int32, d *int32) {
	if fs.Changed(name) {
		*d = v
	}
}

const listenLong = `listen starts a listener: Switchboard binds ADDRESS, journals every
message peers send there, then acknowledges it (HL7 ACKs over MLLP unless
told otherwise). Read what arrives with "switchboard recv".

It is idempotent by ID: the same ID and config returns the existing
listener; the same ID with another config is a conflict (exit 5): stop it
first. The flags set the common fields of the API's ListenerConfig;
--config-json gives the whole message (protojson, or @FILE), and flags given
with it override its fields.`

func newListenCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	var (
		w                                     wireFlags
		cfgJSON                               string
		maxFrame, maxConns, maxPerSource      int32
		maxJunk                               int32
		idle, frameTimeout, keepalive, userTO time.Duration
		sources, peerNames, proxies           []string
		tlsProfile, clientCert                string
		rate                                  float64
		dedup                                 time.Duration
		dedupScope                            string
		consumer                              string
		consumerTimeout                       time.Duration
		fallback                              string
	)
	cmd := &cobra.Command{
		Use:   "listen ID [ADDRESS]",
		Short: "Start a listener (MLLP with HL7 ACKs by default)",
		Long:  listenLong,
		Example: `  switchboard listen adt 127.0.0.1:2575
  switchboard listen adt 0.0.0.0:2575 --allow-source 10.20.0.0/16 --max-connections 64
  switchboard listen raw 127.0.0.1:7000 --delimiter '\n' --ack none
  switchboard listen adt 127.0.0.1:2575 --config-json @listener.json`,
		Args: rangeArgs(1, 2),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			cfg := &switchboardv1.ListenerConfig{}
			if err := configJSON(env, cfgJSON, cfg); err != nil {
				return usageError(cmd, "%v", err)
			}
			fs := cmd.Flags()
			if len(args) == 2 {
				cfg.Address = args[1]
			}
			if cfg.GetAddress() == "" {
				return usageError(cmd, "give the ADDRESS to listen on, as HOST:PORT (port 0 picks a free one)")
			}
			if err := w.apply(fs, &cfg.Framing, &cfg.AckPolicy); err != nil {
				return usageError(cmd, "%v", err)
			}
			setInt32(fs, "max-frame-bytes", maxFrame, &cfg.MaxFrameBytes)
			setInt32(fs, "max-connections", maxConns, &cfg.MaxConnections)
			setInt32(fs, "max-connections-per-source", maxPerSource, &cfg.MaxConnectionsPerSource)
			setInt32(fs, "max-junk-bytes", maxJunk, &cfg.MaxJunkBytes)
			setDuration(fs, "idle-timeout", idle, &cfg.IdleTimeout)
			setDuration(fs, "frame-timeout", frameTimeout, &cfg.FrameTimeout)
			setDuration(fs, "keepalive", keepalive, &cfg.Keepalive)
			setDuration(fs, "tcp-user-timeout", userTO, &cfg.TcpUserTimeout)
			if fs.Changed("allow-source") {
				cfg.AllowedSources = sources
			}
			if fs.Changed("proxy-from") {
				cfg.ProxyProtocol = &switchboardv1.ProxyProtocol{TrustedSources: proxies}
			}
			if fs.Changed("max-rate") {
				cfg.MaxMessagesPerSecond = rate
			}
			if fs.Changed("tls-profile") || fs.Changed("client-cert") || fs.Changed("allow-peer-name") {
				if cfg.Tls == nil {
					cfg.Tls = &switchboardv1.ListenerTls{}
				}
				if fs.Changed("tls-profile") {
					cfg.Tls.Profile = tlsProfile
				}
				if fs.Changed("client-cert") {
					v, err := parseEnum("client-cert", clientCert, switchboardv1.ClientCertificate_value, "CLIENT_CERTIFICATE_")
					if err != nil {
						return usageError(cmd, "%v", err)
					}
					cfg.Tls.ClientCertificate = switchboardv1.ClientCertificate(v)
				}
				if fs.Changed("allow-peer-name") {
					cfg.Tls.AllowedPeerNames = peerNames
				}
			}
			if fs.Changed("dedup-window") || fs.Changed("dedup-scope") {
				if cfg.Duplicates == nil {
					cfg.Duplicates = &switchboardv1.DuplicateSuppression{}
				}
				setDuration(fs, "dedup-window", dedup, &cfg.Duplicates.Window)
				if fs.Changed("dedup-scope") {
					v, err := parseEnum("dedup-scope", dedupScope, switchboardv1.DuplicateScope_value, "DUPLICATE_SCOPE_")
					if err != nil {
						return usageError(cmd, "%v", err)
					}
					cfg.Duplicates.Scope = switchboardv1.DuplicateScope(v)
				}
			}
			if fs.Changed("consumer-ack") || fs.Changed("consumer-ack-timeout") || fs.Changed("consumer-ack-fallback") {
				if cfg.ConsumerAck == nil {
					cfg.ConsumerAck = &switchboardv1.ConsumerAck{}
				}
				if fs.Changed("consumer-ack") {
					cfg.ConsumerAck.Consumer = consumer
				}
				setDuration(fs, "consumer-ack-timeout", consumerTimeout, &cfg.ConsumerAck.Timeout)
				if fs.Changed("consumer-ack-fallback") {
					v, err := parseEnum("consumer-ack-fallback", fallback, switchboardv1.AckCode_value, "ACK_CODE_")
					if err != nil {
						return usageError(cmd, "%v", err)
					}
					cfg.ConsumerAck.FallbackCode = switchboardv1.AckCode(v)
				}
			}
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.StartListener(cctx, &switchboardv1.StartListenerRequest{ListenerId: args[0], Config: cfg})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			return listenersTable(env.stdout, []*switchboardv1.Listener{resp.GetListener()})
		}),
	}
	fs := cmd.Flags()
	w.register(fs)
	fs.Int32Var(&maxFrame, "max-frame-bytes", 0, "largest message accepted, in bytes (0: 4 MiB)")
	fs.Int32Var(&maxConns, "max-connections", 0, "most connections open at once (0: 1024)")
	fs.Int32Var(&maxPerSource, "max-connections-per-source", 0, "most connections open at once from one peer address (0: half of --max-connections, at least 8)")
	fs.Int32Var(&maxJunk, "max-junk-bytes", 0, "most bytes outside frames in a row before the connection is closed (0: 64 KiB)")
	fs.DurationVar(&idle, "idle-timeout", 0, "close a connection that completes no message for this long (0: never)")
	fs.DurationVar(&frameTimeout, "frame-timeout", 0, "a started message must be complete within this time (default 30s)")
	fs.DurationVar(&keepalive, "keepalive", 0, "TCP keepalive period (default 30s; 0: off)")
	fs.DurationVar(&userTO, "tcp-user-timeout", 0, "drop a connection whose data goes unacknowledged this long (default 60s; 0: the kernel's)")
	fs.StringSliceVar(&sources, "allow-source", nil, "serve only peers in these CIDR prefixes (repeatable or comma-separated; default: all)")
	fs.StringSliceVar(&proxies, "proxy-from", nil, "accept PROXY protocol headers from load balancers in these CIDR prefixes")
	fs.Float64Var(&rate, "max-rate", 0, "most messages read per second from each connection (0: unlimited)")
	fs.StringVar(&tlsProfile, "tls-profile", "", "serve TLS with this profile of the server's --tls-profiles directory")
	fs.StringVar(&clientCert, "client-cert", "", "TLS client certificates: none, optional or required (default: required when the profile has a ca.crt)")
	fs.StringSliceVar(&peerNames, "allow-peer-name", nil, "TLS: client certificate names allowed (repeatable; *.example.org for one label)")
	fs.DurationVar(&dedup, "dedup-window", 0, "suppress duplicates: a control id (MSH-10) the same peer sent within this window is not stored again and gets the first ACK again")
	fs.StringVar(&dedupScope, "dedup-scope", "", "what makes two messages come from the same peer: sender (MSH-3, MSH-4; default) or remote-address")
	fs.StringVar(&consumer, "consumer-ack", "", "let this durable consumer decide each message's ACK (AnswerMessage)")
	fs.DurationVar(&consumerTimeout, "consumer-ack-timeout", 0, "how long the peer's ACK waits for the consumer's answer (default 5s)")
	fs.StringVar(&fallback, "consumer-ack-fallback", "", "the ACK when no answer comes in time: aa, ae (default) or ar")
	fs.StringVar(&cfgJSON, "config-json", "", "the whole ListenerConfig as JSON (proto field names), or @FILE; flags given override its fields")
	return clientCmd(cmd, o)
}

func newStopCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	var drain time.Duration
	cmd := &cobra.Command{
		Use:   "stop LISTENER",
		Short: "Stop a listener and remove it",
		Long: `stop stops a listener: it stops accepting, lets messages being received finish
and be acknowledged (bounded by --drain-timeout), closes its connections and
removes it, so it is not restored at the next start. It prints the final
counters.`,
		Example:           `  switchboard stop adt`,
		Args:              exactArgs(1),
		ValidArgsFunction: completeIDs(env, o, true, false),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			req := &switchboardv1.StopListenerRequest{ListenerId: args[0]}
			setDuration(cmd.Flags(), "drain-timeout", drain, &req.DrainTimeout)
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.StopListener(cctx, req)
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			return listenersTable(env.stdout, []*switchboardv1.Listener{resp.GetListener()})
		}),
	}
	cmd.Flags().DurationVar(&drain, "drain-timeout", 0, "how long messages in flight may take to finish (default 10s, at most 300s)")
	return clientCmd(cmd, o)
}

const connectLong = `connect opens an outbound connection to a peer (MLLP with HL7 ACKs unless
told otherwise) and keeps it: Switchboard reconnects by itself with backoff
when it drops, and restores it after a restart, until "switchboard
disconnect". Send on it with "switchboard send".

A refused connection or a name that does not resolve fails at once (exit 6)
and creates nothing. It is idempotent by ID like listen. --config-json gives
the whole ConnectionConfig (protojson, or @FILE); flags override its fields.`

func newConnectCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	var (
		w                                             wireFlags
		cfgJSON                                       string
		connectTO, ackTO, keepalive, userTO           time.Duration
		maxFrame, maxAttempts, maxInFlight            int32
		noReconnect, failRejected, peerTLS            bool
		reconnectDelay, reconnectMax, retry, retryMax time.Duration
		inDoubt, tlsProfile, serverName               string
		peerNames                                     []string
		rate                                          float64
	)
	cmd := &cobra.Command{
		Use:   "connect ID [ADDRESS]",
		Short: "Open an outbound connection to a peer",
		Long:  connectLong,
		Example: `  switchboard connect lab 127.0.0.1:2576
  switchboard connect lab lab.example.org:2576 --ack-timeout 30s --in-doubt hold
  switchboard connect lab lab.example.org:6661 --peer-tls --tls-profile lab`,
		Args: rangeArgs(1, 2),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			cfg := &switchboardv1.ConnectionConfig{}
			if err := configJSON(env, cfgJSON, cfg); err != nil {
				return usageError(cmd, "%v", err)
			}
			fs := cmd.Flags()
			if len(args) == 2 {
				cfg.Address = args[1]
			}
			if cfg.GetAddress() == "" {
				return usageError(cmd, "give the peer's ADDRESS, as HOST:PORT")
			}
			if err := w.apply(fs, &cfg.Framing, &cfg.AckPolicy); err != nil {
				return usageError(cmd, "%v", err)
			}
			setDuration(fs, "connect-timeout", connectTO, &cfg.ConnectTimeout)
			setDuration(fs, "ack-timeout", ackTO, &cfg.AckTimeout)
			setDuration(fs, "keepalive", keepalive, &cfg.Keepalive)
			setDuration(fs, "tcp-user-timeout", userTO, &cfg.TcpUserTimeout)
			setInt32(fs, "max-frame-bytes", maxFrame, &cfg.MaxFrameBytes)
			if fs.Changed("max-rate") {
				cfg.MaxMessagesPerSecond = rate
			}
			if fs.Changed("no-reconnect") || fs.Changed("reconnect-delay") || fs.Changed("reconnect-max-delay") {
				if cfg.Reconnect == nil {
					cfg.Reconnect = &switchboardv1.ReconnectPolicy{}
				}
				if fs.Changed("no-reconnect") {
					cfg.Reconnect.Disabled = noReconnect
				}
				setDuration(fs, "reconnect-delay", reconnectDelay, &cfg.Reconnect.InitialDelay)
				setDuration(fs, "reconnect-max-delay", reconnectMax, &cfg.Reconnect.MaxDelay)
			}
			for _, n := range []string{"max-attempts", "retry-delay", "max-retry-delay", "fail-rejected", "in-doubt", "max-in-flight"} {
				if fs.Changed(n) && cfg.Outbox == nil {
					cfg.Outbox = &switchboardv1.OutboxPolicy{}
				}
			}
			if cfg.Outbox != nil {
				setInt32(fs, "max-attempts", maxAttempts, &cfg.Outbox.MaxAttempts)
				setInt32(fs, "max-in-flight", maxInFlight, &cfg.Outbox.MaxInFlight)
				setDuration(fs, "retry-delay", retry, &cfg.Outbox.RetryDelay)
				setDuration(fs, "max-retry-delay", retryMax, &cfg.Outbox.MaxRetryDelay)
				if fs.Changed("fail-rejected") {
					cfg.Outbox.FailRejected = failRejected
				}
				if fs.Changed("in-doubt") {
					v, err := parseEnum("in-doubt", inDoubt, switchboardv1.InDoubtPolicy_value, "IN_DOUBT_POLICY_")
					if err != nil {
						return usageError(cmd, "%v", err)
					}
					cfg.Outbox.InDoubt = switchboardv1.InDoubtPolicy(v)
				}
			}
			if peerTLS || fs.Changed("tls-profile") || fs.Changed("peer-server-name") || fs.Changed("allow-peer-name") {
				if cfg.Tls == nil {
					cfg.Tls = &switchboardv1.ConnectionTls{}
				}
				if fs.Changed("tls-profile") {
					cfg.Tls.Profile = tlsProfile
				}
				if fs.Changed("peer-server-name") {
					cfg.Tls.ServerName = serverName
				}
				if fs.Changed("allow-peer-name") {
					cfg.Tls.AllowedPeerNames = peerNames
				}
			}
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.Connect(cctx, &switchboardv1.ConnectRequest{ConnectionId: args[0], Config: cfg})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			return connectionsTable(env.stdout, []*switchboardv1.Connection{resp.GetConnection()})
		}),
	}
	fs := cmd.Flags()
	w.register(fs)
	fs.DurationVar(&connectTO, "connect-timeout", 0, "how long to wait for the TCP connection (default 10s)")
	fs.DurationVar(&ackTO, "ack-timeout", 0, "default time a send may take to write its message and get the ACK (default 10s)")
	fs.Int32Var(&maxFrame, "max-frame-bytes", 0, "largest message accepted from the peer (0: 4 MiB)")
	fs.DurationVar(&keepalive, "keepalive", 0, "TCP keepalive period (default 30s; 0: off)")
	fs.DurationVar(&userTO, "tcp-user-timeout", 0, "drop the connection when its data goes unacknowledged this long (default 60s; 0: the kernel's)")
	fs.Float64Var(&rate, "max-rate", 0, "most messages read per second from the peer (0: unlimited)")
	fs.BoolVar(&noReconnect, "no-reconnect", false, "do not reconnect when the connection closes (queued messages wait for the next connect)")
	fs.DurationVar(&reconnectDelay, "reconnect-delay", 0, "first wait before reconnecting, doubling after each failure (default 1s)")
	fs.DurationVar(&reconnectMax, "reconnect-max-delay", 0, "longest wait between reconnects (default 60s)")
	fs.Int32Var(&maxAttempts, "max-attempts", 0, "queued sends: attempts before a message fails (0: 10)")
	fs.DurationVar(&retry, "retry-delay", 0, "queued sends: wait before the second attempt, doubling (default 1s)")
	fs.DurationVar(&retryMax, "max-retry-delay", 0, "queued sends: longest wait between attempts (default 60s)")
	fs.BoolVar(&failRejected, "fail-rejected", false, "queued sends: fail a message the peer rejected (AR, CR, NAK) instead of retrying it")
	fs.StringVar(&inDoubt, "in-doubt", "", "queued sends: a message with no trustworthy ACK is resent (resend, the default), held for an operator (hold) or failed (fail)")
	fs.Int32Var(&maxInFlight, "max-in-flight", 0, "queued sends: messages written before their ACKs return, for peers that pipeline (0: 1)")
	fs.BoolVar(&peerTLS, "peer-tls", false, "connect with TLS, verifying the peer with the system's CAs (or --tls-profile's ca.crt)")
	fs.StringVar(&tlsProfile, "tls-profile", "", "TLS profile of the server's --tls-profiles directory: its ca.crt verifies the peer, its tls.crt is the client certificate; implies --peer-tls")
	fs.StringVar(&serverName, "peer-server-name", "", "name the peer's certificate must be valid for (default: the host of ADDRESS); implies --peer-tls")
	fs.StringSliceVar(&peerNames, "allow-peer-name", nil, "names the peer's certificate must also match (repeatable); implies --peer-tls")
	fs.StringVar(&cfgJSON, "config-json", "", "the whole ConnectionConfig as JSON (proto field names), or @FILE; flags given override its fields")
	return clientCmd(cmd, o)
}

func newDisconnectCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "disconnect CONNECTION",
		Short: "Close a connection (an outbound one is removed)",
		Long: `disconnect closes a connection. An outbound connection is removed, with its
queued messages (they fail); an inbound one is closed (its peer may connect
again). It prints the final counters.`,
		Example:           `  switchboard disconnect lab`,
		Args:              exactArgs(1),
		ValidArgsFunction: completeIDs(env, o, false, true),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			cctx, cancel := c.call(ctx)
			defer cancel()
			resp, err := c.api.Disconnect(cctx, &switchboardv1.DisconnectRequest{ConnectionId: args[0]})
			if err != nil {
				return err
			}
			if c.json() {
				return printJSON(env.stdout, resp, false)
			}
			return connectionsTable(env.stdout, []*switchboardv1.Connection{resp.GetConnection()})
		}),
	}
	return clientCmd(cmd, o)
}

func newLsCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	var listener, direction string
	cmd := &cobra.Command{
		Use:   "ls [listeners|connections]",
		Short: "List listeners and connections",
		Long: `ls lists listeners and connections (open inbound ones and every outbound one),
or only one kind. With -o json it prints {"listeners": [...], "connections":
[...]}, each element as in the API.`,
		Example: `  switchboard ls
  switchboard ls connections --listener adt
  switchboard ls connections --direction outbound -o json`,
		Args:      rangeArgs(0, 1),
		ValidArgs: []cobra.Completion{"listeners", "connections"},
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			what := ""
			if len(args) == 1 {
				what = args[0]
			}
			switch what {
			case "", "listeners", "connections":
			case "listener", "l":
				what = "listeners"
			case "connection", "c":
				what = "connections"
			default:
				return usageError(cmd, "ls %q: want listeners or connections", what)
			}
			var dir switchboardv1.Direction
			if direction != "" {
				v, err := parseEnum("direction", direction, switchboardv1.Direction_value, "DIRECTION_")
				if err != nil {
					return usageError(cmd, "%v", err)
				}
				dir = switchboardv1.Direction(v)
			}
			var ls []*switchboardv1.Listener
			var cs []*switchboardv1.Connection
			var err error
			if what != "connections" {
				ls, _, err = listAll(ctx, c, 0, func(ctx context.Context, token string, size int32) ([]*switchboardv1.Listener, string, error) {
					r, err := c.api.ListListeners(ctx, &switchboardv1.ListListenersRequest{PageSize: size, PageToken: token})
					return r.GetListeners(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
			}
			if what != "listeners" {
				cs, _, err = listAll(ctx, c, 0, func(ctx context.Context, token string, size int32) ([]*switchboardv1.Connection, string, error) {
					r, err := c.api.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{ListenerId: listener, Direction: dir, PageSize: size, PageToken: token})
					return r.GetConnections(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
			}
			if c.json() {
				out := map[string][]json.RawMessage{}
				if what != "connections" {
					out["listeners"] = rawList(ls)
				}
				if what != "listeners" {
					out["connections"] = rawList(cs)
				}
				b, err := json.Marshal(out)
				if err != nil {
					return err
				}
				return writeJSON(env.stdout, b, false)
			}
			if what != "connections" {
				if len(ls) == 0 {
					fmt.Fprintln(env.stdout, "No listeners.")
				} else if err := listenersTable(env.stdout, ls); err != nil {
					return err
				}
			}
			if what == "" {
				fmt.Fprintln(env.stdout)
			}
			if what != "listeners" {
				if len(cs) == 0 {
					fmt.Fprintln(env.stdout, "No connections.")
				} else if err := connectionsTable(env.stdout, cs); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&listener, "listener", "", "only connections accepted by this listener")
	cmd.Flags().StringVar(&direction, "direction", "", "only inbound or outbound connections")
	return clientCmd(cmd, o)
}

// rawList is a list of messages as JSON values.
func rawList[M proto.Message](ms []M) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(ms))
	for _, m := range ms {
		out = append(out, protoRaw(m))
	}
	return out
}

func framingName(f *switchboardv1.Framing) string {
	switch k := f.GetKind().(type) {
	case *switchboardv1.Framing_LengthPrefix:
		return "length-prefix"
	case *switchboardv1.Framing_Delimiter:
		return fmt.Sprintf("delimiter %q", k.Delimiter.GetDelimiter())
	case *switchboardv1.Framing_StartEnd:
		return fmt.Sprintf("start-end %q %q", k.StartEnd.GetStart(), k.StartEnd.GetEnd())
	case *switchboardv1.Framing_Mllp:
		if k.Mllp.GetStrict() {
			return "mllp-strict"
		}
	}
	return "mllp"
}

func ackName(a *switchboardv1.AckPolicy) string {
	switch a.GetKind().(type) {
	case *switchboardv1.AckPolicy_SingleByte:
		return "single-byte"
	case *switchboardv1.AckPolicy_MllpCommit:
		return "mllp-commit"
	case *switchboardv1.AckPolicy_Fixed:
		return "fixed"
	case *switchboardv1.AckPolicy_None:
		return "none"
	}
	return "hl7"
}

// In a cluster the tables get an INSTANCE column (who runs the resource);
// on a single instance, where no status names one, they do not.

func listenersTable(w io.Writer, ls []*switchboardv1.Listener) error {
	clustered := slices.ContainsFunc(ls, func(l *switchboardv1.Listener) bool { return l.GetStatus().GetInstance() != "" })
	header := []string{"LISTENER", "STATE", "ADDRESS", "FRAMING", "ACK", "OPEN", "ACCEPTED", "RECEIVED", "ERROR"}
	if clustered {
		header = slices.Insert(header, 2, "INSTANCE")
	}
	t := newTable(w, header...)
	for _, l := range ls {
		st := l.GetStatus()
		addr := st.GetBoundAddress()
		if addr == "" {
			addr = l.GetConfig().GetAddress()
		}
		cells := []string{l.GetListenerId(), enumName(st.GetState(), "LISTENER_STATE_"), addr, framingName(l.GetConfig().GetFraming()), ackName(l.GetConfig().GetAckPolicy()),
			itoa(st.GetOpenConnectionCount()), itoa(st.GetAcceptedConnectionCount()), itoa(st.GetConnectionTotals().GetReceivedFrameCount()), st.GetLastError()}
		if clustered {
			cells = slices.Insert(cells, 2, st.GetInstance())
		}
		t.row(cells...)
	}
	return t.flush()
}

func connectionsTable(w io.Writer, cs []*switchboardv1.Connection) error {
	clustered := slices.ContainsFunc(cs, func(c *switchboardv1.Connection) bool { return c.GetStatus().GetInstance() != "" })
	header := []string{"CONNECTION", "DIRECTION", "STATE", "LISTENER/PEER", "REMOTE", "RECEIVED", "SENT", "QUEUED", "ERROR"}
	if clustered {
		header = slices.Insert(header, 3, "INSTANCE")
	}
	t := newTable(w, header...)
	for _, cn := range cs {
		st := cn.GetStatus()
		origin := cn.GetListenerId()
		if origin == "" {
			origin = cn.GetConfig().GetAddress()
		}
		errText := st.GetLastError()
		if r := enumName(st.GetCloseReason(), "CLOSE_REASON_"); errText == "" && r != "" {
			errText = r
		}
		cells := []string{cn.GetConnectionId(), strings.ToLower(enumName(cn.GetDirection(), "DIRECTION_")), enumName(st.GetState(), "CONNECTION_STATE_"), origin, st.GetRemoteAddress(),
			itoa(st.GetCounters().GetReceivedFrameCount()), itoa(st.GetCounters().GetSentFrameCount()), itoa(st.GetQueuedMessageCount()), errText}
		if clustered {
			cells = slices.Insert(cells, 3, st.GetInstance())
		}
		t.row(cells...)
	}
	return t.flush()
}

func newStatusCmd(env *cliEnv) *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "status [ID]",
		Short: "Show the server's status, or one listener's or connection's",
		Long: `status without an ID shows the server: its health, the journal's sequences,
and how many listeners, connections and consumers it has in each state.
With an ID it shows the listener and/or connection of that id in detail,
with every counter (exit 3 when there is neither).`,
		Example: `  switchboard status
  switchboard status adt
  switchboard status lab -o json`,
		Args:              rangeArgs(0, 1),
		ValidArgsFunction: completeIDs(env, o, true, true),
		RunE: runClient(env, o, func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				return resourceStatus(ctx, c, args[0])
			}
			return serverStatus(ctx, c)
		}),
	}
	return clientCmd(cmd, o)
}

// journalJSON is status -o json's journal: GetJournal's answer, or
// {"error": ...} when the journal could not answer.
func journalJSON(j *switchboardv1.GetJournalResponse, errText string) any {
	if errText != "" {
		return map[string]string{"error": errText}
	}
	return protoRaw(j)
}

func serverStatus(ctx context.Context, c *client) error {
	cctx, cancel := c.call(ctx)
	defer cancel()
	health := "UNKNOWN"
	h, err := healthpb.NewHealthClient(c.cc).Check(cctx, &healthpb.HealthCheckRequest{Service: switchboardv1.SwitchboardService_ServiceDesc.ServiceName})
	switch {
	case err == nil:
		health = h.GetStatus().String()
	case status.Code(err) == codes.Unavailable, status.Code(err) == codes.DeadlineExceeded:
		return err
	}
	// A journal that cannot answer (no JetStream quorum, a failed disk) is
	// shown, not an error: status is what an operator runs to see why.
	j, err := c.api.GetJournal(cctx, &switchboardv1.GetJournalRequest{})
	journalErr := ""
	switch code := status.Code(err); {
	case err == nil:
	case code == codes.Unavailable, code == codes.DeadlineExceeded:
		journalErr = status.Convert(err).Message()
	default:
		return err
	}
	ls, _, err := listAll(ctx, c, 0, func(ctx context.Context, token string, size int32) ([]*switchboardv1.Listener, string, error) {
		r, err := c.api.ListListeners(ctx, &switchboardv1.ListListenersRequest{PageSize: size, PageToken: token})
		return r.GetListeners(), r.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	cs, _, err := listAll(ctx, c, 0, func(ctx context.Context, token string, size int32) ([]*switchboardv1.Connection, string, error) {
		r, err := c.api.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{PageSize: size, PageToken: token})
		return r.GetConnections(), r.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	// A viewer may not be allowed to list consumers: shown as unknown.
	consumers := int64(-1)
	if cons, _, err := listAll(ctx, c, 0, func(ctx context.Context, token string, size int32) ([]*switchboardv1.Consumer, string, error) {
		r, err := c.api.ListConsumers(ctx, &switchboardv1.ListConsumersRequest{PageSize: size, PageToken: token})
		return r.GetConsumers(), r.GetNextPageToken(), err
	}); err == nil {
		consumers = int64(len(cons))
	}
	lStates, cStates := map[string]int{}, map[string]int{}
	var queued int64
	for _, l := range ls {
		lStates[enumName(l.GetStatus().GetState(), "LISTENER_STATE_")]++
	}
	for _, cn := range cs {
		cStates[strings.ToLower(enumName(cn.GetDirection(), "DIRECTION_"))+" "+enumName(cn.GetStatus().GetState(), "CONNECTION_STATE_")]++
		queued += cn.GetStatus().GetQueuedMessageCount()
	}
	if c.json() {
		b, err := json.Marshal(map[string]any{
			"server":            c.opts.server,
			"health":            health,
			"journal":           journalJSON(j, journalErr),
			"listeners":         len(ls),
			"listener_states":   lStates,
			"connections":       len(cs),
			"connection_states": cStates,
			"queued_messages":   queued,
			"consumers":         consumers,
		})
		if err != nil {
			return err
		}
		return writeJSON(c.env.stdout, b, false)
	}
	w := c.env.stdout
	fmt.Fprintf(w, "Server:       %s\n", c.opts.server)
	fmt.Fprintf(w, "Health:       %s\n", health)
	if journalErr != "" {
		fmt.Fprintf(w, "Journal:      unavailable: %s\n", journalErr)
	} else {
		fmt.Fprintf(w, "Journal:      sequences %d to %d\n", j.GetFirstSequence(), j.GetLastSequence())
	}
	fmt.Fprintf(w, "Listeners:    %d%s\n", len(ls), countsText(lStates))
	fmt.Fprintf(w, "Connections:  %d%s\n", len(cs), countsText(cStates))
	fmt.Fprintf(w, "Queued:       %d messages\n", queued)
	if consumers >= 0 {
		fmt.Fprintf(w, "Consumers:    %d\n", consumers)
	}
	return nil
}

// countsText is " (2 LISTENING, 1 BACKING_OFF)", sorted by name.
func countsText(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func resourceStatus(ctx context.Context, c *client, id string) error {
	cctx, cancel := c.call(ctx)
	defer cancel()
	l, lerr := c.api.GetListener(cctx, &switchboardv1.GetListenerRequest{ListenerId: id})
	if lerr != nil && status.Code(lerr) != codes.NotFound {
		return lerr
	}
	cn, cerr := c.api.GetConnection(cctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
	if cerr != nil && status.Code(cerr) != codes.NotFound {
		return cerr
	}
	if lerr != nil && cerr != nil {
		return &exitError{code: exitNotFound, err: fmt.Errorf("no listener or connection %q", id)}
	}
	if c.json() {
		out := map[string]json.RawMessage{}
		if lerr == nil {
			out["listener"] = protoRaw(l.GetListener())
		}
		if cerr == nil {
			out["connection"] = protoRaw(cn.GetConnection())
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		return writeJSON(c.env.stdout, b, false)
	}
	w := c.env.stdout
	if lerr == nil {
		writeListener(w, l.GetListener())
	}
	if cerr == nil {
		if lerr == nil {
			fmt.Fprintln(w)
		}
		writeConnection(w, cn.GetConnection())
	}
	return nil
}

// kv prints "  Key:  value" lines, skipping empty values.
type kv struct{ w io.Writer }

func (k kv) line(key, format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	if v == "" || v == "-" {
		return
	}
	fmt.Fprintf(k.w, "  %-20s %s\n", key+":", v)
}

func writeListener(w io.Writer, l *switchboardv1.Listener) {
	st, cfg := l.GetStatus(), l.GetConfig()
	fmt.Fprintf(w, "Listener %s\n", l.GetListenerId())
	k := kv{w}
	k.line("State", "%s", enumName(st.GetState(), "LISTENER_STATE_"))
	k.line("Address", "%s", st.GetBoundAddress())
	if cfg.GetAddress() != st.GetBoundAddress() {
		k.line("Configured address", "%s", cfg.GetAddress())
	}
	k.line("Framing", "%s", framingName(cfg.GetFraming()))
	k.line("ACK policy", "%s", ackName(cfg.GetAckPolicy()))
	if p := cfg.GetTls().GetProfile(); p != "" {
		k.line("TLS profile", "%s", p)
	}
	k.line("Created", "%s", ts(st.GetCreateTime()))
	k.line("Connections", "%d open, %d accepted, %d rejected (limit), %d rejected (per source), %d denied (source)",
		st.GetOpenConnectionCount(), st.GetAcceptedConnectionCount(), st.GetRejectedConnectionCount(), st.GetSourceRejectedConnectionCount(), st.GetSourceDeniedConnectionCount())
	if n := st.GetTlsFailedConnectionCount() + st.GetPeerDeniedConnectionCount() + st.GetProxyHeaderFailedConnectionCount(); n > 0 {
		k.line("Handshakes failed", "%d TLS, %d peer name, %d PROXY header", st.GetTlsFailedConnectionCount(), st.GetPeerDeniedConnectionCount(), st.GetProxyHeaderFailedConnectionCount())
	}
	writeCounters(k, st.GetConnectionTotals())
	k.line("Last error", "%s", st.GetLastError())
	k.line("Next attempt", "%s", ts(st.GetNextAttemptTime()))
}

func writeConnection(w io.Writer, cn *switchboardv1.Connection) {
	st := cn.GetStatus()
	fmt.Fprintf(w, "Connection %s (%s)\n", cn.GetConnectionId(), strings.ToLower(enumName(cn.GetDirection(), "DIRECTION_")))
	k := kv{w}
	k.line("State", "%s", enumName(st.GetState(), "CONNECTION_STATE_"))
	if cn.GetListenerId() != "" {
		k.line("Listener", "%s", cn.GetListenerId())
	}
	if cfg := cn.GetConfig(); cfg != nil {
		k.line("Peer", "%s", cfg.GetAddress())
		k.line("Framing", "%s", framingName(cfg.GetFraming()))
		k.line("ACK policy", "%s", ackName(cfg.GetAckPolicy()))
		k.line("ACK timeout", "%s", dur(cfg.GetAckTimeout()))
	}
	k.line("Local", "%s", st.GetLocalAddress())
	k.line("Remote", "%s", st.GetRemoteAddress())
	if t := st.GetTls(); t != nil {
		k.line("TLS", "%s %s %s", t.GetVersion(), t.GetCipherSuite(), t.GetPeerIdentity())
	}
	k.line("Opened", "%s", ts(st.GetOpenTime()))
	k.line("Last activity", "%s", ts(st.GetLastActivityTime()))
	writeCounters(k, st.GetCounters())
	if cn.GetDirection() == switchboardv1.Direction_DIRECTION_OUTBOUND {
		k.line("Queued", "%d messages", st.GetQueuedMessageCount())
		k.line("Reconnects", "%d (failed connects since last open: %d)", st.GetReconnectCount(), st.GetFailedConnectCount())
	}
	k.line("Closed", "%s %s %s", enumName(st.GetCloseReason(), "CLOSE_REASON_"), st.GetCloseDetail(), ts(st.GetCloseTime()))
	k.line("Last error", "%s", st.GetLastError())
	k.line("Next attempt", "%s", ts(st.GetNextAttemptTime()))
}

func writeCounters(k kv, c *switchboardv1.ConnectionCounters) {
	k.line("Received", "%d messages, %d bytes", c.GetReceivedFrameCount(), c.GetReceivedBytes())
	k.line("Sent", "%d frames, %d bytes", c.GetSentFrameCount(), c.GetSentBytes())
	k.line("ACKs sent", "%s", ackCounts(c.GetSentAcks()))
	k.line("ACKs received", "%s", ackCounts(c.GetReceivedAcks()))
	if n := c.GetFramingErrorCount() + c.GetJournalErrorCount() + c.GetInvalidMessageCount() + c.GetAckTimeoutCount() + c.GetAckMismatchCount(); n > 0 {
		k.line("Errors", "%d framing, %d journal, %d invalid HL7, %d ACK timeouts, %d ACK mismatches",
			c.GetFramingErrorCount(), c.GetJournalErrorCount(), c.GetInvalidMessageCount(), c.GetAckTimeoutCount(), c.GetAckMismatchCount())
	}
	if n := c.GetJunkBytes() + c.GetDiscardedPartialFrameCount() + c.GetMissingTrailerCount() + c.GetUnsolicitedAckCount() + c.GetDuplicateCount(); n > 0 {
		k.line("Oddities", "%d junk bytes, %d partial frames dropped, %d missing trailers, %d unsolicited ACKs, %d duplicates",
			c.GetJunkBytes(), c.GetDiscardedPartialFrameCount(), c.GetMissingTrailerCount(), c.GetUnsolicitedAckCount(), c.GetDuplicateCount())
	}
}

func ackCounts(cs []*switchboardv1.AckCount) string {
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s %d", enumName(c.GetCode(), "ACK_CODE_"), c.GetCount()))
	}
	return strings.Join(parts, ", ")
}
