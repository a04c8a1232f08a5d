// Package devcerts makes a throwaway certificate authority and the
// certificates a test or lab install of Switchboard needs for TLS and
// mutual TLS on both planes, in the layout serve reads:
//
//	OUT/ca.crt                         the CA certificate (trust it in clients)
//	OUT/ca.key                         the CA key (keep it or delete it)
//	OUT/grpc/tls.crt, tls.key          the control plane's server certificate
//	OUT/profiles/mllp/tls.crt, tls.key, ca.crt
//	                                   a data-plane TLS profile: the listener's
//	                                   certificate, and the CA its peers'
//	                                   client certificates must chain to
//	OUT/clients/NAME/tls.crt, tls.key  client certificates, one per client
//
// Server certificates name localhost, 127.0.0.1 and ::1 plus every host.
// Keys are ECDSA P-256 (or RSA 2048, for peers whose TLS stacks predate
// ECDSA). deploy/tls/devcerts is its command; the benchmarks use it too.
// Production certificates come from the hospital's CA or cert-manager.
package devcerts

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

type maker struct {
	useRSA bool
	days   int
}

// Options says what Write makes.
type Options struct {
	// Hosts are more DNS names or IP addresses for the server certificates.
	Hosts []string
	// Clients are client certificates to make, by common name (also their
	// DNS SAN).
	Clients []string
	// RSA makes RSA 2048 keys instead of ECDSA P-256.
	RSA bool
	// Days is the validity; 0: 30.
	Days int
}

// Write makes the CA and certificates in out (see the package comment).
// It refuses a directory that already holds a ca.crt.
func Write(out string, o Options) error {
	if o.Days <= 0 {
		o.Days = 30
	}
	m := maker{useRSA: o.RSA, days: o.Days}
	hosts, clients := o.Hosts, o.Clients
	if _, err := os.Stat(filepath.Join(out, "ca.crt")); err == nil {
		return fmt.Errorf("%s already holds certificates; remove it or pick another directory", out)
	}
	caKey, err := m.key()
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "Switchboard dev CA", Organization: []string{"Switchboard devcerts"}},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := m.sign(caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	caPEM := pemOf("CERTIFICATE", caDER)
	if err := write(out, "ca.crt", caPEM, 0o644); err != nil {
		return err
	}
	if err := writeKey(out, "ca.key", caKey); err != nil {
		return err
	}
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	for _, dir := range []string{"grpc", filepath.Join("profiles", "mllp")} {
		if err := m.leaf(filepath.Join(out, dir), server, ca, caKey); err != nil {
			return err
		}
	}
	if err := write(filepath.Join(out, "profiles", "mllp"), "ca.crt", caPEM, 0o644); err != nil {
		return err
	}
	for _, name := range clients {
		c := &x509.Certificate{
			Subject:     pkix.Name{CommonName: name},
			DNSNames:    []string{name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := m.leaf(filepath.Join(out, "clients", name), c, ca, caKey); err != nil {
			return err
		}
	}
	return nil
}

func (m maker) key() (crypto.Signer, error) {
	if m.useRSA {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func (m maker) sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Duration(m.days) * 24 * time.Hour)
	if !tmpl.IsCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if m.useRSA {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
	}
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
}

func (m maker) leaf(dir string, tmpl, ca *x509.Certificate, caKey crypto.Signer) error {
	k, err := m.key()
	if err != nil {
		return err
	}
	der, err := m.sign(tmpl, ca, k.Public(), caKey)
	if err != nil {
		return err
	}
	if err := write(dir, "tls.crt", pemOf("CERTIFICATE", der), 0o644); err != nil {
		return err
	}
	return writeKey(dir, "tls.key", k)
}

func writeKey(dir, name string, k crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return write(dir, name, pemOf("PRIVATE KEY", der), 0o600)
}

func pemOf(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

// write creates dir/name with mode, refusing to overwrite.
func write(dir, name string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}
