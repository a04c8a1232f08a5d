// Package pebbletest injects storage faults under a Pebble journal, for tests of
// what Switchboard does when the disk fails. It is never used by production
// code.
package pebbletest

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// FaultFS wraps a vfs.FS so tests can make WAL (*.log) writes or syncs fail,
// or hold WAL syncs until released, at runtime. Only WAL files are affected
// because that is what a commit touches; failing MANIFEST writes would send
// Pebble to Fatalf in a background goroutine, which ends the process.
type FaultFS struct {
	vfs.FS
	// FailWrites makes WAL writes fail with ErrInjected.
	FailWrites atomic.Bool
	// FailSyncs makes WAL syncs fail with ErrInjected.
	FailSyncs atomic.Bool
	hold      atomic.Pointer[syncHold]
}

type syncHold struct {
	entered chan struct{} // one send per held sync
	release chan struct{} // closed to let held syncs proceed
}

// ErrInjected is the error injected faults return.
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

func (fs *FaultFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &faultFile{File: f, fs: fs}, nil
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

type faultFile struct {
	vfs.File
	fs *FaultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	if f.fs.FailWrites.Load() {
		return 0, ErrInjected
	}
	return f.File.Write(p)
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.FailWrites.Load() {
		return 0, ErrInjected
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) sync() error {
	if h := f.fs.hold.Load(); h != nil {
		h.entered <- struct{}{}
		<-h.release
	}
	if f.fs.FailSyncs.Load() {
		return ErrInjected
	}
	return nil
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
