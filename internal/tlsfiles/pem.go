package tlsfiles

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// readMaterial reads and checks every file of f. It parses the files
// itself rather than through tls.X509KeyPair so that each error names the
// file at fault and wraps a sentinel.
func readMaterial(f Files) (*material, error) {
	m := &material{}
	if f.Cert != "" {
		cert, err := readKeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, err
		}
		m.cert = cert
	}
	if f.CA != "" {
		certs, err := readCertificates(f.CA, "CA file")
		if err != nil {
			return nil, err
		}
		m.pool = x509.NewCertPool()
		for _, c := range certs {
			m.pool.AddCert(c)
		}
	}
	return m, nil
}

func readKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certs, err := readCertificates(certFile, "certificate")
	if err != nil {
		return nil, err
	}
	key, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("tlsfiles: key %s is not the key of certificate %s: %w", keyFile, certFile, ErrKeyMismatch)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// readCertificates returns every CERTIFICATE block of file, in order;
// other block types are skipped, as tls.X509KeyPair does.
func readCertificates(file, what string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: %s: %w", what, err) // the os error names the file
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tlsfiles: %s %s: certificate %d: %w", what, file, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("tlsfiles: %s %s holds no PEM CERTIFICATE block: %w", what, file, ErrNotPEM)
	}
	return certs, nil
}

// readKey returns the first private key of file, in any encoding Go's TLS
// stack reads (PKCS #8, PKCS #1 RSA, SEC 1 EC). Error messages never
// include key bytes.
func readKey(file string) (crypto.Signer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: key: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("tlsfiles: key %s holds no PEM PRIVATE KEY block: %w", file, ErrNotPEM)
		}
		if blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] != "" {
			return nil, fmt.Errorf("tlsfiles: key %s is encrypted; a server cannot ask for its passphrase", file)
		}
		if blk.Type != "PRIVATE KEY" && !strings.HasSuffix(blk.Type, " PRIVATE KEY") {
			continue
		}
		key, err := parseKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tlsfiles: key %s: %w", file, err)
		}
		return key, nil
	}
}

func parseKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported PKCS #8 key type %T", k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("not a PKCS #8, PKCS #1 or EC private key")
}
