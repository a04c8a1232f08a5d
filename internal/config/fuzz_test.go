package config_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/internal/config"
)

// FuzzParse: whatever the bytes, Parse returns a file or an *Error, never
// panics; an error names the file, and a file's settings all name flags.
// The seeds (run in every test pass) are the example and the invalid files
// of TestInvalidFiles' kinds.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(example)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{
		"",
		"server:\n  grpc_addr: 127.0.0.1:1\n  drain_timeout: 10x\n",
		"listeners:\n  - listener_id: a\n    config: {address: \"127.0.0.1:0\", max_frame_bytes: 1}\n",
		"connections:\n  - connection_id: lab\n    config: {address: lab:1, outbox: {in_doubt: IN_DOUBT_POLICY_HOLD}}\n",
		"security:\n  allow_listen: [\"*:1-2\", none]\n  rate_limit: .inf\n",
		"a: &a [*a, *a]\nb: *a\n",
		"server: {grpc_addr: a:1}\n---\n",
		"server:\n  grpc_addr: a:1\n  grpc_addr: b:1\n",
		"limits: {max_connections: 0x7fffffff, memory_limit: -1}\nstorage: {retain_age: -1h, retain_bytes: -1}\n",
		"\t- : :\n",
		"\r0",
		"server:\r\n  grpc_addr: a:1\r\n  drain_timeout: x\r\n",
		"server:\u2028  grpc_addr: 1\n",
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
	} {
		f.Add([]byte(s))
	}
	known := map[string]bool{}
	for _, n := range config.Flags() {
		known[n] = true
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		file, err := config.Parse("fuzz.yaml", data)
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "fuzz.yaml:") {
				t.Fatalf("error %T %q is not a *config.Error naming the file", err, err)
			}
			if file != nil {
				t.Fatal("a file with an error")
			}
			return
		}
		for _, s := range config.Settings(file) {
			if !known[s.Flag] || s.Line < 1 {
				t.Fatalf("setting %+v", s)
			}
		}
	})
}
