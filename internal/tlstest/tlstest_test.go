package tlstest

import (
	"crypto/tls"
	"io"
	"testing"
)

// TestHandshake checks that an issued server and client certificate
// complete a mutual TLS handshake over loopback and that the server sees
// the client's name.
func TestHandshake(t *testing.T) {
	ca := NewCA(t, "test CA")
	srv := ca.Issue(t, LeafOptions{})
	cli := ca.Issue(t, LeafOptions{CommonName: "lis.example", Client: true})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(srv, ca))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- err.Error()
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		_, _ = io.Copy(io.Discard, c)
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), ClientConfig(ca, cli, "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if name := <-got; name != "lis.example" {
		t.Fatalf("server saw client %q, want lis.example", name)
	}
	f := WriteFiles(t, t.TempDir(), srv, ca)
	if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
		t.Fatalf("written files do not load: %v", err)
	}
}
