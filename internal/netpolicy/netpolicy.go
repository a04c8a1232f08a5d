// Package netpolicy decides which addresses listeners may bind and which
// destinations outbound connections may dial. A control plane that can open
// ports and dial any address is a port scanner and an SSRF tool; the policy
// is what keeps a caller with the operator role from turning Switchboard into
// one.
//
// A rule is HOST:PORTS, written like a dial address:
//
//	HOST   an IP address, a CIDR prefix (IPv6 in brackets: [fd00::/8]),
//	       a DNS name, *.suffix (any name ending in .suffix), or * (anything)
//	PORTS  a port, a range LOW-HIGH, or * (0-65535)
//
// Listening is allowed when a listen rule matches the address to bind. An
// unspecified host (empty, 0.0.0.0, ::: every interface) matches only a rule
// covering the whole family (*, 0.0.0.0/0, [::/0]). Port 0 (the kernel picks
// a free one, always 1024 or above) matches a rule whose ports cover all of
// 1024-65535.
//
// Dialing is decided twice. At Connect, the configured address must be able
// to match an allow rule: a name matching a name rule, or any host when an
// IP rule has the port. At every connect and reconnect, after DNS, the
// address actually dialed is checked again: it must match no deny rule, and
// match an allow IP rule or come from a name an allow name rule matched. So
// a name cannot smuggle in a forbidden address, not even by changing its DNS
// answer between Connect and a reconnect.
package netpolicy

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/switchboard-dev/switchboard/transport"
)

// ErrForbidden is wrapped by every refusal. It is transport's sentinel, so
// that a refusal from a Control hook passes through Listen and Dial as what
// it is.
var ErrForbidden = transport.ErrAddressForbidden

// Defaults, as flag values. The listen default keeps privileged ports (the
// host's own services) out of reach; the dial default refuses the addresses
// an SSRF goes for — link-local (cloud metadata at 169.254.169.254),
// unspecified (0.0.0.0 and :: reach the host itself), multicast and
// broadcast — and allows the rest, loopback included, because a single-host
// install talks to peers on the same host. A production install names its
// peers' networks with --allow-dial.
var (
	DefaultListen    = []string{"*:1024-65535"}
	DefaultDialAllow = []string{"*:1-65535"}
	DefaultDialDeny  = []string{
		"0.0.0.0/8:*", "169.254.0.0/16:*", "224.0.0.0/4:*", "255.255.255.255/32:*",
		"[::/128]:*", "[fe80::/10]:*", "[ff00::/8]:*",
	}
)

// Rule is one parsed HOST:PORTS.
type Rule struct {
	text   string
	any    bool         // host *
	prefix netip.Prefix // valid for IP and CIDR hosts
	name   string       // a DNS name, lower case; "*.x" keeps its "*."
	lo, hi uint16
}

func (r Rule) String() string { return r.text }

// ParseRule parses HOST:PORTS.
func ParseRule(s string) (Rule, error) {
	r := Rule{text: s}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return r, fmt.Errorf("rule %q: want HOST:PORTS, for example 10.0.0.0/8:2575 or *.example.org:*", s)
	}
	host, ports := s[:i], s[i+1:]
	bracketed := strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]")
	if bracketed {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return r, fmt.Errorf("rule %q: write an IPv6 host in brackets, for example [fd00::/8]:2575", s)
	}
	if err := r.parsePorts(ports); err != nil {
		return r, fmt.Errorf("rule %q: %w", s, err)
	}
	switch {
	case host == "*":
		r.any = true
	case strings.Contains(host, "/"):
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return r, fmt.Errorf("rule %q: bad CIDR prefix: %w", s, err)
		}
		if p != p.Masked() {
			return r, fmt.Errorf("rule %q: prefix %s has host bits set; did you mean %s?", s, p, p.Masked())
		}
		r.prefix = p
	default:
		if a, err := netip.ParseAddr(host); err == nil {
			r.prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
			break
		}
		if bracketed {
			return r, fmt.Errorf("rule %q: %q in brackets is not an IPv6 address or prefix", s, host)
		}
		name := strings.ToLower(strings.TrimSuffix(host, "."))
		if err := checkName(strings.TrimPrefix(name, "*.")); err != nil {
			return r, fmt.Errorf("rule %q: %w", s, err)
		}
		r.name = name
	}
	return r, nil
}

