package transport

import (
	"crypto/x509"
	"strings"
)

// Peer names and identity of a certificate, by the rules the whole project
// shares (docs/security.md): the names are the subject common name and every
// DNS, URI, IP and email SAN; a pattern matches a name when it equals it
// (ASCII case-insensitively for DNS names and the common name) or is
// "*.suffix" and matches one leftmost DNS label; the identity is the first
// URI SAN, else the first DNS SAN, else the common name, else the subject.
//
// TODO(lead): these are stand-ins for internal/tlsfiles.Names, Identity and
// Match, written while that package was not on main; swap the three
// functions below for it (same semantics) and delete this file.

// certNames returns every peer name of c: URI SANs, DNS SANs, IP SANs,
// email SANs, then the common name.
func certNames(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	out = append(out, c.EmailAddresses...)
	if c.Subject.CommonName != "" {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

// certIdentity is the one name a peer is shown and recorded by.
func certIdentity(c *x509.Certificate) string {
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

// certMatch reports whether any peer name of c matches any pattern.
func certMatch(c *x509.Certificate, patterns []string) bool {
	for _, p := range patterns {
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			for _, d := range c.DNSNames {
				if _, suffix, ok := strings.Cut(d, "."); ok && suffix != "" && strings.EqualFold(suffix, rest) {
					return true
				}
			}
			continue
		}
		if strings.EqualFold(p, c.Subject.CommonName) && p != "" {
			return true
		}
		for _, d := range c.DNSNames {
			if strings.EqualFold(p, d) {
				return true
			}
		}
		for _, u := range c.URIs {
			if p == u.String() {
				return true
			}
		}
		for _, ip := range c.IPAddresses {
			if p == ip.String() {
				return true
			}
		}
		for _, e := range c.EmailAddresses {
			if p == e {
				return true
			}
		}
	}
	return false
}
