package tlsfiles

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"
)

// Names returns the peer names of a certificate, the strings allow-lists
// and role mappings match against: the subject common name, then every DNS,
// URI, IP and email SAN, without duplicates. Names of nil is nil.
func Names(c *x509.Certificate) []string {
	if c == nil {
		return nil
	}
	var n []string
	add := func(s string) {
		if s != "" && !slices.Contains(n, s) {
			n = append(n, s)
		}
	}
	add(c.Subject.CommonName)
	for _, s := range c.DNSNames {
		add(s)
	}
	for _, u := range c.URIs {
		add(u.String())
	}
	for _, ip := range c.IPAddresses {
		add(ip.String())
	}
	for _, s := range c.EmailAddresses {
		add(s)
	}
	return n
}

// Identity is the one name a peer is shown and recorded by: its first URI
// SAN (a SPIFFE ID, say), else its first DNS SAN, else its common name,
// else its full subject DN. The most specific name a CA vouched for comes
// first; the CN is legacy. A certificate with an empty subject and none of
// those SANs is named by its first IP, else email, SAN, so a verified peer
// is never anonymous. Identity of nil is "".
func Identity(c *x509.Certificate) string {
	switch {
	case c == nil:
		return ""
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.Subject.ToRDNSequence()) > 0:
		return c.Subject.String()
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	case len(c.EmailAddresses) > 0:
		return c.EmailAddresses[0]
	}
	return ""
}

// Match reports whether any pattern matches any peer name of c. A pattern
// matches a name it equals; DNS SANs and the common name compare ASCII
// case-insensitively (DNS names are case-insensitive, and folding beyond
// ASCII would let look-alike Unicode match), IP SANs as addresses (so
// "::1" and "0:0::1" are one), the rest exactly. A pattern "*.suffix"
// also matches a DNS SAN or common name that is one more, non-empty,
// label before suffix: "*.example.com" matches "a.example.com" but
// neither "example.com" nor "a.b.example.com", as in certificate
// hostname matching. A nil certificate matches nothing.
func Match(c *x509.Certificate, patterns []string) bool {
	if c == nil {
		return false
	}
	for _, p := range patterns {
		if p == "" {
			continue
		}
		if matchHost(c.Subject.CommonName, p) {
			return true
		}
		for _, s := range c.DNSNames {
			if matchHost(s, p) {
				return true
			}
		}
		for _, u := range c.URIs {
			if u.String() == p {
				return true
			}
		}
		if ip, err := netip.ParseAddr(p); err == nil {
			for _, a := range c.IPAddresses {
				if b, ok := netip.AddrFromSlice(a); ok && b.Unmap() == ip.Unmap() {
					return true
				}
			}
		}
		if slices.Contains(c.EmailAddresses, p) {
			return true
		}
	}
	return false
}

// matchHost matches a DNS name or common name against a pattern.
func matchHost(name, p string) bool {
	if name == "" {
		return false
	}
	if asciiEqualFold(name, p) {
		return true
	}
	suffix, ok := strings.CutPrefix(p, "*.")
	if !ok || suffix == "" {
		return false
	}
	label, rest, ok := strings.Cut(name, ".")
	return ok && label != "" && asciiEqualFold(rest, suffix)
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// ErrInvalidPattern: a peer-name pattern ValidPattern refuses.
var ErrInvalidPattern = errors.New("invalid peer name pattern")

// ValidPattern checks a peer-name pattern before it is stored in a
// configuration, so a typo fails at once instead of silently matching
// nothing. A pattern is a name (a common name may hold spaces) of valid
// UTF-8 without control characters or surrounding spaces; a "*" is only
// allowed as the whole leftmost label of "*.suffix", with a non-empty
// suffix of non-empty labels.
func ValidPattern(p string) error {
	bad := func(why string) error { return fmt.Errorf("peer name pattern %q: %s: %w", p, why, ErrInvalidPattern) }
	switch {
	case p == "":
		return bad("empty")
	case !utf8.ValidString(p):
		return bad("not valid UTF-8")
	case strings.TrimSpace(p) != p:
		return bad("leading or trailing space")
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }):
		return bad("control character")
	}
	if !strings.Contains(p, "*") {
		return nil
	}
	suffix, ok := strings.CutPrefix(p, "*.")
	switch {
	case !ok:
		return bad(`"*" is only allowed as the leftmost label, as in "*.example.com"`)
	case strings.Contains(suffix, "*"):
		return bad(`only one "*", as the leftmost label`)
	case suffix == "" || strings.HasPrefix(suffix, ".") || strings.HasSuffix(suffix, ".") || strings.Contains(suffix, ".."):
		return bad(`"*." must be followed by a domain of non-empty labels`)
	case strings.ContainsAny(suffix, " /:@"):
		return bad(`"*." must be followed by a domain name`)
	}
	return nil
}
