package pebblejournal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleFatal is the panic value of pebbleLogger.Fatalf.
//
// Pebble v2.1.7 does not return WAL write or fsync errors from DB.Apply: it
// calls Logger.Fatalf("pebble: fatal commit error: ...") and, if Fatalf
// returns, reports success. Fatalf must therefore never return. Its default
// exits the process; ours panics with this value so the committer can
// recover it, fail the batch and mark the Journal unusable. Anywhere else (Pebble
// background goroutines) the panic is unrecovered and ends the process,
// exactly like Pebble's default.
type pebbleFatal struct {
	msg string
	err error // first error argument, kept so errors.Is sees the cause
}

func (f *pebbleFatal) Error() string { return f.msg }
func (f *pebbleFatal) Unwrap() error { return f.err }

// pebbleLogger routes Pebble's logging to slog. Pebble's Infof is chatty
// operational detail (flushes, WAL recycling), so it goes to Debug. Keys are
// sequence numbers and values are never logged by Pebble, so nothing here
// can carry PHI.
type pebbleLogger struct{ log *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.logf(slog.LevelDebug, format, args)
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.logf(slog.LevelError, format, args)
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	f := &pebbleFatal{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			f.err = err
			break
		}
	}
	// Debug only: a recovered commit failure is logged once by the journal,
	// and an unrecovered panic prints this message as it ends the process.
	p.logf(slog.LevelDebug, format, args)
	panic(f)
}

func (p pebbleLogger) logf(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if p.log.Enabled(ctx, level) {
		p.log.Log(ctx, level, fmt.Sprintf(format, args...), "component", "pebble")
	}
}

// applyBatch commits b, converting Pebble's fatal-commit panic into an error.
// Only pebbleFatal is recovered: it is raised after Pebble's commit pipeline
// has released its locks (DB.Close still works, verified by the fault tests).
// Any other panic comes from deeper inside Pebble with its commit mutex held,
// so the DB could never be closed; it is re-raised.
func applyBatch(b *pebble.Batch, wo *pebble.WriteOptions) (err error) {
	defer recoverFatal(&err)
	return b.Commit(wo)
}

// recoverFatal turns the panic our pebbleLogger.Fatalf raises into *err and
// re-raises any other panic.
func recoverFatal(err *error) {
	if p := recover(); p != nil {
		var f *pebbleFatal
		if e, ok := p.(error); !ok || !errors.As(e, &f) {
			panic(p)
		}
		*err = f
	}
}
