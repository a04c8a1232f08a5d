// Package config reads the YAML configuration file of `switchboard serve`:
// one switchboard.config.v1.ServeConfig, parsed with protoyaml and checked
// with protovalidate, so the declared listeners and connections obey the
// API's own rules. It turns the file's settings into flag values (Settings,
// Apply: flag > environment > file > default) without depending on a flag
// library, and brings the declared listeners and connections into the
// service (Reconcile).
//
// It never starts anything by itself and never reads the environment or
// the flags directly: the caller hands it their accessors.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"buf.build/go/protovalidate"
	"buf.build/go/protoyaml"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	configv1 "github.com/switchboard-dev/switchboard/gen/switchboard/config/v1"
)

// MaxFileBytes bounds a configuration file: a real one is a few KiB, and
// the bound keeps a wrong path (a log, a journal file) from being read
// whole.
const MaxFileBytes = 4 << 20

// File is a loaded, valid configuration file.
type File struct {
	// Path is the file's name as given, used in every message about it.
	Path string
	// Config is its content.
	Config *configv1.ServeConfig
	// lines maps "section.field" to the line of its key.
	lines map[string]int
}

// Load reads and checks the configuration file at path. Its errors name
// the file, the line and column, and the field (protoyaml's format: one
// "path:line:col field: message" per problem, with the line quoted).
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("config file %s: larger than %d bytes", path, MaxFileBytes)
	}
	return Parse(path, data)
}

// Check loads the file at path and reports what is wrong with it, for
// `switchboard config check FILE`. It does not look at the flags, the
// environment or the data directory: a setting that needs another (a TLS
// key its certificate) is checked by serve once they are merged.
func Check(path string) error {
	_, err := Load(path)
	return err
}

// Parse checks data, the content of the file path. An empty document is a
// valid configuration that sets nothing.
func Parse(path string, data []byte) (*File, error) {
	root, err := parseYAML(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg := &configv1.ServeConfig{}
	opts := protoyaml.UnmarshalOptions{Path: path, Validator: validator{}}
	if err := opts.Unmarshal(data, cfg); err != nil {
		return nil, &Error{Path: path, err: err}
	}
	return &File{Path: path, Config: cfg, lines: keyLines(root)}, nil
}

// Error is an invalid configuration file. Its message lists every problem
// found, each as "path:line:col field: message" followed by the line.
type Error struct {
	Path string
	err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid config file %s:\n%s", e.Path, bytes.TrimRight([]byte(e.err.Error()), "\n"))
}

func (e *Error) Unwrap() error { return e.err }

// parseYAML parses the one document data must hold, so a syntax error is
// reported with the file's name and a second document is not ignored.
func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: a second YAML document; the file holds one", next.Line)
	}
	return &root, nil
}

// keyLines maps "section.field" (and "section") to the line of its key.
func keyLines(root *yaml.Node) map[string]int {
	lines := map[string]int{}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return lines
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		sec, body := n.Content[i], n.Content[i+1]
		lines[sec.Value] = sec.Line
		if body.Kind != yaml.MappingNode {
			continue
		}
		for k := 0; k+1 < len(body.Content); k += 2 {
			lines[sec.Value+"."+body.Content[k].Value] = body.Content[k].Line
		}
	}
	return lines
}

// validator is protovalidate as protoyaml wants it.
type validator struct{}

func (validator) Validate(m proto.Message) error { return protovalidate.Validate(m) }
