package tlsfiles

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ErrUnknownProfile: no profile of that name.
var ErrUnknownProfile = errors.New("unknown TLS profile")

// Profile file names: the keys of a Kubernetes TLS secret, as cert-manager
// writes them.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// profileName is the rule the API validates profile names with; a
// directory named otherwise could never be asked for.
var profileName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Profiles is a directory of named TLS profiles, DIR/NAME/ holding tls.crt
// and tls.key (both or neither) and optionally ca.crt. The control plane
// names a profile and never a path, so a caller cannot make the server
// read arbitrary files.
//
// The profiles and which files each has are fixed when the directory is
// opened: a profile directory or a ca.crt added later is not picked up
// (restart to add one). Changed files of existing profiles are, as with
// Load.
type Profiles struct {
	byName map[string]*Source
	names  []string
}

// OpenProfiles loads every profile in dir now. A broken profile is an error
// naming it, so a bad secret stops the server at start rather than at the
// first listener that names it. Entries that are not directories, hidden
// entries (Kubernetes' ..data and its timestamped directories) and
// directories whose names no API call could name are skipped; the last
// with a warning.
func OpenProfiles(dir string, o Options) (*Profiles, error) {
	o = o.withDefaults()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: profiles: %w", err)
	}
	p := &Profiles{byName: map[string]*Source{}}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err != nil || !fi.IsDir() { // Stat: a profile may be a symlink
			continue
		}
		if !profileName.MatchString(name) {
			o.Logger.Warn("tlsfiles: skipping a profile directory whose name is not [a-z0-9][a-z0-9._-]*", "dir", path)
			continue
		}
		src, err := openProfile(path, o)
		if err != nil {
			return nil, fmt.Errorf("tlsfiles: profile %q: %w", name, err)
		}
		p.byName[name] = src
		p.names = append(p.names, name)
	}
	slices.Sort(p.names)
	return p, nil
}

func openProfile(dir string, o Options) (*Source, error) {
	exists := func(name string) string {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return ""
		}
		return p
	}
	f := Files{Cert: exists(CertFile), Key: exists(KeyFile), CA: exists(CAFile)}
	switch {
	case f.Cert != "" && f.Key == "":
		return nil, fmt.Errorf("%s has %s but no %s: %w", dir, CertFile, KeyFile, ErrIncomplete)
	case f.Cert == "" && f.Key != "":
		return nil, fmt.Errorf("%s has %s but no %s: %w", dir, KeyFile, CertFile, ErrIncomplete)
	case f.Cert == "" && f.CA == "":
		return nil, fmt.Errorf("%s has none of %s, %s, %s: %w", dir, CertFile, KeyFile, CAFile, ErrIncomplete)
	}
	return Load(f, o)
}

// Get returns the named profile; an unknown name is an error wrapping
// ErrUnknownProfile.
func (p *Profiles) Get(name string) (*Source, error) {
	if s, ok := p.byName[name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("tlsfiles: profile %q: %w", name, ErrUnknownProfile)
}

// Names returns the profile names, sorted.
func (p *Profiles) Names() []string { return slices.Clone(p.names) }
