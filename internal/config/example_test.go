package config_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/switchboard-dev/switchboard/internal/config"
)

// Wiring the file into a flag set: parse the command line, load the file,
// then let Apply fill in every flag the command line did not give, from
// the environment first and the file second. With pflag/cobra the same
// three lines use fs.Changed and fs.Set.
func ExampleApply() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "switchboard.yaml")
	_ = os.WriteFile(path, []byte("server:\n  grpc_addr: 127.0.0.1:7000\n  admin_addr: 127.0.0.1:7001\nstorage:\n  data_dir: /var/lib/switchboard\n"), 0o600)

	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:50051", "")
	adminAddr := fs.String("admin-addr", "127.0.0.1:9090", "")
	dataDir := fs.String("data-dir", "switchboard-data", "")
	logLevel := fs.String("log-level", "info", "")
	_ = fs.Parse([]string{"-admin-addr", "127.0.0.1:9999"})

	f, err := config.Load(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	env := map[string]string{"SWITCHBOARD_DATA_DIR": "/srv/switchboard"}
	set := func(name, value string) error {
		if fs.Lookup(name) == nil {
			return nil // a flag this example's set lacks
		}
		return fs.Set(name, value)
	}
	err = config.Apply(config.Settings(f), func(n string) bool { return given[n] }, set,
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("grpc-addr", *grpcAddr)   // from the file
	fmt.Println("admin-addr", *adminAddr) // from the command line
	fmt.Println("data-dir", *dataDir)     // from the environment
	fmt.Println("log-level", *logLevel)   // the default
	// Output:
	// grpc-addr 127.0.0.1:7000
	// admin-addr 127.0.0.1:9999
	// data-dir /srv/switchboard
	// log-level info
}
