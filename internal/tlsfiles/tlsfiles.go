// Package tlsfiles serves TLS certificates, keys and CA bundles from PEM
// files and re-reads them when they change, so a certificate rotated by
// cert-manager or a Kubernetes secret update is used on the next handshake
// without a restart. It also names the peer of a verified certificate for
// allow-lists and role mapping (Names, Identity, Match).
//
// Changes are found by stat'ing the files (modification time, size and
// file identity) at most once per Options.CheckEvery, when a handshake or
// a dial asks for the material. There is no file watcher: Kubernetes
// replaces a secret by swapping a "..data" symlink, which watchers on the
// file names do not see reliably, and a stat a second costs nothing. A
// change that does not load (a half-written file, a key that does not
// match) keeps the previous material and is logged once. The package never
// logs or returns key bytes.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Errors callers can test with errors.Is. Messages name the file.
var (
	// ErrNotPEM: a file holds no PEM block of the expected type.
	ErrNotPEM = errors.New("no PEM block of the expected type")
	// ErrKeyMismatch: the private key is not the certificate's.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
	// ErrIncomplete: a certificate without its key or the other way round,
	// or no file at all.
	ErrIncomplete = errors.New("incomplete TLS files")
	// ErrNoCertificate: a server config was asked of a source without a
	// certificate (a CA bundle only).
	ErrNoCertificate = errors.New("no certificate")
	// ErrNoCA: client certificates are to be verified but there is no CA
	// file to verify them against.
	ErrNoCA = errors.New("no CA file")
)

// Files names PEM files; CA may be empty, Cert and Key are both set or both
// empty. Cert may hold the leaf followed by intermediates; CA holds the
// certificates trusted to sign the peer's.
type Files struct{ Cert, Key, CA string }

// Options tune a Source; the zero value is ready to use.
type Options struct {
	// Logger receives reload notices and warnings; nil discards them.
	Logger *slog.Logger
	// Now tells the time for the reload interval and the validity warning;
	// nil: time.Now. Tests advance it instead of sleeping.
	Now func() time.Time
	// CheckEvery is how often, at most, the files are stat'ed; 0: 1 s.
	CheckEvery time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = time.Second
	}
	return o
}

// Source holds the current certificate/key and CA pool of one set of
// files, re-read when they change. Safe for concurrent use.
type Source struct {
	files Files
	o     Options

	cur  atomic.Pointer[material]
	next atomic.Int64 // UnixNano before which the files are not stat'ed again

	mu   sync.Mutex // one check at a time; guards seen
	seen []stamp    // the files as last stat'ed, loaded or not
}

// Load reads the files now. An error names the file and says why: missing,
// no PEM block, key does not match the certificate, only one of
// certificate and key. A certificate that is expired or not yet valid is
// only a logged warning, so a server whose rotation lags still starts and
// says why its peers refuse it.
func Load(f Files, o Options) (*Source, error) {
	switch {
	case f.Cert == "" && f.Key == "" && f.CA == "":
		return nil, fmt.Errorf("tlsfiles: no certificate, key or CA file given: %w", ErrIncomplete)
	case f.Cert != "" && f.Key == "":
		return nil, fmt.Errorf("tlsfiles: certificate %s given without its key: %w", f.Cert, ErrIncomplete)
	case f.Cert == "" && f.Key != "":
		return nil, fmt.Errorf("tlsfiles: key %s given without its certificate: %w", f.Key, ErrIncomplete)
	}
	s := &Source{files: f, o: o.withDefaults()}
	// Stat before reading: a file changing in between then looks changed
	// at the next check and is read again, never missed.
	s.seen = s.stat()
	m, err := readMaterial(f)
	if err != nil {
		return nil, err
	}
	s.warnValidity(m)
	s.cur.Store(m)
	s.next.Store(s.o.Now().Add(s.o.CheckEvery).UnixNano())
	return s, nil
}

// HasCertificate reports whether the source has a certificate and key.
func (s *Source) HasCertificate() bool { return s.files.Cert != "" }

// HasCA reports whether the source has a CA file.
func (s *Source) HasCA() bool { return s.files.CA != "" }

