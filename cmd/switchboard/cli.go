package main

// The client side of the command: options shared by every command that
// talks to a running server, the connection, output and error reporting.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

const defaultServer = "127.0.0.1:50051"

// clientOptions are the flags of every command that talks to a server.
type clientOptions struct {
	server        string
	useTLS        bool
	tlsCA         string
	tlsCert       string
	tlsKey        string
	tlsServerName string
	token         string
	output        string
	timeout       time.Duration
}

// clientEnv maps flags to the environment variables that set them when
// the flag is not given.
var clientEnv = []struct{ flag, env string }{
	{"server", "SWITCHBOARD_SERVER"},
	{"tls", "SWITCHBOARD_TLS"},
	{"tls-ca", "SWITCHBOARD_TLS_CA"},
	{"tls-cert", "SWITCHBOARD_TLS_CERT"},
	{"tls-key", "SWITCHBOARD_TLS_KEY"},
	{"tls-server-name", "SWITCHBOARD_TLS_SERVER_NAME"},
	{"token", "SWITCHBOARD_TOKEN"},
	{"output", "SWITCHBOARD_OUTPUT"},
}

func (o *clientOptions) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.server, "server", defaultServer, "address of the Switchboard control plane, HOST:PORT (env SWITCHBOARD_SERVER)")
	fs.StringVarP(&o.output, "output", "o", "table", "output: table for people, json for scripts (env SWITCHBOARD_OUTPUT)")
	fs.StringVar(&o.token, "token", "", "bearer token (see 'switchboard token create'); better in the environment: SWITCHBOARD_TOKEN")
	fs.BoolVar(&o.useTLS, "tls", false, "use TLS, verifying the server with the system's CAs (on by itself with --tls-ca or --tls-cert; env SWITCHBOARD_TLS=true)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA bundle that verifies the server's certificate (env SWITCHBOARD_TLS_CA)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM client certificate for mutual TLS, with --tls-key (env SWITCHBOARD_TLS_CERT)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert (env SWITCHBOARD_TLS_KEY)")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "", "name the server's certificate must be valid for; default: the host of --server (env SWITCHBOARD_TLS_SERVER_NAME)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of each call (streams have none)")
}

// clientCmd makes cmd a command that talks to a server: the client flags
// on it (inherited by its subcommands).
func clientCmd(cmd *cobra.Command, o *clientOptions) *cobra.Command {
	fs := cmd.PersistentFlags()
	o.register(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		_ = fs.SetAnnotation(f.Name, clientFlagGroup, []string{"true"})
	})
	return cmd
}

// client is a connection to a server.
type client struct {
	env  *cliEnv
	opts *clientOptions
	cc   *grpc.ClientConn
	api  switchboardv1.SwitchboardServiceClient
}

// resolve fills the flags not given from the environment and checks them.
func (o *clientOptions) resolve(cmd *cobra.Command, env *cliEnv) error {
	for _, m := range clientEnv {
		fl := cmd.Flags().Lookup(m.flag)
		if fl == nil || fl.Changed {
			continue
		}
		if v := env.getenv(m.env); v != "" {
			if err := fl.Value.Set(v); err != nil {
				return usageError(cmd, "%s=%q: %v", m.env, v, err)
			}
		}
	}
	switch o.output {
	case "table", "json":
	default:
		return usageError(cmd, "--output %q: want table or json", o.output)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageError(cmd, "--tls-cert and --tls-key go together")
	}
	if o.server == "" {
		return usageError(cmd, "--server is empty")
	}
	return nil
}

// connect resolves the options and opens a client connection (lazily:
// an unreachable server is reported by the first call).
func (o *clientOptions) connect(cmd *cobra.Command, env *cliEnv) (*client, error) {
	if err := o.resolve(cmd, env); err != nil {
		return nil, err
	}
	secure := o.useTLS || o.tlsCA != "" || o.tlsCert != ""
	opts := []grpc.DialOption{grpc.WithUserAgent("switchboard-cli")}
	if secure {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.tlsServerName}
		if o.tlsCA != "" {
			pem, err := os.ReadFile(o.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", o.tlsCA)
			}
			cfg.RootCAs = pool
		}
		if o.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
			if err != nil {
				return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if o.token != "" {
		if !secure && !isLoopback(o.server) {
			return nil, usageError(cmd, "refusing to send --token in clear text to %s, which is not a loopback address: use TLS (--tls-ca, or --tls)", o.server)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{token: o.token, secure: secure}))
	}
	cc, err := grpc.NewClient(o.server, opts...)
	if err != nil {
		return nil, usageError(cmd, "--server %q: %v", o.server, err)
	}
	return &client{env: env, opts: o, cc: cc, api: switchboardv1.NewSwitchboardServiceClient(cc)}, nil
}