func (r *Rule) parsePorts(s string) error {
	if s == "*" {
		r.lo, r.hi = 0, 65535
		return nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || l > h {
		return fmt.Errorf("ports %q: want a port, LOW-HIGH or *", s)
	}
	r.lo, r.hi = uint16(l), uint16(h)
	return nil
}

// checkName accepts DNS names of letters, digits, hyphens and dots.
func checkName(n string) error {
	if n == "" || len(n) > 253 {
		return fmt.Errorf("host %q is not an IP address, CIDR prefix or DNS name", n)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host %q is not an IP address, CIDR prefix or DNS name", n)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host %q is not an IP address, CIDR prefix or DNS name", n)
			}
		}
	}
	return nil
}

func (r Rule) portOK(port uint16) bool { return r.lo <= port && port <= r.hi }

// ipOK: the rule's host covers ip.
func (r Rule) ipOK(ip netip.Addr) bool {
	return r.any || r.prefix.IsValid() && r.prefix.Contains(ip.Unmap())
}

// nameOK: the rule's host covers the DNS name n (lower case, no trailing dot).
func (r Rule) nameOK(n string) bool {
	switch {
	case r.any:
		return true
	case strings.HasPrefix(r.name, "*."):
		suffix := r.name[1:] // ".example.org"
		return strings.HasSuffix(n, suffix) && len(n) > len(suffix)
	}
	return r.name != "" && r.name == n
}

// Policy is a parsed address policy. The zero value forbids everything;
// use New.
type Policy struct {
	listen, allow, deny []Rule
}

// New parses the three rule lists (nil: the defaults above; an empty,
// non-nil list: no rules).
func New(listen, dialAllow, dialDeny []string) (*Policy, error) {
	p := &Policy{}
	for _, l := range []struct {
		rules []string
		def   []string
		dst   *[]Rule
		what  string
	}{{listen, DefaultListen, &p.listen, "listen"}, {dialAllow, DefaultDialAllow, &p.allow, "dial allow"}, {dialDeny, DefaultDialDeny, &p.deny, "dial deny"}} {
		if l.rules == nil {
			l.rules = l.def
		}
		for _, s := range l.rules {
			r, err := ParseRule(s)
			if err != nil {
				return nil, fmt.Errorf("%s %w", l.what, err)
			}
			*l.dst = append(*l.dst, r)
		}
	}
	return p, nil
}

func splitAddr(address string) (host string, port uint16, err error) {
	h, ps, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: the port must be a number from 0 to 65535", address)
	}
	return strings.ToLower(strings.TrimSuffix(h, ".")), uint16(n), nil
}

func forbidden(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrForbidden, fmt.Sprintf(format, args...))
}

// CheckListen reports whether a listener may bind address as configured.
// A host name is resolved by the bind; ListenControl checks what it
// resolved to.
func (p *Policy) CheckListen(address string) error {
	host, port, err := splitAddr(address)
	if err != nil {
		return err
	}
	if host == "" {
		return p.listenIP(address, netip.IPv4Unspecified(), port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return p.listenIP(address, ip, port)
	}
	for _, r := range p.listen {
		if r.nameOK(host) && listenPortOK(r, port) || r.prefix.IsValid() && listenPortOK(r, port) {
			return nil
		}
	}
	return forbidden("listening on %s is not allowed (listen rules: %s)", address, rulesText(p.listen))
}

// listenPortOK: port 0 needs every port from 1024 up.
func listenPortOK(r Rule, port uint16) bool {
	if port == 0 {
		return r.lo <= 1024 && r.hi == 65535
	}
	return r.portOK(port)
}

func (p *Policy) listenIP(address string, ip netip.Addr, port uint16) error {
	ip = ip.Unmap()
	for _, r := range p.listen {
		if !listenPortOK(r, port) {
			continue
		}
		if ip.IsUnspecified() {
			if r.any || r.prefix.IsValid() && r.prefix.Bits() == 0 && r.prefix.Addr().Is4() == ip.Is4() {
				return nil
			}
			continue
		}
		if r.ipOK(ip) {
			return nil
		}
	}
	if ip.IsUnspecified() {
		return forbidden("listening on every interface (%s) is not allowed (listen rules: %s); bind a specific address", address, rulesText(p.listen))
	}
	return forbidden("listening on %s is not allowed (listen rules: %s)", address, rulesText(p.listen))
}

// ListenControl is a net.ListenConfig.Control hook for a listener whose
// configured host is not known: only IP rules can allow the address.
func (p *Policy) ListenControl(network, address string, c syscall.RawConn) error {
	return p.ListenControlFor("")(network, address, c)
}

// ListenControlFor returns the net.ListenConfig.Control hook for a
// listener configured with address: it checks the resolved address about to
// be bound, which a name rule matching the configured name also allows.
func (p *Policy) ListenControlFor(configured string) func(network, address string, c syscall.RawConn) error {
	name := hostName(configured)
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return forbidden("cannot check bind address %q: %v", address, err)
		}
		if name != "" {
			for _, r := range p.listen {
				if r.name != "" && r.nameOK(name) && listenPortOK(r, ap.Port()) {
					return nil
				}
			}
		}
		return p.listenIP(address, ap.Addr(), ap.Port())
	}
}

