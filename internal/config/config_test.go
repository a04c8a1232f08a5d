package config_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-dev/switchboard/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// example is the example configuration of deploy/.
var example = filepath.Join("..", "..", "deploy", "switchboard.yaml")

// TestExampleLoads: deploy/switchboard.yaml is valid, declares listeners
// and connections, and every setting in it is one of serve's flags.
func TestExampleLoads(t *testing.T) {
	if err := config.Check(example); err != nil {
		t.Fatalf("Check(%s): %v", example, err)
	}
	f, err := config.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Config.GetListeners()) == 0 || len(f.Config.GetConnections()) == 0 {
		t.Errorf("the example declares %d listeners and %d connections; want some of each", len(f.Config.GetListeners()), len(f.Config.GetConnections()))
	}
	known := map[string]bool{}
	for _, n := range config.Flags() {
		known[n] = true
	}
	got := map[string]string{}
	for _, s := range config.Settings(f) {
		if !known[s.Flag] {
			t.Errorf("setting %s names flag %q, which serve does not have", s.Origin(), s.Flag)
		}
		if s.Line == 0 {
			t.Errorf("setting %s has no line", s.Flag)
		}
		got[s.Flag] = s.Value
	}
	for flag, want := range map[string]string{
		"grpc-addr":     "127.0.0.1:50051",
		"drain-timeout": "10s",
		"retain-age":    "720h0m0s",
		"retain-bytes":  "10737418240",
		"log-format":    "json",
		"allow-listen":  "*:2575-2599,*:6661",
		"rate-limit":    "50",
		"admin-pprof":   "false",
	} {
		if got[flag] != want {
			t.Errorf("example: --%s = %q, want %q", flag, got[flag], want)
		}
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestInvalidFiles: each mistake is reported with the file, the line and
// column, and the field, and nothing is returned.
func TestInvalidFiles(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // each "line:col: field: text" part
	}{
		{"unknown section", "servr:\n  grpc_addr: x\n", []string{`:1:1: servr: unknown field "servr"`}},
		{"unknown setting", "server:\n  grpc_adr: x\n", []string{`:2:3: server.grpc_adr: unknown field "grpc_adr"`}},
		{"bad duration", "server:\n  drain_timeout: 10x\n", []string{`:2:18: server.drain_timeout: invalid duration`}},
		{"negative drain", "server:\n  drain_timeout: -1s\n", []string{`:2:18: server.drain_timeout: must be greater than or equal to 0s`}},
		{"wrong type", "limits:\n  max_connections: many\n", []string{`:2:20: limits.max_connections: invalid integer`}},
		{"log level", "logging:\n  level: loud\n", []string{`:2:10: logging.level: must be in list [debug, info, warn, error] (string.in)`}},
		{"memory limit", "limits:\n  memory_limit: -2\n", []string{`:2:17: limits.memory_limit: must be greater than or equal to -1`}},
		{"empty grpc addr", "server:\n  grpc_addr: \"\"\n", []string{`:2:14: server.grpc_addr: must be at least 1 characters`}},
		{"listener without config", "listeners:\n  - listener_id: adt\n", []string{`:2:5: listeners[0].config: value is required`}},
		{"listener id", "listeners:\n  - listener_id: -bad\n    config: {address: \"127.0.0.1:0\"}\n", []string{`:2:18: listeners[0].listener_id: does not match regex pattern`}},
		{"missing listener id", "listeners:\n  - config: {address: \"127.0.0.1:0\"}\n", []string{`listeners[0].listener_id: does not match regex pattern`}},
		{"API rule on the listener", "listeners:\n  - listener_id: adt\n    config:\n      address: 127.0.0.1:0\n      max_frame_bytes: 99999999\n",
			[]string{`:5:24: listeners[0].config.max_frame_bytes: must be greater than or equal to 0 and less than or equal to 67108864 (int32.gte_lte)`}},
		{"API rule on the connection", "connections:\n  - connection_id: lab\n    config:\n      address: lab:6661\n      ack_timeout: 0s\n",
			[]string{`connections[0].config.ack_timeout: must be greater than 0s`}},
		{"API CEL rule", "listeners:\n  - listener_id: adt\n    config:\n      address: 127.0.0.1:0\n      tls: {profile: p, client_certificate: CLIENT_CERTIFICATE_NONE, allowed_peer_names: [x]}\n",
			[]string{`listeners[0].config.tls: allowed_peer_names needs client_certificate`}},
		{"unknown enum", "connections:\n  - connection_id: lab\n    config:\n      address: lab:6661\n      outbox: {in_doubt: MAYBE}\n",
			[]string{`:5:26: connections[0].config.outbox.in_doubt: unknown enum value "MAYBE"`}},
		{"duplicate ids", "listeners:\n  - listener_id: a\n    config: {address: \"127.0.0.1:0\"}\n  - listener_id: a\n    config: {address: \"127.0.0.1:0\"}\n",
			[]string{`listeners: listener_id must be unique (serve_config.listener_ids_unique)`}},
		{"two problems", "server:\n  grpc_addr: \"\"\nlogging:\n  format: xml\n", []string{`:2:14: server.grpc_addr:`, `:4:11: logging.format:`}},
		{"syntax", "server:\n  grpc_addr: [x\n", []string{`:1: YAML syntax: did not find expected ',' or ']'`}},
		{"duplicate key", "server:\n  grpc_addr: a:1\n  grpc_addr: b:2\n", []string{`:3:3: server.grpc_addr: given twice (first at line 2)`}},
		{"two documents", "server: {}\n---\nserver: {}\n", []string{`:2:1: a second YAML document`}},
		{"lone carriage return", "server:\n  grpc_addr: a:1\r  admin_addr: b:1\n", []string{`:2: a carriage return without a line feed`}},
		{"not a mapping", "- a\n- b\n", []string{`:1:1: expected fields for switchboard.config.v1.ServeConfig, got sequence`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.yaml)
			f, err := config.Load(p)
			if err == nil {
				t.Fatalf("Load = %v, nil; want an error", f)
			}
			if f != nil {
				t.Errorf("Load returned a file with its error")
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Path != p {
				t.Errorf("error %T %v is not a *config.Error for %s", err, err, p)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, p+w) && !strings.Contains(msg, w) {
					t.Errorf("error\n%s\ndoes not contain %q", msg, w)
				}
				if strings.HasPrefix(w, ":") && !strings.Contains(msg, p+w) {
					t.Errorf("error\n%s\ndoes not contain %q after the path", msg, w)
				}
			}
			if err := config.Check(p); err == nil || err.Error() != msg {
				t.Errorf("Check = %v; want Load's error", err)
			}
		})
	}
}