func (c *client) close() { _ = c.cc.Close() }

// call is a context for one unary call, bounded by --timeout.
func (c *client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.opts.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.timeout)
}

func (c *client) json() bool { return c.opts.output == "json" }

// bearerToken sends the token as "authorization: Bearer <token>".
type bearerToken struct {
	token  string
	secure bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false only for a loopback server without
// TLS (connect refuses a token in clear text otherwise).
func (b bearerToken) RequireTransportSecurity() bool { return b.secure }

// runClient is the RunE of a client command: it connects, runs f with a
// context that ends on SIGINT or SIGTERM, and closes.
func runClient(env *cliEnv, o *clientOptions, f func(ctx context.Context, c *client, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := o.connect(cmd, env)
		if err != nil {
			return err
		}
		defer c.close()
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		return f(ctx, c, cmd, args)
	}
}

// printJSON writes m as protojson with the proto field names: indented,
// or on one line for streams.
func printJSON(w io.Writer, m proto.Message, oneLine bool) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	return writeJSON(w, b, oneLine)
}

// writeJSON writes b, a JSON value, indented or compacted on one line
// (protojson's own spacing is deliberately unstable).
func writeJSON(w io.Writer, b []byte, oneLine bool) error {
	var buf bytes.Buffer
	var err error
	if oneLine {
		err = json.Compact(&buf, b)
	} else {
		err = json.Indent(&buf, b, "", "  ")
	}
	if err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

// protoRaw is m as a JSON value for a composite object.
func protoRaw(m proto.Message) json.RawMessage {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return json.RawMessage(`null`)
	}
	return b
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// enumName is an enum value's name without its type prefix: LISTENING
// for LISTENER_STATE_LISTENING; empty for the unspecified value.
func enumName(e fmt.Stringer, prefix string) string {
	s := strings.TrimPrefix(e.String(), prefix)
	if s == "UNSPECIFIED" {
		return ""
	}
	return s
}

// parseEnum reads a flag value as an enum of the generated names map:
// case-insensitive, '-' for '_', with or without the prefix.
func parseEnum(flag, s string, values map[string]int32, prefix string) (int32, error) {
	name := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	if v, ok := values[prefix+name]; ok && !strings.HasSuffix(name, "UNSPECIFIED") {
		return v, nil
	}
	if v, ok := values[name]; ok && strings.HasPrefix(name, prefix) && !strings.HasSuffix(name, "UNSPECIFIED") {
		return v, nil
	}
	var names []string
	for k := range values {
		if n := strings.TrimPrefix(k, prefix); n != "UNSPECIFIED" {
			names = append(names, strings.ToLower(strings.ReplaceAll(n, "_", "-")))
		}
	}
	slices.Sort(names)
	return 0, fmt.Errorf("--%s %q: want one of %s", flag, s, strings.Join(names, ", "))
}

// ts formats a timestamp for tables; empty when unset.
func ts(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().Local().Format(time.RFC3339)
}

// dur formats a duration for tables; empty when unset.
func dur(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return roundDuration(d.AsDuration()).String()
}

// roundDuration keeps three significant digits or so.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// exitCodeOf maps an error to the documented exit codes.
func exitCodeOf(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, errUsage) {
		return exitUsage
	}
	st, ok := status.FromError(err)
	if !ok {
		return exitFailure
	}
	switch st.Code() {
	case codes.NotFound:
		return exitNotFound
	case codes.Unauthenticated, codes.PermissionDenied:
		return exitDenied
	case codes.AlreadyExists:
		return exitConflict
	case codes.Unavailable:
		return exitUnavailable
	case codes.InvalidArgument:
		return exitUsage
	}
	return exitFailure
}

// describeError is a gRPC error for people: the message, the code and the
// reason, the invalid fields, the resource.
func describeError(err error) string {
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.OK {
		return err.Error()
	}
	var b strings.Builder
	b.WriteString(st.Message())
	tag := st.Code().String()
	if r := errorReason(st); r != "" && !strings.EqualFold(strings.ReplaceAll(r, "_", ""), tag) {
		tag += ", " + r
	}
	fmt.Fprintf(&b, " (%s)", tag)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Fprintf(&b, "\n  %s: %s", v.GetField(), v.GetDescription())
			}
		case *errdetails.RetryInfo:
			fmt.Fprintf(&b, "\n  retry after %v", d.GetRetryDelay().AsDuration())
		}
	}
	return b.String()
}

