// Command devcerts makes a throwaway certificate authority and the
// certificates a test or lab install of Switchboard needs for TLS and
// mutual TLS on both planes (internal/devcerts says which, and where).
// Production certificates come from the hospital's CA or cert-manager, not
// from this.
//
//	go run ./deploy/tls/devcerts -out certs -client ops -client lis.hospital.example
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/switchboard-dev/switchboard/internal/devcerts"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "devcerts:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("devcerts", flag.ContinueOnError)
	out := fs.String("out", "certs", "output directory (created; existing files are not overwritten)")
	var hosts, clients list
	fs.Var(&hosts, "host", "another DNS name or IP address for the server certificates (repeatable)")
	fs.Var(&clients, "client", "a client certificate with this common name and DNS SAN (repeatable)")
	useRSA := fs.Bool("rsa", false, "RSA 2048 keys instead of ECDSA P-256")
	days := fs.Int("days", 30, "validity in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := devcerts.Write(*out, devcerts.Options{Hosts: hosts, Clients: clients, RSA: *useRSA, Days: *days}); err != nil {
		return err
	}
	fmt.Printf("wrote a CA, a control-plane certificate, the TLS profile \"mllp\" and %d client certificates to %s\n", len(clients), *out)
	return nil
}