// ServerConfig returns a TLS 1.2+ server config whose GetConfigForClient
// hands every handshake the current certificate and, when the CA file is
// set, ClientCAs = the current pool and ClientAuth = clientAuth
// (tls.RequireAndVerifyClientCert, tls.VerifyClientCertIfGiven or
// tls.NoClientCert). Other fields set on the returned config before its
// first handshake (NextProtos, VerifyConnection, ...) are carried into the
// per-handshake config. It is an error if the source has no certificate,
// or if clientAuth verifies client certificates and there is no CA file:
// Go would then verify against the system roots, which is never meant.
func (s *Source) ServerConfig(clientAuth tls.ClientAuthType) (*tls.Config, error) {
	if !s.HasCertificate() {
		return nil, fmt.Errorf("tlsfiles: CA file %s has no certificate to serve: %w", s.files.CA, ErrNoCertificate)
	}
	if clientAuth >= tls.VerifyClientCertIfGiven && !s.HasCA() {
		return nil, fmt.Errorf("tlsfiles: %s: client certificates cannot be verified without a CA file: %w", s.files.Cert, ErrNoCA)
	}
	type snapshot struct {
		m *material
		c *tls.Config
	}
	var last atomic.Pointer[snapshot] // the config built for the newest material
	outer := &tls.Config{MinVersion: tls.VersionTLS12}
	outer.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := s.current()
		if p := last.Load(); p != nil && p.m == m {
			return p.c, nil
		}
		c := outer.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{*m.cert}
		c.ClientAuth = clientAuth
		c.ClientCAs = m.pool
		last.Store(&snapshot{m, c})
		return c, nil
	}
	return outer, nil
}

// ClientConfig returns a TLS 1.2+ config for one dial, a snapshot of the
// current material: RootCAs = the CA pool (nil without a CA file: the
// system roots), the certificate presented when the source has one, and
// ServerName as given. Call it per dial so a reconnect sees rotated files.
func (s *Source) ClientConfig(serverName string) *tls.Config {
	m := s.current()
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.pool, ServerName: serverName}
	if m.cert != nil {
		c.Certificates = []tls.Certificate{*m.cert}
	}
	return c
}

// current returns the material to use now, re-reading the files first
// when they are due for a check and have changed.
func (s *Source) current() *material {
	now := s.o.Now()
	if now.UnixNano() < s.next.Load() {
		return s.cur.Load()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.UnixNano() < s.next.Load() { // another handshake checked meanwhile
		return s.cur.Load()
	}
	s.next.Store(now.Add(s.o.CheckEvery).UnixNano())
	st := s.stat()
	if sameStamps(st, s.seen) {
		return s.cur.Load()
	}
	// Remember this state whether it loads or not, so a broken file is
	// reported once, not at every handshake, and retried when it changes.
	s.seen = st
	m, err := readMaterial(s.files)
	if err != nil {
		s.o.Logger.Warn("tlsfiles: changed TLS files do not load; still using the previous ones", "err", err)
		return s.cur.Load()
	}
	s.warnValidity(m)
	s.cur.Store(m)
	if m.cert != nil {
		s.o.Logger.Info("tlsfiles: reloaded TLS files", "cert_file", s.files.Cert, "ca_file", s.files.CA,
			"identity", Identity(m.cert.Leaf), "not_after", m.cert.Leaf.NotAfter)
	} else {
		s.o.Logger.Info("tlsfiles: reloaded TLS files", "ca_file", s.files.CA)
	}
	return m
}

func (s *Source) warnValidity(m *material) {
	if m.cert == nil {
		return
	}
	leaf, now := m.cert.Leaf, s.o.Now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		s.o.Logger.Warn("tlsfiles: certificate is not valid now; peers will refuse it",
			"cert_file", s.files.Cert, "identity", Identity(leaf),
			"not_before", leaf.NotBefore, "not_after", leaf.NotAfter)
	}
}

// stamp is what a stat says about one file: enough to tell that it was
// rewritten in place (size, modification time) or replaced by another file
// (identity: device and inode on Unix, volume and file index on Windows,
// both compared by os.SameFile).
type stamp struct {
	fi  os.FileInfo // nil when the stat failed
	err string
}

func (s *Source) stat() []stamp {
	var st []stamp
	for _, p := range []string{s.files.Cert, s.files.Key, s.files.CA} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p) // follows symlinks, so a swapped ..data shows as another file
		if err != nil {
			st = append(st, stamp{err: err.Error()})
		} else {
			st = append(st, stamp{fi: fi})
		}
	}
	return st
}

func sameStamps(a, b []stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.fi == nil || y.fi == nil {
			if x.fi != y.fi || x.err != y.err {
				return false
			}
			continue
		}
		if !os.SameFile(x.fi, y.fi) || x.fi.Size() != y.fi.Size() || !x.fi.ModTime().Equal(y.fi.ModTime()) {
			return false
		}
	}
	return true
}

// material is one consistent reading of a source's files. It is never
// changed after it is built, so handshakes share it without locks.
type material struct {
	cert *tls.Certificate // with Leaf set; nil: no certificate configured
	pool *x509.CertPool   // nil: no CA file
}