// errorReason is the ErrorInfo reason of st, or empty.
func errorReason(st *status.Status) string {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

// isConnectError reports whether err says the server could not be
// reached at all.
func isConnectError(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable || errorReason(st) != "" {
		return false // the server answered
	}
	m := st.Message()
	return strings.Contains(m, "while dialing") || strings.Contains(m, "connection refused") || strings.Contains(m, "produced zero addresses")
}

// listAll pages through a List call: get returns one page and the next
// token. It stops after limit items (0: all) and at most 100,000 pages.
func listAll[T any](ctx context.Context, c *client, limit int, get func(ctx context.Context, token string, size int32) ([]T, string, error)) ([]T, string, error) {
	var all []T
	token := ""
	for range 100_000 {
		size := int32(1000)
		if limit > 0 && limit-len(all) < 1000 {
			size = int32(limit - len(all))
		}
		cctx, cancel := c.call(ctx)
		items, next, err := get(cctx, token, size)
		cancel()
		if err != nil {
			return nil, "", err
		}
		all = append(all, items...)
		token = next
		if token == "" || (limit > 0 && len(all) >= limit) {
			break
		}
	}
	return all, token, nil
}

// completeIDs completes listener or connection ids from the server, for
// the first positional argument.
func completeIDs(env *cliEnv, o *clientOptions, listeners, connections bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := o.connect(cmd, env)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer c.close()
		ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
		defer cancel()
		var ids []cobra.Completion
		if listeners {
			if r, err := c.api.ListListeners(ctx, &switchboardv1.ListListenersRequest{PageSize: 1000}); err == nil {
				for _, l := range r.GetListeners() {
					if strings.HasPrefix(l.GetListenerId(), toComplete) {
						ids = append(ids, cobra.CompletionWithDesc(l.GetListenerId(), "listener "+l.GetStatus().GetBoundAddress()))
					}
				}
			}
		}
		if connections {
			if r, err := c.api.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{PageSize: 1000}); err == nil {
				for _, cn := range r.GetConnections() {
					if strings.HasPrefix(cn.GetConnectionId(), toComplete) {
						ids = append(ids, cobra.CompletionWithDesc(cn.GetConnectionId(), strings.ToLower(enumName(cn.GetDirection(), "DIRECTION_"))+" "+cn.GetStatus().GetRemoteAddress()))
					}
				}
			}
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}

// clientFlagGroup marks the client flags, shown apart in the help.
const clientFlagGroup = "switchboard_client"

// usage is the usage text of every command: cobra's, with the flags that
// say how to reach the server listed apart from the command's own.
func usage(c *cobra.Command) error {
	w := c.OutOrStderr()
	fmt.Fprint(w, "Usage:")
	if c.Runnable() {
		fmt.Fprintf(w, "\n  %s", c.UseLine())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n  %s [command]", c.CommandPath())
	}
	if c.HasExample() {
		fmt.Fprintf(w, "\n\nExamples:\n%s", c.Example)
	}
	if c.HasAvailableSubCommands() {
		groups := c.Groups()
		if len(groups) == 0 {
			groups = []*cobra.Group{{ID: "", Title: "Available Commands:"}}
		}
		for _, g := range groups {
			fmt.Fprintf(w, "\n\n%s", g.Title)
			for _, sub := range c.Commands() {
				if (len(c.Groups()) == 0 || sub.GroupID == g.ID) && (sub.IsAvailableCommand() || sub.Name() == "help") {
					fmt.Fprintf(w, "\n  %-*s %s", sub.NamePadding(), sub.Name(), sub.Short)
				}
			}
		}
	}
	own := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
	conn := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
	for _, fs := range []*pflag.FlagSet{c.LocalFlags(), c.InheritedFlags()} {
		fs.VisitAll(func(f *pflag.Flag) {
			if _, ok := f.Annotations[clientFlagGroup]; ok {
				conn.AddFlag(f)
			} else {
				own.AddFlag(f)
			}
		})
	}
	if own.HasAvailableFlags() {
		fmt.Fprintf(w, "\n\nFlags:\n%s", strings.TrimRight(own.FlagUsages(), " \n"))
	}
	if conn.HasAvailableFlags() {
		fmt.Fprintf(w, "\n\nServer flags (also from the environment; see 'switchboard --help'):\n%s", strings.TrimRight(conn.FlagUsages(), " \n"))
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n\nUse \"%s [command] --help\" for more information about a command.", c.CommandPath())
	}
	fmt.Fprintln(w)
	return nil
}
