// Package pebbletest injects storage faults under a Pebble journal, for tests
// of what Switchboard does when the disk fails. It is never used by
// production code.
package pebbletest

import (
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// FaultFS wraps a vfs.FS so tests can make file writes or syncs fail, fill
// the disk, or hold WAL syncs until released, at runtime.
//
// Faults hit the files whose failure Pebble reports or retries: the WAL
// (*.log, what a commit touches), sstables (flushes and compactions) and
// anything else written into the directory, such as the journal's own
// probe files. They never hit the MANIFEST, OPTIONS, CURRENT, marker, LOCK
// or temporary files, or directories: Pebble answers a failure there with
// Fatalf in a background goroutine, which ends the process.
type FaultFS struct {
	vfs.FS
	// FailWrites makes writes fail with ErrInjected.
	FailWrites atomic.Bool
	// FailSyncs makes syncs fail with ErrInjected.
	FailSyncs atomic.Bool
	// Full makes the disk full: writes, syncs and preallocations fail with
	// ENOSPC, and GetDiskUsage reports nothing available.
	Full atomic.Bool
	hold atomic.Pointer[syncHold]
}

type syncHold struct {
	entered chan struct{} // one send per held sync
	release chan struct{} // closed to let held syncs proceed
}

// ErrInjected is the error FailWrites and FailSyncs inject.
var ErrInjected = errors.New("injected I/O error")

// HoldSyncs makes WAL syncs block until the returned release func is called.
func (fs *FaultFS) HoldSyncs() (entered <-chan struct{}, release func()) {
	h := &syncHold{entered: make(chan struct{}, 100), release: make(chan struct{})}
	fs.hold.Store(h)
	var once sync.Once
	return h.entered, func() {
		once.Do(func() {
			fs.hold.Store(nil)
			close(h.release)
		})
	}
}

// spared reports whether faults must leave the file alone (see FaultFS).
func spared(base string) bool {
	for _, p := range [...]string{"MANIFEST-", "OPTIONS-", "CURRENT", "marker.", "LOCK"} {
		if strings.HasPrefix(base, p) {
			return true
		}
	}
	return strings.HasSuffix(base, ".dbtmp")
}

func (fs *FaultFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || spared(fs.PathBase(name)) {
		return f, err
	}
	return &faultFile{File: f, fs: fs, name: name, wal: strings.HasSuffix(name, ".log")}, nil
}

func (fs *FaultFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *FaultFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

func (fs *FaultFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}

// GetDiskUsage reports a full disk while Full is set.
func (fs *FaultFS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	u, err := fs.FS.GetDiskUsage(path)
	if err == nil && fs.Full.Load() {
		u.UsedBytes += u.AvailBytes
		u.AvailBytes = 0
	}
	return u, err
}

// Unwrap returns the wrapped FS.
func (fs *FaultFS) Unwrap() vfs.FS { return fs.FS }

type faultFile struct {
	vfs.File
	fs   *FaultFS
	name string
	wal  bool
}

// fault returns the error a write-like operation op gets now, or nil.
func (f *faultFile) fault(op string, inject *atomic.Bool) error {
	if f.fs.Full.Load() {
		return &os.PathError{Op: op, Path: f.name, Err: syscall.ENOSPC}
	}
	if inject.Load() {
		return ErrInjected
	}
	return nil
}

func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fault("write", &f.fs.FailWrites); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fault("write", &f.fs.FailWrites); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Preallocate(off, n int64) error {
	if f.fs.Full.Load() {
		return &os.PathError{Op: "fallocate", Path: f.name, Err: syscall.ENOSPC}
	}
	return f.File.Preallocate(off, n)
}

func (f *faultFile) sync() error {
	if h := f.fs.hold.Load(); h != nil && f.wal {
		h.entered <- struct{}{}
		<-h.release
	}
	return f.fault("sync", &f.fs.FailSyncs)
}

func (f *faultFile) Sync() error {
	if err := f.sync(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *faultFile) SyncData() error {
	if err := f.sync(); err != nil {
		return err
	}
	return f.File.SyncData()
}

func (f *faultFile) SyncTo(length int64) (bool, error) {
	if err := f.sync(); err != nil {
		return false, err
	}
	return f.File.SyncTo(length)
}

// Fd hides the descriptor so Pebble cannot bypass the wrapper with raw
// syscalls.
func (f *faultFile) Fd() uintptr { return vfs.InvalidFd }
