// Command switchboard runs the Switchboard service: a gRPC control plane for
// raw TCP (MLLP/HL7 and other framed message-plus-ACK protocols) backed by
// an embedded durable journal.
//
// Usage:
//
//	switchboard serve [flags]   run the service
//	switchboard bench ...       load tool and baselines
//	switchboard token ...       create, revoke and list access tokens
//	switchboard help            show this help
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `switchboard: gRPC-controlled raw TCP messaging (MLLP/HL7 and more)

Usage:
  switchboard serve [flags]   run the service (switchboard serve -h lists flags)
  switchboard bench ...       measure it and its baselines (switchboard bench -h)
  switchboard token ...       create, revoke and list access tokens (switchboard token help)
  switchboard help            show this help
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "bench":
		err = benchCmd(args[1:], stdout, stderr)
	case "token":
		err = tokenCmd(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "switchboard: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "switchboard %s: %v\n", args[0], err)
	return 1
}

// errUsage reports bad flags; the flag package has printed why.
var errUsage = errors.New("usage")
