package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
)

// StorageConfig describes a synced-write measurement in dir with Writers
// concurrent writers of Size-byte records.
type StorageConfig struct {
	Dir      string
	Writers  int
	Size     int
	Duration time.Duration
}

// PebbleSync measures the storage engine's own synced-write rate: each
// writer does db.Set(key, value, pebble.Sync) in a loop. It is the ceiling
// for any server that never acknowledges before durable.
func PebbleSync(ctx context.Context, cfg StorageConfig) (Result, error) {
	res := Result{Group: "storage", Target: "pebble-sync", Conns: cfg.Writers, Size: cfg.Size}
	db, err := OpenBaselineDB(cfg.Dir)
	if err != nil {
		return res, err
	}
	defer db.Close()
	var seq atomic.Uint64
	value, _ := Message(cfg.Size)
	return storageLoop(ctx, res, cfg, func() error {
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], seq.Add(1))
		return db.Set(key[:], value, pebble.Sync)
	})
}

// JournalAppend measures journal.Append (group commit) with the same load.
func JournalAppend(ctx context.Context, cfg StorageConfig) (Result, error) {
	res := Result{Group: "storage", Target: "journal-append", Conns: cfg.Writers, Size: cfg.Size}
	j, err := pebblejournal.Open(cfg.Dir, pebblejournal.Options{})
	if err != nil {
		return res, err
	}
	defer j.Close()
	value, _ := Message(cfg.Size)
	return storageLoop(ctx, res, cfg, func() error {
		r := journal.Record{Kind: journal.KindMessage, Time: time.Now(), ListenerID: "bench", ConnectionID: "c-bench", MessageType: "ADT^A01^ADT_A01", ControlID: "W0000N0000000000", Payload: value}
		_, err := j.Append(ctx, &r)
		return err
	})
}

func storageLoop(ctx context.Context, res Result, cfg StorageConfig, write func() error) (Result, error) {
	lats := make([]latencies, cfg.Writers)
	errs := make([]error, cfg.Writers)
	deadline := time.Now().Add(cfg.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range cfg.Writers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t0 := time.Now()
				if err := write(); err != nil {
					errs[w] = err
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	summarize(&res, time.Since(start), lats)
	for _, err := range errs {
		if err != nil {
			return res, fmt.Errorf("%s: %w", res.Target, err)
		}
	}
	return res, nil
}
