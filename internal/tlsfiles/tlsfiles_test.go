package tlsfiles

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/internal/tlstest"
)

// clock is a settable Options.Now, so reload intervals pass without sleeping.
type clock struct{ ns atomic.Int64 }

func newClock() *clock { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// logBuf collects log output from handshake goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func (l *logBuf) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

var touched atomic.Int64

// touch gives files a modification time none had before. File times can be
// as coarse as a clock tick, and a new P-256 key has the old one's size, so
// a rewrite within a test can look unchanged to a stat; real rotations are
// minutes apart.
func touch(t *testing.T, paths ...string) {
	t.Helper()
	at := time.Now().Add(time.Duration(touched.Add(1)) * time.Hour)
	for _, p := range paths {
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

// handshake is what the server side of one connection saw.
type handshake struct {
	peer *x509.Certificate // the client's certificate, nil without one
	err  error
}

// serve runs a TLS server on loopback that completes each handshake,
// reports it on the returned channel and closes the connection.
func serve(t *testing.T, cfg *tls.Config) (string, <-chan handshake) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan handshake, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			tc := c.(*tls.Conn)
			h := handshake{err: tc.Handshake()}
			if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
				h.peer = pc[0]
			}
			got <- h
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String(), got
}

// dial completes a client handshake and returns the server's certificate
// and what the server saw.
func dial(t *testing.T, addr string, cfg *tls.Config, srv <-chan handshake) (*x509.Certificate, handshake) {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	c, err := d.Dial("tcp", addr)
	var cert *x509.Certificate
	if err == nil {
		cert = c.(*tls.Conn).ConnectionState().PeerCertificates[0]
		// TLS 1.3 clients finish before the server has checked their
		// certificate; reading waits for its verdict (an alert or EOF).
		_, _ = c.Read(make([]byte, 1))
		_ = c.Close()
	}
	return cert, <-srv
}

func TestLoadAndServe(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	leaf := ca.Issue(t, tlstest.LeafOptions{})
	f := tlstest.WriteFiles(t, t.TempDir(), leaf, nil)
	s, err := Load(Files{Cert: f.Cert, Key: f.Key}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.HasCertificate() || s.HasCA() {
		t.Fatalf("HasCertificate %v HasCA %v, want true false", s.HasCertificate(), s.HasCA())
	}
	cfg, err := s.ServerConfig(tls.NoClientCert)
	if err != nil {
		t.Fatal(err)
	}
	addr, srv := serve(t, cfg)
	for _, max := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cc := tlstest.ClientConfig(ca, nil, "localhost")
		cc.MaxVersion = max
		got, h := dial(t, addr, cc, srv)
		if h.err != nil || got == nil || !got.Equal(leaf.Cert) {
			t.Fatalf("max version %x: server error %v, served %v", max, h.err, got)
		}
	}
	old := tlstest.ClientConfig(ca, nil, "localhost")
	old.MaxVersion = tls.VersionTLS11
	if _, h := dial(t, addr, old, srv); h.err == nil {
		t.Fatal("a TLS 1.1 client was served; the minimum is 1.2")
	}
}

func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	other := tlstest.NewCA(t, "other CA")
	dir := t.TempDir()
	sf := tlstest.WriteFiles(t, filepath.Join(dir, "server"), ca.Issue(t, tlstest.LeafOptions{}), ca)
	server, err := Load(Files(sf), Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := server.ServerConfig(tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	addr, srv := serve(t, cfg)

	// The client side is a Source too: its certificate and the CA it trusts.
	cf := tlstest.WriteFiles(t, filepath.Join(dir, "client"), ca.Issue(t, tlstest.LeafOptions{CommonName: "lis.example", Client: true}), ca)
	client, err := Load(Files(cf), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, h := dial(t, addr, client.ClientConfig("localhost"), srv); h.err != nil || Identity(h.peer) != "lis.example" {
		t.Fatalf("server error %v, peer %q; want lis.example", h.err, Identity(h.peer))
	}
	if _, h := dial(t, addr, tlstest.ClientConfig(ca, nil, "localhost"), srv); h.err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	stranger := other.Issue(t, tlstest.LeafOptions{CommonName: "stranger", Client: true})
	if _, h := dial(t, addr, tlstest.ClientConfig(ca, stranger, "localhost"), srv); h.err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
}

// rotation describes how a test replaces the files a source reads.
type rotation struct {
	name  string
	setup func(t *testing.T, dir string, leaf *tlstest.Leaf) Files
	swap  func(t *testing.T, dir string, leaf *tlstest.Leaf)
}

var rotations = []rotation{
	{
		name: "rewritten in place",
		setup: func(t *testing.T, dir string, leaf *tlstest.Leaf) Files {
			f := tlstest.WriteFiles(t, dir, leaf, nil)
			return Files{Cert: f.Cert, Key: f.Key}
		},
		swap: func(t *testing.T, dir string, leaf *tlstest.Leaf) {
			f := tlstest.WriteFiles(t, dir, leaf, nil) // truncates and rewrites: same inode
			touch(t, f.Cert, f.Key)
		},
	},
	{
		// Kubernetes' atomic writer: the files live in a timestamped
		// directory, ..data links to it, tls.crt links to ..data/tls.crt;
		// an update writes a new directory and renames a new ..data link
		// over the old one.
		name: "kubernetes symlink swap",
		setup: func(t *testing.T, dir string, leaf *tlstest.Leaf) Files {
			tlstest.WriteFiles(t, filepath.Join(dir, "..v1"), leaf, nil)
			if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
				t.Skipf("no symlinks here: %v", err)
			}
			for _, n := range []string{CertFile, KeyFile} {
				if err := os.Symlink(filepath.Join("..data", n), filepath.Join(dir, n)); err != nil {
					t.Fatal(err)
				}
			}
			return Files{Cert: filepath.Join(dir, CertFile), Key: filepath.Join(dir, KeyFile)}
		},
		swap: func(t *testing.T, dir string, leaf *tlstest.Leaf) {
			tlstest.WriteFiles(t, filepath.Join(dir, "..v2"), leaf, nil)
			tmp := filepath.Join(dir, "..data_tmp")
			if err := os.Symlink("..v2", tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
				t.Fatal(err)
			}
		},
	},
}

// TestRotation replaces the certificate and key under a running server and
// sees the new certificate on the next handshake after CheckEvery, not
// before, without a restart.
func TestRotation(t *testing.T) {
	for _, r := range rotations {
		t.Run(r.name, func(t *testing.T) {
			ca := tlstest.NewCA(t, "test CA")
			first, second := ca.Issue(t, tlstest.LeafOptions{}), ca.Issue(t, tlstest.LeafOptions{})
			dir := t.TempDir()
			clk := newClock()
			var logs logBuf
			s, err := Load(r.setup(t, dir, first), Options{Logger: logs.Logger(), Now: clk.Now, CheckEvery: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := s.ServerConfig(tls.NoClientCert)
			if err != nil {
				t.Fatal(err)
			}
			addr, srv := serve(t, cfg)
			cc := tlstest.ClientConfig(ca, nil, "localhost")
			served := func() *x509.Certificate {
				t.Helper()
				c, h := dial(t, addr, cc, srv)
				if h.err != nil {
					t.Fatalf("handshake: %v", h.err)
				}
				return c
			}
			if !served().Equal(first.Cert) {
				t.Fatal("the loaded certificate is not served")
			}
			r.swap(t, dir, second)
			if !served().Equal(first.Cert) {
				t.Fatal("files were re-read before CheckEvery passed")
			}
			clk.Advance(time.Minute)
			if !served().Equal(second.Cert) {
				t.Fatalf("the rotated certificate is not served; log:\n%s", logs.String())
			}
			if c := s.ClientConfig("localhost"); !bytes.Equal(c.Certificates[0].Certificate[0], second.Cert.Raw) {
				t.Fatal("ClientConfig does not present the rotated certificate")
			}
			if !strings.Contains(logs.String(), "reloaded TLS files") {
				t.Fatalf("the reload is not logged:\n%s", logs.String())
			}
		})
	}
}

// TestBrokenRotation: a rewrite that does not load keeps the old
// certificate, warns once however many handshakes follow, never logs the
// key, and is picked up once the files are whole again.
func TestBrokenRotation(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	first, second := ca.Issue(t, tlstest.LeafOptions{}), ca.Issue(t, tlstest.LeafOptions{})
	dir := t.TempDir()
	f := tlstest.WriteFiles(t, dir, first, ca)
	clk := newClock()
	var logs logBuf
	s, err := Load(Files(f), Options{Logger: logs.Logger(), Now: clk.Now, CheckEvery: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := s.ServerConfig(tls.NoClientCert)
	if err != nil {
		t.Fatal(err)
	}
	addr, srv := serve(t, cfg)
	cc := tlstest.ClientConfig(ca, nil, "localhost")

	// Half a rotation: the new certificate, still the old key.
	if err := os.WriteFile(f.Cert, second.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, f.Cert)
	for range 3 {
		clk.Advance(time.Second)
		if got, h := dial(t, addr, cc, srv); h.err != nil || !got.Equal(first.Cert) {
			t.Fatalf("server error %v; want the old certificate kept", h.err)
		}
		if c := s.ClientConfig("localhost"); !bytes.Equal(c.Certificates[0].Certificate[0], first.Cert.Raw) {
			t.Fatal("ClientConfig does not keep the old certificate")
		}
	}
	log := logs.String()
	if n := strings.Count(log, "level=WARN"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, log)
	}
	if !strings.Contains(log, f.Key) || !strings.Contains(log, "does not match") {
		t.Fatalf("the warning does not name the key file and why:\n%s", log)
	}
	keyBody := strings.Split(string(first.KeyPEM), "\n")[1]
	if strings.Contains(log, keyBody) || strings.Contains(log, strings.Split(string(second.KeyPEM), "\n")[1]) {
		t.Fatal("key bytes in the log")
	}

	// The rest of the rotation.
	if err := os.WriteFile(f.Key, second.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, f.Key)
	clk.Advance(time.Second)
	if got, h := dial(t, addr, cc, srv); h.err != nil || !got.Equal(second.Cert) {
		t.Fatalf("server error %v; want the repaired rotation served", h.err)
	}
}

func TestLoadErrors(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	leaf, other := ca.Issue(t, tlstest.LeafOptions{}), ca.Issue(t, tlstest.LeafOptions{})
	dir := t.TempDir()
	f := tlstest.WriteFiles(t, dir, leaf, ca)
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not PEM at all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(dir, "other.key")
	if err := os.WriteFile(otherKey, other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")
	for _, tc := range []struct {
		name  string
		files Files
		is    error
		names string // the file the message must name
	}{
		{"nothing", Files{}, ErrIncomplete, ""},
		{"certificate without key", Files{Cert: f.Cert}, ErrIncomplete, f.Cert},
		{"key without certificate", Files{Key: f.Key, CA: f.CA}, ErrIncomplete, f.Key},
		{"missing certificate", Files{Cert: missing, Key: f.Key}, fs.ErrNotExist, missing},
		{"missing CA", Files{CA: missing}, fs.ErrNotExist, missing},
		{"certificate not PEM", Files{Cert: junk, Key: f.Key}, ErrNotPEM, junk},
		{"certificate file holds a key", Files{Cert: f.Key, Key: f.Key}, ErrNotPEM, f.Key},
		{"key not PEM", Files{Cert: f.Cert, Key: junk}, ErrNotPEM, junk},
		{"key file holds a certificate", Files{Cert: f.Cert, Key: f.Cert}, ErrNotPEM, f.Cert},
		{"CA not PEM", Files{CA: junk}, ErrNotPEM, junk},
		{"key of another certificate", Files{Cert: f.Cert, Key: otherKey}, ErrKeyMismatch, otherKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.files, Options{})
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want one wrapping %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.names) {
				t.Fatalf("error %q does not name %s", err, tc.names)
			}
		})
	}
}

func TestServerConfigErrors(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	f := tlstest.WriteFiles(t, t.TempDir(), ca.Issue(t, tlstest.LeafOptions{}), ca)
	caOnly, err := Load(Files{CA: f.CA}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := caOnly.ServerConfig(tls.NoClientCert); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("CA-only ServerConfig: %v, want ErrNoCertificate", err)
	}
	if c := caOnly.ClientConfig("x"); c.RootCAs == nil || c.Certificates != nil || c.ServerName != "x" {
		t.Fatalf("CA-only ClientConfig: %+v", c)
	}
	noCA, err := Load(Files{Cert: f.Cert, Key: f.Key}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range []tls.ClientAuthType{tls.VerifyClientCertIfGiven, tls.RequireAndVerifyClientCert} {
		if _, err := noCA.ServerConfig(auth); !errors.Is(err, ErrNoCA) {
			t.Fatalf("ServerConfig(%v) without CA: %v, want ErrNoCA", auth, err)
		}
	}
	if c := noCA.ClientConfig("x"); c.RootCAs != nil {
		t.Fatal("ClientConfig without a CA file does not use the system roots")
	}
}

// TestNotValidNow: an expired or not yet valid certificate loads, with a
// warning, so the server starts and says why peers refuse it.
func TestNotValidNow(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	for name, o := range map[string]tlstest.LeafOptions{
		"expired":       {NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)},
		"not yet valid": {NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)},
	} {
		t.Run(name, func(t *testing.T) {
			f := tlstest.WriteFiles(t, t.TempDir(), ca.Issue(t, o), nil)
			var logs logBuf
			if _, err := Load(Files{Cert: f.Cert, Key: f.Key}, Options{Logger: logs.Logger()}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "not valid now") {
				t.Fatalf("no validity warning:\n%s", logs.String())
			}
		})
	}
}

// TestConcurrentReload runs dials' ClientConfig calls on several goroutines
// while the files rotate, for the race detector: each call sees one whole
// certificate, old or new.
func TestConcurrentReload(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	leaves := []*tlstest.Leaf{ca.Issue(t, tlstest.LeafOptions{}), ca.Issue(t, tlstest.LeafOptions{})}
	dir := t.TempDir()
	f := tlstest.WriteFiles(t, dir, leaves[0], ca)
	clk := newClock()
	s, err := Load(Files(f), Options{Now: clk.Now, CheckEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for range 200 {
				clk.Advance(time.Millisecond)
				raw := s.ClientConfig("localhost").Certificates[0].Certificate[0]
				if !bytes.Equal(raw, leaves[0].Cert.Raw) && !bytes.Equal(raw, leaves[1].Cert.Raw) {
					errs <- errors.New("a certificate that was never written")
					return
				}
			}
		})
	}
	for i := range 20 {
		tlstest.WriteFiles(t, dir, leaves[i%2], ca)
		touch(t, f.Cert, f.Key)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