// hostName returns the DNS name of a configured host:port, or "" when it
// is an IP address or does not parse.
func hostName(configured string) string {
	name, _, err := splitAddr(configured)
	if err != nil {
		return ""
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return ""
	}
	return name
}

// CheckDial reports whether Connect may take address as configured. What
// it resolves to is checked at every connect by DialControlFor.
func (p *Policy) CheckDial(address string) error {
	host, port, err := splitAddr(address)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return p.dialIP(address, "", ip, port)
	}
	for _, r := range p.allow {
		if r.portOK(port) && (r.nameOK(host) || r.prefix.IsValid()) {
			return nil
		}
	}
	return forbidden("connecting to %s is not allowed (dial rules: %s)", address, rulesText(p.allow))
}

// dialIP decides a resolved address: no deny rule, then an allow IP rule or
// an allow name rule matching the name it came from ("" for none).
func (p *Policy) dialIP(address, name string, ip netip.Addr, port uint16) error {
	ip = ip.Unmap()
	for _, r := range p.deny {
		if r.portOK(port) && r.ipOK(ip) {
			if name != "" {
				return forbidden("%s resolves to %s, which deny rule %s forbids", address, ip, r)
			}
			return forbidden("connecting to %s is forbidden by deny rule %s", address, r)
		}
	}
	for _, r := range p.allow {
		if r.portOK(port) && (r.ipOK(ip) || name != "" && r.name != "" && r.nameOK(name)) {
			return nil
		}
	}
	if name != "" {
		return forbidden("%s resolves to %s, which no dial rule allows (dial rules: %s)", address, ip, rulesText(p.allow))
	}
	return forbidden("connecting to %s is not allowed (dial rules: %s)", address, rulesText(p.allow))
}

// DialControl is a net.Dialer.Control hook for a connection whose
// configured host is not known: only IP rules can allow the address.
func (p *Policy) DialControl(network, address string, _ syscall.RawConn) error {
	return p.dialControl("", network, address)
}

// DialControlFor returns the net.Dialer.Control hook for a connection
// configured with address: the resolved address is checked at every
// connect, and a name rule that matched the configured name lets it
// through unless a deny rule forbids it.
func (p *Policy) DialControlFor(configured string) func(network, address string, c syscall.RawConn) error {
	name := hostName(configured)
	return func(network, address string, _ syscall.RawConn) error {
		return p.dialControl(name, network, address)
	}
}

func (p *Policy) dialControl(name, network, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return forbidden("cannot check dial address %q: %v", address, err)
	}
	shown := address
	if name != "" {
		shown = net.JoinHostPort(name, strconv.Itoa(int(ap.Port())))
	}
	return p.dialIP(shown, name, ap.Addr(), ap.Port())
}

// Describe returns the rules, for the start-up log.
func (p *Policy) Describe() (listen, allow, deny string) {
	return rulesText(p.listen), rulesText(p.allow), rulesText(p.deny)
}

func rulesText(rs []Rule) string {
	if len(rs) == 0 {
		return "none"
	}
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.text
	}
	return strings.Join(s, ", ")
}
