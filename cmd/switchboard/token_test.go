package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/service/auth"
)

func runToken(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"token"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestTokenCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "access")

	code, out, errOut := runToken(t, "create", "--access-file", file, "--name", "ops", "--role", "admin")
	if code != 0 {
		t.Fatalf("create: %d %s", code, errOut)
	}
	tok := strings.TrimSuffix(out, "\n")
	if !strings.HasPrefix(tok, "sbt_") || strings.Contains(tok, "\n") || strings.Contains(tok, " ") {
		t.Fatalf("stdout %q is not just the token", out)
	}
	if !strings.Contains(errOut, "shown only this once") {
		t.Errorf("stderr %q has no note about storing the token", errOut)
	}
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
		t.Errorf("new access file mode %v, want 0600", st.Mode().Perm())
	}

	// Comments and other lines survive later edits.
	data, _ := os.ReadFile(file)
	if err := os.WriteFile(file, append([]byte("# managed by the integration team\n"), data...), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out2, errOut := runToken(t, "create", "--access-file", file, "--name", "adt-feed", "--role", "consumer", "--listeners", "adt-,lab-")
	if code != 0 {
		t.Fatalf("second create: %d %s", code, errOut)
	}
	if code, _, errOut := runToken(t, "allow-cert", "--access-file", file, "--name", "*.ops.hospital.example", "--role", "operator"); code != 0 {
		t.Fatalf("allow-cert: %s", errOut)
	}
	if code, _, errOut := runToken(t, "create", "--access-file", file, "--name", "ops", "--role", "viewer"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("duplicate create: %d %s", code, errOut)
	}
	if code, _, errOut := runToken(t, "create", "--access-file", file, "--name", "x", "--role", "root"); code != 1 || !strings.Contains(errOut, "unknown role") {
		t.Errorf("bad role: %d %s", code, errOut)
	}
	if code, _, _ := runToken(t, "create", "--access-file", file, "--role", "viewer"); code != 2 {
		t.Errorf("missing --name: exit %d", code)
	}

	code, list, errOut := runToken(t, "list", "--access-file", file)
	if code != 0 {
		t.Fatalf("list: %s", errOut)
	}
	for _, want := range []string{"ops", "admin", "adt-feed", "consumer", "listeners=adt-,lab-", "*.ops.hospital.example", "operator"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	data, _ = os.ReadFile(file)
	af, err := auth.ParseAccessFile(data)
	if err != nil {
		t.Fatal(err)
	}
	full := af.Lookup(auth.KindToken, "ops").String()
	if strings.Contains(list, full[strings.Index(full, "sha256:"):]) || strings.Contains(list, tok) {
		t.Errorf("list shows a full hash or a token:\n%s", list)
	}
	if af.Lookup(auth.KindToken, "adt-feed").Hash != auth.HashToken(strings.TrimSpace(out2)) {
		t.Error("stored hash is not the token's")
	}
	if !bytes.HasPrefix(data, []byte("# managed by the integration team\n")) {
		t.Errorf("comment lost:\n%s", data)
	}

	if code, _, errOut := runToken(t, "revoke", "--access-file", file, "--name", "ops"); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	if code, _, errOut := runToken(t, "revoke", "--access-file", file, "--name", "ops"); code != 1 || !strings.Contains(errOut, "no such principal") {
		t.Errorf("second revoke: %d %s", code, errOut)
	}
	if code, _, errOut := runToken(t, "remove-cert", "--access-file", file, "--name", "*.ops.hospital.example"); code != 0 {
		t.Fatalf("remove-cert: %s", errOut)
	}
	data, _ = os.ReadFile(file)
	af, err = auth.ParseAccessFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(af.Entries()) != 1 || af.Entries()[0].Name != "adt-feed" {
		t.Errorf("after revoke:\n%s", data)
	}
	if runtime.GOOS != "windows" {
		if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
			t.Errorf("mode after rewrite %v", st.Mode().Perm())
		}
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Dir(file))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries", len(ents))
	}
	// A broken file is reported with its line, not rewritten.
	if err := os.WriteFile(file, []byte("token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runToken(t, "create", "--access-file", file, "--name", "n", "--role", "viewer"); code != 1 || !strings.Contains(errOut, "line 1") {
		t.Errorf("broken file: %d %s", code, errOut)
	}
	if code, _, errOut := runToken(t, "list", "--access-file", filepath.Join(t.TempDir(), "none")); code != 1 {
		t.Errorf("list of a missing file: %d %s", code, errOut)
	}
	if code, _, _ := runToken(t, "frobnicate"); code != 2 {
		t.Errorf("unknown subcommand: exit %d", code)
	}
}
