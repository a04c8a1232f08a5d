package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"github.com/switchboard-dev/switchboard/internal/tlsfiles"
)

// ErrInvalid marks a bad access file, role, name or scope; the message
// says what and where (line numbers for files).
var ErrInvalid = errors.New("invalid access configuration")

// ErrNotFound is returned by Revoke for a name that has no token line.
var ErrNotFound = errors.New("no such principal")

// ErrExists is returned by AddToken and AddCert for a name already used.
var ErrExists = errors.New("principal already exists")

// Kind is the kind of an access file line.
type Kind int

const (
	// KindToken is a bearer token line:
	//	token <name> <role> sha256:<64 hex> [listeners=p,...] [connections=p,...]
	KindToken Kind = iota + 1
	// KindCert maps verified client certificates to a role:
	//	cert <peer-name-pattern> <role> [listeners=p,...] [connections=p,...]
	KindCert
)

func (k Kind) String() string {
	switch k {
	case KindToken:
		return "token"
	case KindCert:
		return "cert"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Entry is one principal of the access file.
type Entry struct {
	Kind Kind
	// Name is the token's name, or the certificate peer-name pattern
	// (exact, or "*.suffix" for one leftmost DNS label).
	Name  string
	Role  Role
	Hash  [sha256.Size]byte // tokens: SHA-256 of the token
	Scope Scope
	// Line is the 1-based line number it was parsed from (0: added).
	Line int
}

// HashPrefix is the first 8 hex digits of a token's hash, enough to tell
// tokens apart in a listing without showing the stored hash.
func (e *Entry) HashPrefix() string { return hex.EncodeToString(e.Hash[:4]) }

// AccessFile is a parsed access file. It keeps every line it does not
// change, comments and blank lines included, so a tool that adds or
// revokes a token leaves the rest as the operator wrote it.
type AccessFile struct {
	lines []fileLine
}

type fileLine struct {
	raw   string // as read; "" for an added or changed entry (formatted)
	entry *Entry // nil for comments and blank lines
}

// Entries returns the principals in file order.
func (f *AccessFile) Entries() []*Entry {
	var out []*Entry
	for _, l := range f.lines {
		if l.entry != nil {
			out = append(out, l.entry)
		}
	}
	return out
}

// Lookup returns the entry of kind k and name.
func (f *AccessFile) Lookup(k Kind, name string) *Entry {
	for _, l := range f.lines {
		if l.entry != nil && l.entry.Kind == k && l.entry.Name == name {
			return l.entry
		}
	}
	return nil
}

var (
	tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	// prefixRE: listener and connection ids are 1 to 64 letters, digits,
	// '.', '_' or '-' (server-chosen ones too), so a prefix is as well.
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

// maxAccessFileBytes bounds what is read and parsed: ten thousand
// principals fit with room to spare.
const maxAccessFileBytes = 4 << 20

// ParseAccessFile parses an access file: one principal per line, fields
// separated by spaces or tabs, '#' starting a comment line, blank lines
// ignored:
//
//	token <name> <role> sha256:<64 hex> [listeners=<prefix>,...] [connections=<prefix>,...]
//	cert <peer-name-pattern> <role> [listeners=<prefix>,...] [connections=<prefix>,...]
//
// Names are unique per kind. Errors wrap ErrInvalid and name the line.
func ParseAccessFile(data []byte) (*AccessFile, error) {
	if len(data) > maxAccessFileBytes {
		return nil, fmt.Errorf("%w: access file is %d bytes, more than the %d allowed", ErrInvalid, len(data), maxAccessFileBytes)
	}
	f := &AccessFile{}
	seen := map[Kind]map[string]int{KindToken: {}, KindCert: {}}
	hashes := map[[sha256.Size]byte]int{}
	text := string(data)
	text = strings.TrimSuffix(text, "\n")
	if text == "" {
		return f, nil
	}
	for i, raw := range strings.Split(text, "\n") {
		n := i + 1
		raw = strings.TrimSuffix(raw, "\r")
		trimmed := strings.TrimSpace(raw)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			f.lines = append(f.lines, fileLine{raw: raw})
			continue
		}
		e, err := parseEntry(trimmed)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrInvalid, n, err)
		}
		e.Line = n
		if prev, ok := seen[e.Kind][e.Name]; ok {
			return nil, fmt.Errorf("%w: line %d: %s %q already defined on line %d", ErrInvalid, n, e.Kind, e.Name, prev)
		}
		seen[e.Kind][e.Name] = n
		if e.Kind == KindToken {
			if prev, ok := hashes[e.Hash]; ok {
				return nil, fmt.Errorf("%w: line %d: token %q has the same hash as line %d", ErrInvalid, n, e.Name, prev)
			}
			hashes[e.Hash] = n
		}
		f.lines = append(f.lines, fileLine{raw: raw, entry: e})
	}
	return f, nil
}

