package tlsfiles

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/internal/tlstest"
)

func TestProfiles(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	leaf := ca.Issue(t, tlstest.LeafOptions{})
	dir := t.TempDir()
	tlstest.WriteFiles(t, filepath.Join(dir, "edge"), leaf, ca)   // serves, verifies clients
	tlstest.WriteFiles(t, filepath.Join(dir, "peers"), nil, ca)   // trust only, for dialling
	tlstest.WriteFiles(t, filepath.Join(dir, "..data"), leaf, ca) // hidden: skipped
	tlstest.WriteFiles(t, filepath.Join(dir, "Upper"), leaf, ca)  // no API call could name it
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("profiles\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	p, err := OpenProfiles(dir, Options{Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Names(); !slices.Equal(got, []string{"edge", "peers"}) {
		t.Fatalf("Names() = %q, want [edge peers]", got)
	}
	if !strings.Contains(logs.String(), "Upper") {
		t.Fatalf("skipping Upper is not logged:\n%s", logs.String())
	}
	if _, err := p.Get("nope"); !errors.Is(err, ErrUnknownProfile) || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("Get(nope): %v, want ErrUnknownProfile naming it", err)
	}
	peers, err := p.Get("peers")
	if err != nil {
		t.Fatal(err)
	}
	if peers.HasCertificate() || !peers.HasCA() {
		t.Fatal("peers: want a CA and no certificate")
	}
	edge, err := p.Get("edge")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := edge.ServerConfig(tls.VerifyClientCertIfGiven)
	if err != nil {
		t.Fatal(err)
	}
	addr, srv := serve(t, cfg)
	if got, h := dial(t, addr, peers.ClientConfig("localhost"), srv); h.err != nil || !got.Equal(leaf.Cert) {
		t.Fatalf("dialling profile edge with profile peers: server error %v", h.err)
	}
}

func TestProfilesBroken(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	leaf, other := ca.Issue(t, tlstest.LeafOptions{}), ca.Issue(t, tlstest.LeafOptions{})
	for _, tc := range []struct {
		name  string
		setup func(dir string)
		is    error
	}{
		{"certificate without key", func(dir string) {
			f := tlstest.WriteFiles(t, dir, leaf, nil)
			if err := os.Remove(f.Key); err != nil {
				t.Fatal(err)
			}
		}, ErrIncomplete},
		{"key without certificate", func(dir string) {
			f := tlstest.WriteFiles(t, dir, leaf, ca)
			if err := os.Remove(f.Cert); err != nil {
				t.Fatal(err)
			}
		}, ErrIncomplete},
		{"empty", func(dir string) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
		}, ErrIncomplete},
		{"key of another certificate", func(dir string) {
			f := tlstest.WriteFiles(t, dir, leaf, nil)
			if err := os.WriteFile(f.Key, other.KeyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
		}, ErrKeyMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tlstest.WriteFiles(t, filepath.Join(dir, "good"), leaf, ca)
			tc.setup(filepath.Join(dir, "broken"))
			_, err := OpenProfiles(dir, Options{})
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), `profile "broken"`) {
				t.Fatalf("error %v, want one wrapping %v naming profile broken", err, tc.is)
			}
		})
	}
	if _, err := OpenProfiles(filepath.Join(t.TempDir(), "absent"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing directory: %v", err)
	}
}
