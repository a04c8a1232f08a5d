// Package tlstest makes throwaway certificate authorities and certificates
// for tests: ECDSA P-256, valid from a minute ago for a day unless told
// otherwise, never written outside the test's temporary directory.
package tlstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate, PEM-encoded (a ca.crt file's content).
	PEM []byte
}

// NewCA returns a self-signed CA whose subject common name is name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Switchboard tests"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("tlstest: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("tlstest: parse CA: %v", err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// LeafOptions says what a leaf certificate holds. With no names at all it
// gets DNS name "localhost" and IP SANs 127.0.0.1 and ::1, so it serves on
// loopback.
type LeafOptions struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []string
	// Client makes it a client certificate (ExtKeyUsageClientAuth);
	// otherwise it is a server certificate. Both: set Client and Server.
	Client, Server bool
	// NotBefore and NotAfter default to a minute ago and a day from now.
	NotBefore, NotAfter time.Time
}

// Leaf is an issued certificate with its key.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte // the certificate followed by nothing else (a tls.crt)
	KeyPEM  []byte // PKCS #8 (a tls.key)
	TLS     tls.Certificate
}

// Issue signs a leaf certificate.
func (ca *CA) Issue(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	if o.CommonName == "" && len(o.DNSNames) == 0 && len(o.IPs) == 0 && len(o.URIs) == 0 {
		o.DNSNames = []string{"localhost"}
		o.IPs = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Minute)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	var usage []x509.ExtKeyUsage
	if o.Server || !o.Client {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	if o.Client {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: o.CommonName},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPs,
	}
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("tlstest: URI SAN %q: %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("tlstest: issue: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("tlstest: parse leaf: %v", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("tlstest: marshal key: %v", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("tlstest: key pair: %v", err)
	}
	return &Leaf{Cert: cert, CertPEM: certPEM, KeyPEM: keyPEM, TLS: pair}
}

// Files are the paths WriteFiles wrote.
type Files struct {
	Cert, Key, CA string
}

// WriteFiles writes leaf and ca (either may be nil) into dir as tls.crt,
// tls.key and ca.crt, the layout of a Kubernetes TLS secret, creating dir.
// Paths of files not written are empty.
func WriteFiles(t testing.TB, dir string, leaf *Leaf, ca *CA) Files {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	var f Files
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatalf("tlstest: %v", err)
		}
		return p
	}
	if leaf != nil {
		f.Cert = write("tls.crt", leaf.CertPEM, 0o644)
		f.Key = write("tls.key", leaf.KeyPEM, 0o600)
	}
	if ca != nil {
		f.CA = write("ca.crt", ca.PEM, 0o644)
	}
	return f
}

// ServerConfig is a TLS 1.2+ server config with leaf; with clientCAs it
// requires and verifies a client certificate.
func ServerConfig(leaf *Leaf, clientCAs *CA) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf.TLS}}
	if clientCAs != nil {
		c.ClientCAs = clientCAs.Pool()
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c
}

// ClientConfig trusts roots and presents leaf, when not nil.
func ClientConfig(roots *CA, leaf *Leaf, serverName string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots.Pool(), ServerName: serverName}
	if leaf != nil {
		c.Certificates = []tls.Certificate{leaf.TLS}
	}
	return c
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("tlstest: key: %v", err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("tlstest: serial: %v", err)
	}
	return n
}