// TestErrorQuotesTheLine: a problem is shown with its line and a caret
// under the column.
func TestErrorQuotesTheLine(t *testing.T) {
	p := writeFile(t, "server:\n  drain_timeout: 10x\n")
	_, err := config.Load(p)
	want := p + ":2:18: server.drain_timeout: invalid duration: unknown unit, expected one of [h m s ms us ns]\n" +
		"    2 |   drain_timeout: 10x\n" +
		"      |                  ^"
	if err == nil || err.Error() != want {
		t.Errorf("error =\n%v\nwant\n%s", err, want)
	}
}

// TestCRLF: a file saved with Windows line breaks loads, and its errors
// point at the right line.
func TestCRLF(t *testing.T) {
	p := writeFile(t, "server:\r\n  grpc_addr: a:1\r\n  drain_timeout: x\r\n")
	_, err := config.Load(p)
	want := p + ":3:18: server.drain_timeout: invalid number"
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\r") {
		t.Errorf("error = %q; want it to start with %q, without CR", err, want)
	}
}

func TestEmptyFileSetsNothing(t *testing.T) {
	for _, content := range []string{"", "# nothing yet\n", "{}\n", "server: {}\n"} {
		f, err := config.Load(writeFile(t, content))
		if err != nil {
			t.Fatalf("Load(%q): %v", content, err)
		}
		if s := config.Settings(f); len(s) != 0 {
			t.Errorf("Settings(%q) = %v; want none", content, s)
		}
	}
}

func TestMissingAndHugeFiles(t *testing.T) {
	if err := config.Check(filepath.Join(t.TempDir(), "absent.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check(absent) = %v; want not-exist", err)
	}
	p := writeFile(t, "# "+strings.Repeat("x", config.MaxFileBytes)+"\n")
	if err := config.Check(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Check(huge) = %v; want too large", err)
	}
}

// serveFlags is a flag set with serve's settings (the standard library's:
// Apply must not care which flag library serve uses).
func serveFlags(t *testing.T) *flag.FlagSet {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.String("grpc-addr", "127.0.0.1:50051", "")
	fs.String("admin-addr", "127.0.0.1:9090", "")
	fs.String("data-dir", "switchboard-data", "")
	fs.Duration("drain-timeout", 10*time.Second, "")
	fs.Bool("no-fsync", false, "")
	fs.Int64("retain-bytes", 1, "")
	fs.Float64("rate-limit", 50, "")
	fs.Int("max-connections", 10000, "")
	var rules rulesFlag
	fs.Var(&rules, "allow-listen", "")
	// Every other mapped flag, so Apply can set it.
	for _, n := range config.Flags() {
		if fs.Lookup(n) == nil {
			fs.String(n, "", "")
		}
	}
	return fs
}

type rulesFlag []string

func (r *rulesFlag) String() string { return strings.Join(*r, ",") }
func (r *rulesFlag) Set(s string) error {
	*r = append(*r, strings.Split(s, ",")...)
	return nil
}

