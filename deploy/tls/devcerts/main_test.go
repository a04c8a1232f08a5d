package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDevcerts runs the command and checks that what it wrote loads and
// chains: the server certificates for localhost, a client certificate for
// client authentication, the profile's CA, and that a second run refuses to
// overwrite.
func TestDevcerts(t *testing.T) {
	for _, rsa := range []bool{false, true} {
		out := filepath.Join(t.TempDir(), "certs")
		args := []string{"-out", out, "-client", "ops", "-host", "mllp.example"}
		if rsa {
			args = append(args, "-rsa")
		}
		if err := run(args); err != nil {
			t.Fatal(err)
		}
		caPEM, err := os.ReadFile(filepath.Join(out, "profiles", "mllp", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			t.Fatal("profile ca.crt holds no certificate")
		}
		for dir, usage := range map[string]x509.ExtKeyUsage{
			"grpc": x509.ExtKeyUsageServerAuth, "profiles/mllp": x509.ExtKeyUsageServerAuth, "clients/ops": x509.ExtKeyUsageClientAuth,
		} {
			pair, err := tls.LoadX509KeyPair(filepath.Join(out, dir, "tls.crt"), filepath.Join(out, dir, "tls.key"))
			if err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
			opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}
			if usage == x509.ExtKeyUsageServerAuth {
				opts.DNSName = "mllp.example"
			}
			if _, err := pair.Leaf.Verify(opts); err != nil {
				t.Fatalf("%s does not verify: %v", dir, err)
			}
		}
		if fi, err := os.Stat(filepath.Join(out, "grpc", "tls.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
		}
		if err := run(args); err == nil {
			t.Fatal("a second run into the same directory succeeded; want a refusal")
		}
	}
}
