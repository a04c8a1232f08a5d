package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchboard-dev/switchboard/bench"
)

const benchUsage = `Usage:
  switchboard bench inbound  --addr HOST:PORT [flags]   MLLP load against any listener
  switchboard bench outbound --grpc-addr HOST:PORT --peer HOST:PORT [flags]
                                                          gRPC Send load through Switchboard to a peer
  switchboard bench receive  --grpc-addr HOST:PORT [flags]   Receive delivery rate
  switchboard bench idle     --addr HOST:PORT --pid PID [flags]
                                                          RSS per idle connection of process PID
  switchboard bench baseline --kind ack|durable|echo --addr HOST:PORT [--data-dir DIR]
                                                          run a baseline server until interrupted
  switchboard bench suite    [--json FILE] [flags]       everything, with baselines, in one run

Every command takes -h for its flags.
`

func benchCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "inbound":
		return benchInbound(ctx, args[1:], stdout, stderr)
	case "baseline":
		return benchBaseline(ctx, args[1:], stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, benchUsage)
		return nil
	}
	fmt.Fprintf(stderr, "bench: unknown command %q\n\n%s", args[0], benchUsage)
	return errUsage
}

// output prints results as a table, or as JSON with --json.
type output struct {
	json bool
}

func (o *output) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
}

func (o *output) print(w io.Writer, results ...bench.Result) error {
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	return bench.WriteTable(w, results)
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return errUsage
	}
	return nil
}

func benchInbound(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg bench.InboundConfig
	var out output
	fs := flag.NewFlagSet("bench inbound", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", "", "the MLLP listener to load (required)")
	fs.StringVar(&cfg.Target, "target", "peer", "label for the result")
	fs.IntVar(&cfg.Conns, "conns", 8, "connections, one message in flight each")
	fs.IntVar(&cfg.Size, "size", 260, "HL7 message size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured time before it")
	fs.IntVar(&cfg.Count, "count", 0, "stop after this many messages instead (no warm-up)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "offered load in messages/s across all connections (0: as fast as ACKs come)")
	out.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.Addr == "" {
		fmt.Fprintln(stderr, "bench inbound: --addr is required")
		return errUsage
	}
	res, err := bench.Inbound(ctx, cfg)
	if err != nil {
		return err
	}
	return out.print(stdout, res)
}

func benchBaseline(ctx context.Context, args []string, stderr io.Writer) error {
	var kind, addr, dataDir string
	fs := flag.NewFlagSet("bench baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&kind, "kind", "ack", "ack (HL7 ACK, no storage), durable (one synced Pebble write per frame, then ACK) or echo (gRPC unary echo)")
	fs.StringVar(&addr, "addr", "127.0.0.1:0", "listen address")
	fs.StringVar(&dataDir, "data-dir", "", "Pebble directory for --kind durable")
	if err := parse(fs, args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "baseline %s listening on %s\n", kind, ln.Addr())
	switch kind {
	case "ack":
		return bench.ServeACK(ctx, ln, nil)
	case "durable":
		if dataDir == "" {
			ln.Close()
			return errors.New("--kind durable needs --data-dir")
		}
		db, err := bench.OpenBaselineDB(dataDir)
		if err != nil {
			ln.Close()
			return err
		}
		defer db.Close()
		return bench.ServeACK(ctx, ln, db)
	case "echo":
		return bench.ServeEcho(ctx, ln)
	}
	ln.Close()
	return fmt.Errorf("unknown --kind %q", kind)
}
