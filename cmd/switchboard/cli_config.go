package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/switchboard-dev/switchboard/internal/config"
)

// newConfigCmd is `switchboard config`: work with serve's configuration
// file without starting anything.
func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with serve's configuration file (docs/configuration.md)"}
	cmd.AddCommand(&cobra.Command{
		Use:     "check FILE",
		Short:   "Check a configuration file: its YAML, its schema and the API's rules for the declared listeners and connections",
		Example: `  switchboard config check deploy/switchboard.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := config.Check(args[0]); err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	})
	return cmd
}
