package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/switchboard-dev/switchboard/service/auth"
)

const tokenLong = `token edits an access file (serve --access-file): bearer tokens and the
client-certificate names that get a role.

create prints the new token, and only it, on standard output; the access
file keeps its SHA-256. Roles: viewer, consumer, operator, admin. Scopes are
listener and connection id prefixes. A running server picks up changes
within a second. The file is created (mode 0600) if missing and replaced
atomically, keeping comments and other lines; run one of these commands at
a time per file.`

// tokenFlags are the flags of the token subcommands.
type tokenFlags struct {
	file, name, role, listeners, connections string
}

// newTokenCmd is "switchboard token".
func newTokenCmd(env *cliEnv) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, revoke and list access tokens and certificate names",
		Long:  tokenLong,
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	for _, sub := range []struct {
		use, short string
		flags      string // n: name, r: role and scopes
	}{
		{"create", "Add a bearer token and print it (once)", "nr"},
		{"revoke", "Remove a bearer token", "n"},
		{"list", "List tokens and certificate names (never the tokens)", ""},
		{"allow-cert", "Give client certificates whose name matches --name a role", "nr"},
		{"remove-cert", "Remove a certificate name", "n"},
	} {
		var f tokenFlags
		c := &cobra.Command{
			Use:   sub.use,
			Short: sub.short,
			Args:  noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return tokenCmd(cmd.Name(), f, env.stdout, env.stderr)
			},
		}
		c.Flags().StringVar(&f.file, "access-file", "", "the access file (required)")
		if strings.Contains(sub.flags, "n") {
			c.Flags().StringVar(&f.name, "name", "", "token name, or certificate peer-name pattern (required)")
		}
		if strings.Contains(sub.flags, "r") {
			c.Flags().StringVar(&f.role, "role", "", "viewer, consumer, operator or admin (required)")
			c.Flags().StringVar(&f.listeners, "listeners", "", "comma-separated listener id prefixes the principal is limited to")
			c.Flags().StringVar(&f.connections, "connections", "", "comma-separated connection id prefixes the principal is limited to")
		}
		c.Flags().SortFlags = false
		cmd.AddCommand(c)
	}
	return cmd
}

// tokenCmd runs "switchboard token sub" with its flags.
func tokenCmd(sub string, f tokenFlags, stdout, stderr io.Writer) error {
	file, name, roleName, listeners, connections := &f.file, &f.name, &f.role, &f.listeners, &f.connections
	if *file == "" {
		fmt.Fprintf(stderr, "token %s: --access-file is required\n", sub)
		return errUsage
	}
	if sub != "list" && *name == "" {
		fmt.Fprintf(stderr, "token %s: --name is required\n", sub)
		return errUsage
	}
	var (
		role  auth.Role
		scope auth.Scope
	)
	if sub == "create" || sub == "allow-cert" {
		r, err := auth.ParseRole(*roleName)
		if err != nil {
			return err
		}
		role = r
		if *listeners != "" {
			if scope.Listeners, err = auth.ParsePrefixes(*listeners); err != nil {
				return fmt.Errorf("--listeners: %w", err)
			}
		}
		if *connections != "" {
			if scope.Connections, err = auth.ParsePrefixes(*connections); err != nil {
				return fmt.Errorf("--connections: %w", err)
			}
		}
	}

	af, mode, err := readAccessFile(*file, sub == "create" || sub == "allow-cert")
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		return listAccess(af, stdout)
	case "create":
		tok, err := af.AddToken(*name, role, scope)
		if err != nil {
			return err
		}
		if err := writeAccessFile(*file, af.Format(), mode); err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		fmt.Fprintf(stderr, "token %q (%s) added to %s; it is shown only this once: store it in a secret manager, not in shell history or a repository\n", *name, role, *file)
	case "revoke":
		if err := af.Remove(auth.KindToken, *name); err != nil {
			return err
		}
		if err := writeAccessFile(*file, af.Format(), mode); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "token %q revoked; a running server refuses it within %v\n", *name, auth.DefaultCheckEvery)
	case "allow-cert":
		if err := af.AddCert(*name, role, scope); err != nil {
			return err
		}
		if err := writeAccessFile(*file, af.Format(), mode); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "client certificates named %q now have role %s\n", *name, role)
	case "remove-cert":
		if err := af.Remove(auth.KindCert, *name); err != nil {
			return err
		}
		if err := writeAccessFile(*file, af.Format(), mode); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "cert %q removed\n", *name)
	}
	return nil
}

// readAccessFile parses the file; a missing one is empty when create is
// set (it will be created 0600), an error otherwise.
func readAccessFile(path string, create bool) (*auth.AccessFile, fs.FileMode, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return &auth.AccessFile{}, 0o600, nil
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	af, err := auth.ParseAccessFile(data)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	return af, st.Mode().Perm(), nil
}

// writeAccessFile replaces the file atomically: a temporary file in the
// same directory, synced, renamed over it, so a server reloading it reads
// the old file or the new one, never half of one.
func writeAccessFile(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(mode); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable once the directory is synced (not possible on
	// every system; the file itself already is).
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func listAccess(af *auth.AccessFile, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tROLE\tSCOPE\tHASH")
	for _, e := range af.Entries() {
		scope, hash := e.Scope.String(), "-"
		if scope == "" {
			scope = "-"
		}
		if e.Kind == auth.KindToken {
			hash = "sha256:" + e.HashPrefix() + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Kind, e.Name, e.Role, scope, hash)
	}
	return tw.Flush()
}
