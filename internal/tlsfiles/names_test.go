package tlsfiles

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// cert builds an unsigned certificate: names are all Match and friends read.
func cert(cn string, dns []string, uris []string, ips []string, emails []string) *x509.Certificate {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns, EmailAddresses: emails}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			panic(err)
		}
		c.URIs = append(c.URIs, u)
	}
	for _, s := range ips {
		c.IPAddresses = append(c.IPAddresses, net.ParseIP(s))
	}
	return c
}

func TestNamesAndIdentity(t *testing.T) {
	full := cert("lis.example", []string{"lis.example", "lis-2.example"}, []string{"spiffe://hospital/lis"},
		[]string{"10.0.0.7"}, []string{"ops@hospital.example"})
	org := &x509.Certificate{Subject: pkix.Name{Organization: []string{"Hospital"}, Country: []string{"NL"}}}
	for _, tc := range []struct {
		name     string
		c        *x509.Certificate
		names    []string
		identity string
	}{
		{"all kinds, CN repeated as DNS SAN", full,
			[]string{"lis.example", "lis-2.example", "spiffe://hospital/lis", "10.0.0.7", "ops@hospital.example"},
			"spiffe://hospital/lis"},
		{"DNS before CN", cert("Lab System", []string{"lab.example"}, nil, nil, nil),
			[]string{"Lab System", "lab.example"}, "lab.example"},
		{"CN only", cert("Lab System", nil, nil, nil, nil), []string{"Lab System"}, "Lab System"},
		{"empty subject, IP and email SANs", cert("", nil, nil, []string{"::1"}, []string{"a@b.example"}),
			[]string{"::1", "a@b.example"}, "::1"},
		{"empty subject, IP SAN", cert("", nil, nil, []string{"::1"}, nil), []string{"::1"}, "::1"},
		{"no names: the DN", org, nil, "O=Hospital,C=NL"},
		{"nil", nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Names(tc.c); !slices.Equal(got, tc.names) {
				t.Errorf("Names = %q, want %q", got, tc.names)
			}
			if got := Identity(tc.c); got != tc.identity {
				t.Errorf("Identity = %q, want %q", got, tc.identity)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	c := cert("Lab.Example", []string{"lis.hospital.example", "*.wild.example"}, []string{"spiffe://hospital/lis"},
		[]string{"10.0.0.7", "::1"}, []string{"Ops@hospital.example"})
	for _, tc := range []struct {
		pattern string
		want    bool
	}{
		{"lis.hospital.example", true},
		{"LIS.Hospital.EXAMPLE", true}, // DNS names fold ASCII case
		{"lab.example", true},          // so does the CN
		{"*.hospital.example", true},   // one leftmost label
		{"*.HOSPITAL.example", true},
		{"*.example", true}, // the CN lab.example
		{"*.lis.hospital.example", false},
		{"hospital.example", false},
		{"*.wild.example", true}, // a wildcard SAN is a name like any other
		{"a.wild.example", false},
		{"spiffe://hospital/lis", true},
		{"SPIFFE://hospital/lis", false}, // URIs compare exactly
		{"spiffe://hospital", false},
		{"10.0.0.7", true},
		{"0:0::1", true},          // IPs compare as addresses
		{"::ffff:10.0.0.7", true}, // an IPv4-mapped pattern is the IPv4 address
		{"10.0.0.8", false},
		{"Ops@hospital.example", true},
		{"ops@hospital.example", false},
		{"lab.e\u212axample", false}, // KELVIN SIGN folds to k in Unicode, not in ASCII
		{"", false},
		{"*", false},
		{"*.", false},
	} {
		if got := Match(c, []string{tc.pattern}); got != tc.want {
			t.Errorf("Match(%q) = %v, want %v", tc.pattern, got, tc.want)
		}
	}
	if !Match(c, []string{"nope", "lis.hospital.example"}) {
		t.Error("the second pattern of a list is not tried")
	}
	if Match(nil, []string{"*.example"}) || Match(c, nil) {
		t.Error("a nil certificate or no pattern matched")
	}
	if !Match(cert("", []string{"a.example"}, nil, nil, nil), []string{"*.example"}) ||
		Match(cert("", []string{".example"}, nil, nil, nil), []string{"*.example"}) {
		t.Error("the wildcard label must be one non-empty label")
	}
}

func TestValidPattern(t *testing.T) {
	for _, p := range []string{"lis.example", "*.hospital.example", "*.example", "Lab System",
		"spiffe://hospital/lis", "10.0.0.7", "::1", "ops@hospital.example", "CN=x,O=y"} {
		if err := ValidPattern(p); err != nil {
			t.Errorf("ValidPattern(%q): %v", p, err)
		}
	}
	for _, p := range []string{"", " lis.example", "lis.example ", "a\nb", "a\x00b", "\xff",
		"*", "*.", "*example.com", "a.*.example", "*.*.example", "**.example", "*..example",
		"*.example.", "*.a..b", "*.ex ample", "*.spiffe://x", "foo*"} {
		if err := ValidPattern(p); !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("ValidPattern(%q) = %v, want ErrInvalidPattern", p, err)
		}
	}
}

// FuzzMatch checks that patterns and names never panic and that the
// matching rules hold for any input: a valid pattern matches itself in any
// ASCII case, a match is an ASCII-folded equality or one label under a
// wildcard, and a wildcard matches exactly one more label.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"lis.example", "lis.example"}, {"*.example", "a.example"}, {"*.example", "a.b.example"},
		{"*.example", "example"}, {"LIS.example", "lis.EXAMPLE"}, {"::1", "::1"}, {"*", "*"},
		{"*.", "a."}, {"spiffe://x/y", "spiffe://x/y"}, {"a@b", "a@b"}, {"lab.e\u212axample", "lab.example"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		valid := ValidPattern(pattern) == nil
		c := cert(name, []string{name}, nil, nil, []string{name})
		if u, err := url.Parse(name); err == nil {
			c.URIs = []*url.URL{u}
		}
		if ip := net.ParseIP(name); ip != nil {
			c.IPAddresses = []net.IP{ip}
		}
		_ = Match(c, []string{pattern}) // must not panic, whatever the name

		dns := cert("", []string{name}, nil, nil, nil)
		if Match(dns, []string{pattern}) {
			wild, isWild := strings.CutPrefix(pattern, "*.")
			label, rest, _ := strings.Cut(name, ".")
			if !asciiEqualFold(name, pattern) && !(isWild && label != "" && asciiEqualFold(rest, wild)) {
				t.Fatalf("DNS name %q matched pattern %q", name, pattern)
			}
		}
		if !valid {
			return
		}
		if !Match(cert("", []string{pattern}, nil, nil, nil), []string{pattern}) ||
			!Match(cert("", []string{asciiUpper(pattern)}, nil, nil, nil), []string{pattern}) {
			t.Fatalf("valid pattern %q does not match itself", pattern)
		}
		if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
			one := func(n string) bool { return Match(cert("", []string{n}, nil, nil, nil), []string{pattern}) }
			if !one("x."+suffix) || one(suffix) || one("x.y."+suffix) || one("."+suffix) {
				t.Fatalf("wildcard %q does not match exactly one label", pattern)
			}
		}
	})
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}
