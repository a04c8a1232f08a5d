package main

// gen-docs: docs/cli/, the command reference, generated from the command
// tree (TestCLIDocsFresh fails when it is stale).

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// regenerateDocs is the command that rewrites docs/cli/.
const regenerateDocs = "go run ./cmd/switchboard gen-docs docs/cli"

func newGenDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "Write the Markdown command reference into DIR (docs/cli)",
		Hidden: true,
		Args:   exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return genDocs(cmd.Root(), args[0])
		},
	}
}

// genDocs writes one Markdown file per command into dir and removes the
// files of commands that are gone.
func genDocs(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(dir, "switchboard*.md"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	root.DisableAutoGenTag = true
	// Added by Execute otherwise; the tests generate without executing.
	root.InitDefaultCompletionCmd()
	if err := doc.GenMarkdownTree(root, dir); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	readme := "# switchboard command reference\n\n" +
		"Generated from the command tree by `" + regenerateDocs + "`; do not edit by hand.\n" +
		"Start with [switchboard](switchboard.md).\n"
	return os.WriteFile(filepath.Join(dir, "README.md"), []byte(readme), 0o644)
}