func parseEntry(line string) (*Entry, error) {
	fields := strings.Fields(line)
	e := &Entry{}
	var rest []string
	switch fields[0] {
	case "token":
		if len(fields) < 4 {
			return nil, errors.New(`want "token <name> <role> sha256:<64 hex> [listeners=...] [connections=...]"`)
		}
		e.Kind = KindToken
		if !tokenNameRE.MatchString(fields[1]) {
			return nil, fmt.Errorf("token name %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", fields[1])
		}
		h, ok := strings.CutPrefix(fields[3], "sha256:")
		b, err := hex.DecodeString(h)
		if !ok || err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("token %q: hash must be sha256: and 64 hex digits", fields[1])
		}
		copy(e.Hash[:], b)
		rest = fields[4:]
	case "cert":
		if len(fields) < 3 {
			return nil, errors.New(`want "cert <peer-name-pattern> <role> [listeners=...] [connections=...]"`)
		}
		e.Kind = KindCert
		if err := validPattern(fields[1]); err != nil {
			return nil, err
		}
		rest = fields[3:]
	default:
		return nil, fmt.Errorf("unknown kind %q (want token or cert)", fields[0])
	}
	e.Name = fields[1]
	r, err := ParseRole(fields[2])
	if err != nil {
		return nil, fmt.Errorf("%s %q: unknown role %q (want viewer, consumer, operator or admin)", e.Kind, e.Name, fields[2])
	}
	e.Role = r
	for _, opt := range rest {
		key, val, _ := strings.Cut(opt, "=")
		var dst *[]string
		switch key {
		case "listeners":
			dst = &e.Scope.Listeners
		case "connections":
			dst = &e.Scope.Connections
		default:
			return nil, fmt.Errorf("%s %q: unknown option %q (want listeners=<prefix>,... or connections=<prefix>,...)", e.Kind, e.Name, opt)
		}
		if *dst != nil {
			return nil, fmt.Errorf("%s %q: %s given twice", e.Kind, e.Name, key)
		}
		p, err := ParsePrefixes(val)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %s: %v", e.Kind, e.Name, key, err)
		}
		*dst = p
	}
	return e, nil
}

// ParsePrefixes parses a comma-separated list of id prefixes.
func ParsePrefixes(s string) ([]string, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty prefix list (leave the option out for no restriction)", ErrInvalid)
	}
	out := strings.Split(s, ",")
	for _, p := range out {
		if !prefixRE.MatchString(p) {
			return nil, fmt.Errorf("%w: prefix %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalid, p)
		}
	}
	return out, nil
}

// Format returns the file's text: unchanged lines byte for byte (line
// endings become "\n"), added entries in the canonical form.
func (f *AccessFile) Format() []byte {
	var b bytes.Buffer
	for _, l := range f.lines {
		if l.raw != "" || l.entry == nil {
			b.WriteString(l.raw)
		} else {
			b.WriteString(l.entry.String())
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// String formats e as an access file line.
func (e *Entry) String() string {
	var b strings.Builder
	b.WriteString(e.Kind.String())
	b.WriteByte(' ')
	b.WriteString(e.Name)
	b.WriteByte(' ')
	b.WriteString(e.Role.String())
	if e.Kind == KindToken {
		b.WriteString(" sha256:")
		b.WriteString(hex.EncodeToString(e.Hash[:]))
	}
	if s := e.Scope.String(); s != "" {
		b.WriteByte(' ')
		b.WriteString(s)
	}
	return b.String()
}

// tokenPrefix starts every token, so secret scanners and people can tell
// one when they see it.
const tokenPrefix = "sbt_"

// NewToken returns a new random token: "sbt_" and 32 random bytes in
// unpadded base64url.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashToken is what the access file stores of a token. A fast unsalted
// hash is right here: tokens are 256 random bits, so there is no
// dictionary to try and no brute force that a slow hash (bcrypt, argon2)
// would slow down; it only protects a copy of the file from being used as
// credentials. A fast hash also lets the server find a token by its hash
// in a map on every call instead of comparing against every entry.
func HashToken(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// AddToken adds a token line and returns the new token (shown once; only
// its hash is kept).
func (f *AccessFile) AddToken(name string, role Role, scope Scope) (string, error) {
	if !tokenNameRE.MatchString(name) {
		return "", fmt.Errorf("%w: token name %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalid, name)
	}
	if err := validRole(role); err != nil {
		return "", err
	}
	if f.Lookup(KindToken, name) != nil {
		return "", fmt.Errorf("%w: token %q (revoke it first to replace it)", ErrExists, name)
	}
	tok, err := NewToken()
	if err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	f.lines = append(f.lines, fileLine{entry: &Entry{Kind: KindToken, Name: name, Role: role, Hash: HashToken(tok), Scope: scope}})
	return tok, nil
}

// AddCert adds a cert line mapping peer-name pattern to role.
func (f *AccessFile) AddCert(pattern string, role Role, scope Scope) error {
	if err := validPattern(pattern); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := validRole(role); err != nil {
		return err
	}
	if f.Lookup(KindCert, pattern) != nil {
		return fmt.Errorf("%w: cert %q", ErrExists, pattern)
	}
	f.lines = append(f.lines, fileLine{entry: &Entry{Kind: KindCert, Name: pattern, Role: role, Scope: scope}})
	return nil
}

// Remove deletes the line of kind k and name.
func (f *AccessFile) Remove(k Kind, name string) error {
	for i, l := range f.lines {
		if l.entry != nil && l.entry.Kind == k && l.entry.Name == name {
			f.lines = append(f.lines[:i], f.lines[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%w: %s %q", ErrNotFound, k, name)
}

func validRole(r Role) error {
	if r < RoleViewer || r > RoleAdmin {
		return fmt.Errorf("%w: role %v", ErrInvalid, r)
	}
	return nil
}

// validPattern checks a certificate peer-name pattern by the rule of
// tlsfiles.ValidPattern, and that it has no space: access file fields are
// separated by spaces, so a common name with spaces is matched through a
// SAN instead.
func validPattern(p string) error {
	if strings.ContainsFunc(p, unicode.IsSpace) {
		return fmt.Errorf("peer-name pattern %q has a space (fields are separated by spaces; match a SAN instead)", p)
	}
	return tlsfiles.ValidPattern(p)
}
