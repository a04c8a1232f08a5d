package pebblejournal

import (
	"fmt"
	"strings"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// reserveFile holds the disk space set aside for the flush Pebble runs when
// it opens a directory. Its name is none of Pebble's, so Pebble ignores it.
const reserveFile = "journal.reserve"

// errDiskFull says that the disk lacks the space needed to open.
type errDiskFull struct {
	replay int64 // WAL bytes Pebble must flush before it accepts writes
	need   int64 // the space asked for
	cause  error
}

func (e *errDiskFull) Error() string {
	if e.replay == 0 {
		return fmt.Sprintf("disk full (%s needed); free space and start again: %v", size(e.need), e.cause)
	}
	return fmt.Sprintf("disk full while replaying the write-ahead log (about %s must be written before the journal can accept messages); free space and start again: %v",
		size(e.need), e.cause)
}

// size formats n bytes for people, rounded up.
func size(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KiB", (n+1<<10-1)>>10)
	}
	return fmt.Sprintf("%d MiB", (n+1<<20-1)>>20)
}

func (e *errDiskFull) Unwrap() error { return e.cause }

// A reservation is disk space set aside in the data directory, until
// released.
type reservation struct {
	fs   vfs.FS
	name string
	once sync.Once
}

func (r *reservation) release() {
	if r != nil {
		r.once.Do(func() { _ = r.fs.Remove(r.name) })
	}
}

// reserveSpace sets aside n bytes in dir, and proves on the way that the
// disk takes a synced write. On a filesystem that cannot preallocate it
// settles for the free space the filesystem reports, if any.
func reserveSpace(fs vfs.FS, dir string, n int64) (*reservation, error) {
	r := &reservation{fs: fs, name: fs.PathJoin(dir, reserveFile)}
	f, err := fs.Create(r.name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	err = f.Preallocate(0, n)
	if err != nil && !vfs.IsNoSpaceError(err) {
		err = nil
		if u, uerr := fs.GetDiskUsage(dir); uerr == nil && u.AvailBytes < uint64(n) {
			err = fmt.Errorf("%d bytes free: %w", u.AvailBytes, syscall.ENOSPC)
		}
	}
	if err == nil {
		if _, err = f.Write(make([]byte, 4096)); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.release()
		return nil, err
	}
	return r, nil
}

// walBytes adds up the WAL files in dir: an upper bound on what a replay
// flushes (files kept for recycling count too).
func walBytes(fs vfs.FS, dir string) int64 {
	names, err := fs.List(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, name := range names {
		if !strings.HasSuffix(name, ".log") {
			continue
		}
		if fi, err := fs.Stat(fs.PathJoin(dir, name)); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// withMargin adds room for what a flush writes besides the records: sstable
// index and properties, a new MANIFEST and OPTIONS file, the first WAL block.
func withMargin(n int64) int64 { return n + n/8 + 1<<20 }

// reserveForOpen reserves the space opening dir needs: Pebble flushes
// everything its WAL holds before pebble.Open returns, and a flush that
// cannot get space is retried for ever (see events). The estimate is first
// the WAL files' size, which counts old files Pebble keeps for reuse too;
// if that much cannot be had, exact (if not nil) gives a closer bound.
func (j *Journal) reserveForOpen(exact func() (uint64, error)) (*reservation, error) {
	need := walBytes(j.fs, j.dir)
	r, err := reserveSpace(j.fs, j.dir, withMargin(need))
	if err != nil && vfs.IsNoSpaceError(err) && exact != nil {
		if n, xerr := exact(); xerr == nil && int64(n) < need {
			need = int64(n)
			r, err = reserveSpace(j.fs, j.dir, withMargin(need))
		}
	}
	if err != nil && vfs.IsNoSpaceError(err) {
		return nil, &errDiskFull{replay: need, need: withMargin(need), cause: err}
	}
	return r, err
}

// replayBytes opens dir read-only, which replays only the live WAL files
// into memory and writes nothing, and returns the memory the replay took:
// an upper bound on what the flush at a read-write open writes. (A
// read-only database does not count its WAL's live bytes: WAL.Size is 0.)
func (j *Journal) replayBytes() (uint64, error) {
	po := j.pebbleOptions()
	po.ReadOnly = true
	db, err := pebble.Open(j.dir, po)
	if err != nil {
		return 0, err
	}
	n := db.Metrics().MemTable.Size
	return n, db.Close()
}