// TestPrecedence: flag > environment > file > default, for each setting
// independently.
func TestPrecedence(t *testing.T) {
	p := writeFile(t, `server:
  grpc_addr: 127.0.0.1:7001
  admin_addr: 127.0.0.1:7002
  drain_timeout: 1m30s
storage:
  data_dir: /from/file
  no_fsync: true
  retain_bytes: 42
security:
  rate_limit: 2.5
  allow_listen: ["*:2575", "*:2576"]
`)
	f, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	fs := serveFlags(t)
	if err := fs.Parse([]string{"--grpc-addr", "127.0.0.1:9999"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"SWITCHBOARD_GRPC_ADDR":  "127.0.0.1:8888", // the flag wins
		"SWITCHBOARD_ADMIN_ADDR": "",               // empty is a value: no admin server
		"SWITCHBOARD_DATA_DIR":   "/from/env",      // the environment wins over the file
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	err = config.Apply(config.Settings(f), func(n string) bool { return given[n] }, fs.Set,
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"grpc-addr":       "127.0.0.1:9999", // flag
		"admin-addr":      "",               // environment, empty
		"data-dir":        "/from/env",      // environment
		"drain-timeout":   "1m30s",          // file
		"no-fsync":        "true",           // file
		"retain-bytes":    "42",             // file
		"rate-limit":      "2.5",            // file
		"allow-listen":    "*:2575,*:2576",  // file, a list
		"max-connections": "10000",          // default
	} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
}

// TestApplyErrorsNameTheSource: a value the flag refuses is reported with
// where it came from.
func TestApplyErrorsNameTheSource(t *testing.T) {
	p := writeFile(t, "server:\n  drain_timeout: 1s\n")
	f, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	fs := serveFlags(t)
	refuse := func(string, string) error { return errors.New("refused") }
	none := func(string) bool { return false }
	err = config.Apply(config.Settings(f), none, refuse, func(string) (string, bool) { return "", false })
	if want := p + ":2 (server.drain_timeout): --drain-timeout \"1s\": refused"; err == nil || err.Error() != want {
		t.Errorf("file error = %v; want %s", err, want)
	}
	err = config.Apply(nil, none, fs.Set, func(k string) (string, bool) { return "soon", k == "SWITCHBOARD_DRAIN_TIMEOUT" })
	if err == nil || !strings.HasPrefix(err.Error(), `environment SWITCHBOARD_DRAIN_TIMEOUT="soon" (--drain-timeout): `) {
		t.Errorf("environment error = %v", err)
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"grpc-addr":                "SWITCHBOARD_GRPC_ADDR",
		"max-streams-per-identity": "SWITCHBOARD_MAX_STREAMS_PER_IDENTITY",
		"config":                   config.EnvConfig,
	} {
		if got := config.EnvName(flag); got != want {
			t.Errorf("EnvName(%s) = %s, want %s", flag, got, want)
		}
	}
}

// TestResolve: the file comes from the flag, else SWITCHBOARD_CONFIG; the
// environment applies without a file; an invalid file is the error.
func TestResolve(t *testing.T) {
	good := writeFile(t, "server:\n  grpc_addr: 127.0.0.1:7000\n")
	bad := writeFile(t, "server:\n  grpc_addr: \"\"\n")
	for _, tc := range []struct {
		name, flag string
		env        map[string]string
		wantAddr   string
		wantFile   bool
		wantErr    string
	}{
		{"flag", good, nil, "127.0.0.1:7000", true, ""},
		{"environment names the file", "", map[string]string{"SWITCHBOARD_CONFIG": good}, "127.0.0.1:7000", true, ""},
		{"the flag beats SWITCHBOARD_CONFIG", good, map[string]string{"SWITCHBOARD_CONFIG": bad}, "127.0.0.1:7000", true, ""},
		{"no file, environment", "", map[string]string{"SWITCHBOARD_GRPC_ADDR": "127.0.0.1:7100"}, "127.0.0.1:7100", false, ""},
		{"nothing", "", nil, "127.0.0.1:50051", false, ""},
		{"invalid file", bad, nil, "", false, bad + ":2:14: server.grpc_addr:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := serveFlags(t)
			f, err := config.Resolve(tc.flag, func(string) bool { return false }, fs.Set,
				func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve = %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (f != nil) != tc.wantFile {
				t.Errorf("file = %v, want one: %v", f, tc.wantFile)
			}
			if got := fs.Lookup("grpc-addr").Value.String(); got != tc.wantAddr {
				t.Errorf("--grpc-addr = %s, want %s", got, tc.wantAddr)
			}
		})
	}
}

// TestDocsErrorExample: the invalid file shown in docs/configuration.md
// gives exactly the errors shown there.
func TestDocsErrorExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, rest, ok := strings.Cut(doc, "This file:\n\n```yaml\n")
	if !ok {
		t.Fatal(`docs/configuration.md has no "This file:" example`)
	}
	input, rest, _ := strings.Cut(rest, "```\n")
	_, rest, _ = strings.Cut(rest, "```\n")
	want, _, _ := strings.Cut(rest, "```\n")
	_, err = config.Parse("switchboard.yaml", []byte(input))
	if err == nil || err.Error()+"\n" != want {
		t.Errorf("the docs' example gives\n%v\nthe docs show\n%s", err, want)
	}
}
