// Command switchboard runs the Switchboard service, a gRPC control plane for
// raw TCP (MLLP/HL7 and other framed message-plus-ACK protocols) backed by
// an embedded durable journal, and talks to a running one.
//
// Usage:
//
//	switchboard serve [flags]            run the service
//	switchboard listen ID ADDRESS        start a listener (and ls, status, stop, ...)
//	switchboard connect ID ADDRESS       open an outbound connection
//	switchboard send CONNECTION FILE...  send messages and wait for their ACKs
//	switchboard recv [--follow]          print (or save) received messages
//	switchboard bench ...                load tool and baselines
//	switchboard token ...                create, revoke and list access tokens
//	switchboard help [command]           show the help
//
// docs/cli/ is the reference of every command, generated from this tree.
// Exit codes are listed in exitCodesHelp.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes scripts can rely on. They are documented in the root help
// (exitCodesHelp) and so in docs/cli/switchboard.md.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitDenied      = 4
	exitConflict    = 5
	exitUnavailable = 6
	exitRejected    = 7
	exitInDoubt     = 8
	exitNotSent     = 9
)

const exitCodesHelp = `Exit codes:
  0  success (send: every message accepted, written or queued)
  1  an error not listed below
  2  usage: unknown command or flag, bad arguments, invalid input (also the
     server's INVALID_ARGUMENT)
  3  not found: the listener, connection, message or consumer does not exist
  4  not allowed: no or bad credentials (UNAUTHENTICATED), a role or scope
     too small, or an address the server's policy forbids (PERMISSION_DENIED)
  5  conflict: the id exists with a different config (ALREADY_EXISTS)
  6  unavailable: the server cannot be reached or is shutting down; retry
  7  send: the peer answered a message negatively (AE, AR, CE, CR, NAK)
  8  send: a message's outcome is in doubt (written, no trustworthy ACK)
  9  send: a message was not sent (nothing written; retrying is safe)
With several messages, send exits with the most serious: 8, then any of
1-6, then 9, then 7.`

const rootLong = `Switchboard lets any gRPC client talk raw TCP (MLLP/HL7 and other framed
message-plus-ACK protocols) to legacy systems, with every received message
journaled before it is acknowledged.

Run the service with "switchboard serve". The other commands talk to a running
server: --server (or SWITCHBOARD_SERVER, default 127.0.0.1:50051), TLS with
--tls-ca, --tls-cert, --tls-key and --tls-server-name (or SWITCHBOARD_TLS_CA,
SWITCHBOARD_TLS_CERT, SWITCHBOARD_TLS_KEY, SWITCHBOARD_TLS_SERVER_NAME), a
bearer token with --token (or SWITCHBOARD_TOKEN). They print tables for
people, or with -o json the API's responses as JSON (proto field names; one
object per line for streams) for scripts.

A first hour:
  switchboard serve                                  # in another terminal
  switchboard listen adt 127.0.0.1:2575              # MLLP, HL7 ACKs
  switchboard connect lab 127.0.0.1:2576             # to your peer
  switchboard send lab msg.hl7                       # waits for the ACK
  switchboard recv --follow                          # what peers send to adt
  switchboard ls                                     # listeners and connections
  switchboard events                                 # what happens, as it happens

` + exitCodesHelp

func main() {
	os.Exit(runIO(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// run runs the command line args and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return runIO(args, os.Stdin, stdout, stderr, os.Getenv)
}

// runIO is run with its standard input and environment given.
func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	root := newRootCmd(&cliEnv{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv})
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	name := "switchboard"
	if cmd != nil {
		name = cmd.CommandPath()
	}
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, ee.err)
		}
		return ee.code
	case errors.Is(err, errUsage):
		// Whoever returned it has said why.
		return exitUsage
	}
	code := exitCodeOf(err)
	fmt.Fprintf(stderr, "%s: %s\n", name, describeError(err))
	if code == exitUnavailable && isConnectError(err) {
		fmt.Fprintln(stderr, "Is `switchboard serve` running there? Set --server or SWITCHBOARD_SERVER.")
	}
	return code
}

// errUsage reports bad flags or arguments; whoever returns it has printed
// why.
var errUsage = errors.New("usage")

// exitError ends the command with code, printing err when not nil.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the process exit code.
func (e *exitError) ExitCode() int { return e.code }

// usageError is a usage mistake, printed with a pointer to the help.
func usageError(cmd *cobra.Command, format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format+"\nRun '%s --help' for usage.", append(args, cmd.CommandPath())...)}
}

// cliEnv is what the commands read and write besides the server.
type cliEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

func newRootCmd(env *cliEnv) *cobra.Command {
	root := &cobra.Command{
		Use:           "switchboard",
		Short:         "gRPC-controlled raw TCP messaging (MLLP/HL7 and more)",
		Long:          rootLong,
		Version:       versionString(),
		SilenceErrors: true,
		SilenceUsage:  true,
		// No arguments: the help, as a usage error.
		RunE: groupRunE,
		Args: cobra.ArbitraryArgs,
	}
	root.SetIn(env.stdin)
	root.SetOut(env.stdout)
	root.SetErr(env.stderr)
	root.SetVersionTemplate("{{.Version}}")
	root.SetUsageFunc(usage)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError(cmd, "%v", err)
	})

	root.AddGroup(
		&cobra.Group{ID: "server", Title: "Running Switchboard:"},
		&cobra.Group{ID: "resources", Title: "Listeners and connections:"},
		&cobra.Group{ID: "messages", Title: "Messages:"},
		&cobra.Group{ID: "observe", Title: "Watching:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add("server", newServeCmd(env), newBenchCmd(env), newTokenCmd(env))
	add("server", newConfigCmd(), newPeerCmd())
	add("resources", newListenCmd(env), newStopCmd(env), newConnectCmd(env), newDisconnectCmd(env), newLsCmd(env), newStatusCmd(env))
	add("messages", newSendCmd(env), newRecvCmd(env), newMessagesCmd(env), newConsumersCmd(env), newJournalCmd(env))
	add("observe", newEventsCmd(env))
	root.AddCommand(newGenDocsCmd())
	root.SetHelpCommandGroupID("server")
	root.SetCompletionCommandGroupID("server")
	return root
}

// groupRunE is the RunE of a command that only groups others: without
// arguments it prints the help to stderr and is a usage error, and an
// argument that names no subcommand is one too.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		return usageError(cmd, "%s", msg)
	}
	cmd.SetOut(cmd.ErrOrStderr())
	_ = cmd.Help()
	return errUsage
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError(cmd, "unexpected arguments: %s", strings.Join(args, " "))
	}
	return nil
}

// exactArgs wants n positional arguments, named in the command's Use.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(cmd, "want %d argument(s) (%s), got %d", n, strings.TrimPrefix(cmd.Use, cmd.Name()+" "), len(args))
		}
		return nil
	}
}

// rangeArgs wants between lo and hi positional arguments.
func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usageError(cmd, "want %d to %d arguments (%s), got %d", lo, hi, strings.TrimPrefix(cmd.Use, cmd.Name()+" "), len(args))
		}
		return nil
	}
}

// versionString is what --version prints: the module version, the VCS
// commit the binary was built from and the Go version.
func versionString() string {
	version, commit, built, modified := "(devel)", "unknown", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" {
			version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				built = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += " (modified)"
	}
	if built != "" {
		commit += " " + built
	}
	return fmt.Sprintf("switchboard %s\ncommit %s\n%s %s/%s\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// signalContext is ctx ended by SIGINT or SIGTERM too.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}
