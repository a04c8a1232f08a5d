package auth

import (
	"crypto/x509"
	"strings"
)

// This file is a minimal copy of internal/tlsfiles' Names, Identity and
// Match (the semantics of the shared design's Decisions).
// TODO(tlsfiles): replace with tlsfiles.Names, Identity and Match once
// internal/tlsfiles is on main.

// peerNames are a certificate's names for matching: its subject common
// name and every DNS, URI, IP and email SAN.
func peerNames(c *x509.Certificate) []string {
	var out []string
	if c.Subject.CommonName != "" {
		out = append(out, c.Subject.CommonName)
	}
	out = append(out, c.DNSNames...)
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	out = append(out, c.EmailAddresses...)
	return out
}

// peerIdentity is the name shown and recorded for a certificate: its
// first URI SAN, else first DNS SAN, else CN, else the subject DN.
func peerIdentity(c *x509.Certificate) string {
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// matchCert reports whether pattern matches one of c's names: equal to
// it (ASCII case-insensitively for DNS names and the CN), or "*.suffix"
// matching a DNS name or CN with exactly one more leftmost label.
func matchCert(c *x509.Certificate, pattern string) bool {
	folded := func(name string) bool {
		if strings.EqualFold(name, pattern) {
			return true
		}
		suffix, ok := strings.CutPrefix(pattern, "*.")
		if !ok {
			return false
		}
		label, rest, ok := strings.Cut(name, ".")
		return ok && label != "" && label != "*" && strings.EqualFold(rest, suffix)
	}
	if c.Subject.CommonName != "" && folded(c.Subject.CommonName) {
		return true
	}
	for _, n := range c.DNSNames {
		if folded(n) {
			return true
		}
	}
	for _, u := range c.URIs {
		if u.String() == pattern {
			return true
		}
	}
	for _, ip := range c.IPAddresses {
		if ip.String() == pattern {
			return true
		}
	}
	for _, e := range c.EmailAddresses {
		if e == pattern {
			return true
		}
	}
	return false
}
