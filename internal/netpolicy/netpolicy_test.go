package netpolicy

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

func mustNew(t *testing.T, listen, allow, deny []string) *Policy {
	t.Helper()
	p, err := New(listen, allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseRuleErrors(t *testing.T) {
	for _, s := range []string{
		"", "10.0.0.1", "10.0.0.0/8", "10.0.0.1:", "10.0.0.1:x", "10.0.0.1:70000", "10.0.0.1:9-1",
		"10.0.0.1/8:1", "fd00::/8:1", "::1:1", "bad name:1", "-x.org:1", "*.:1", "a..b:1", "[zz]:1",
	} {
		if _, err := ParseRule(s); err == nil {
			t.Errorf("ParseRule(%q) = nil error, want one", s)
		}
	}
	for _, s := range []string{"*:*", "10.0.0.0/8:2575", "[fd00::/8]:1-2", "[::1]:*", "lab.example.org:2575-2600", "*.Example.org.:*", "127.0.0.1:0"} {
		if _, err := ParseRule(s); err != nil {
			t.Errorf("ParseRule(%q): %v", s, err)
		}
	}
}

func TestListen(t *testing.T) {
	def := mustNew(t, nil, nil, nil)
	names := mustNew(t, []string{"lis.example.org:3000"}, nil, nil)
	narrow := mustNew(t, []string{"127.0.0.0/8:2575-2600", "[::1]:*", "lis.example.org:3000"}, nil, nil)
	for _, c := range []struct {
		p    *Policy
		addr string
		ok   bool
	}{
		{def, "127.0.0.1:0", true},
		{def, ":2575", true},
		{def, "0.0.0.0:2575", true},
		{def, "[::]:2575", true},
		{def, "127.0.0.1:80", false},
		{def, ":22", false},
		{narrow, "127.0.0.1:2575", true},
		{narrow, "127.0.0.1:2601", false},
		{narrow, "127.0.0.1:0", false}, // port 0 needs 1024-65535
		{narrow, "[::1]:0", true},
		{narrow, ":2575", false}, // every interface needs a rule for the whole family
		{narrow, "10.0.0.1:2575", false},
		{narrow, "lis.example.org:3000", true},
		{names, "lis.example.org:3000", true},
		{names, "other.example.org:3000", false},
		{names, "lis.example.org:3001", false},
		{narrow, "other.example.org:3001", true}, // [::1]:* may match what it resolves to: ListenControl decides
		{narrow, "other.example.org:2601", true},
	} {
		err := c.p.CheckListen(c.addr)
		if (err == nil) != c.ok {
			t.Errorf("CheckListen(%q) = %v, want ok=%v", c.addr, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrForbidden) {
			t.Errorf("CheckListen(%q) = %v, want it to wrap ErrForbidden", c.addr, err)
		}
	}
}

func TestDial(t *testing.T) {
	def := mustNew(t, nil, nil, nil)
	names := mustNew(t, nil, []string{"*.hospital.example:2575", "10.1.0.0/16:*"}, []string{"10.1.9.0/24:*"})
	for _, c := range []struct {
		p    *Policy
		addr string
		ok   bool
	}{
		{def, "127.0.0.1:2575", true},
		{def, "peer.example.org:2575", true},
		{def, "169.254.169.254:80", false},
		{def, "[fe80::1]:80", false},
		{def, "0.0.0.0:2575", false},
		{def, "[::]:2575", false},
		{def, "[::ffff:169.254.169.254]:80", false}, // v4-mapped is unmapped first
		{names, "lab.hospital.example:2575", true},
		{names, "lab.hospital.example:2576", true}, // an IP rule has every port: decided after DNS
		{names, "10.1.2.3:2575", true},
		{names, "10.1.9.3:2575", false},
		{names, "10.2.0.1:2575", false},
	} {
		err := c.p.CheckDial(c.addr)
		if (err == nil) != c.ok {
			t.Errorf("CheckDial(%q) = %v, want ok=%v", c.addr, err, c.ok)
		}
	}
	// After DNS: a name rule lets its name's addresses through unless
	// denied; an IP rule decides for any name.
	for _, c := range []struct {
		configured, resolved string
		ok                   bool
	}{
		{"lab.hospital.example:2575", "192.0.2.7:2575", true},
		{"lab.hospital.example:2575", "10.1.9.9:2575", false}, // denied, whatever the name
		{"lab.hospital.example:2576", "192.0.2.7:2576", false},
		{"lab.hospital.example:2576", "10.1.2.3:2576", true},
		{"evil.example:2575", "192.0.2.7:2575", false},
		{"10.1.2.3:80", "10.1.2.3:80", true},
	} {
		err := names.DialControlFor(c.configured)("tcp4", c.resolved, nil)
		if (err == nil) != c.ok {
			t.Errorf("DialControlFor(%q) at %s = %v, want ok=%v", c.configured, c.resolved, err, c.ok)
		}
	}
}

// TestResolvedOnLoopback binds and dials for real: "localhost" passes the
// name check, and the Control hook refuses it once it resolves to a denied
// loopback address, before any packet is sent.
func TestResolvedOnLoopback(t *testing.T) {
	p := mustNew(t, []string{"127.0.0.1:*"}, []string{"localhost:*"}, []string{"127.0.0.0/8:*", "[::1]:*"})
	ln, err := (&net.ListenConfig{Control: p.ListenControl}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on an allowed address: %v", err)
	}
	defer ln.Close()
	if _, err := (&net.ListenConfig{Control: p.ListenControl}).Listen(context.Background(), "tcp4", "127.0.0.2:0"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("listen on 127.0.0.2 = %v, want ErrForbidden", err)
	}
	// A name rule allows what its name resolves to.
	byName := mustNew(t, []string{"localhost:*"}, nil, nil)
	ln2, err := (&net.ListenConfig{Control: byName.ListenControlFor("localhost:0")}).Listen(context.Background(), "tcp4", "localhost:0")
	if err != nil {
		t.Fatalf("listen on localhost allowed by name: %v", err)
	}
	ln2.Close()
	if _, err := (&net.ListenConfig{Control: byName.ListenControl}).Listen(context.Background(), "tcp4", "localhost:0"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("listen without the configured name = %v, want ErrForbidden", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	addr := net.JoinHostPort("localhost", port)
	if err := p.CheckDial(addr); err != nil {
		t.Fatalf("CheckDial(%s) before DNS: %v", addr, err)
	}
	d := net.Dialer{Control: p.DialControlFor(addr)}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatal("dial localhost succeeded; want the resolved loopback address refused")
	}
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "resolves to") {
		t.Fatalf("dial localhost = %v, want ErrForbidden naming the resolved address", err)
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range append(append([]string{"10.0.0.0/8:1-2", "[::1]:*", "*.a.b:3", "x:y:z", "[:1", "*:*"}, DefaultDialDeny...), DefaultListen...) {
		f.Add(s, "10.0.0.1:2575")
	}
	f.Fuzz(func(t *testing.T, rule, addr string) {
		r, err := ParseRule(rule)
		if err != nil {
			return
		}
		if r.lo > r.hi {
			t.Fatalf("ParseRule(%q): ports %d-%d", rule, r.lo, r.hi)
		}
		p := &Policy{listen: []Rule{r}, allow: []Rule{r}, deny: []Rule{r}}
		// Must not panic, and a refusal must say why.
		for _, err := range []error{p.CheckListen(addr), p.CheckDial(addr), p.DialControlFor(addr)("tcp", addr, nil)} {
			if err != nil && err.Error() == "" {
				t.Fatal("empty error")
			}
		}
	})
}
