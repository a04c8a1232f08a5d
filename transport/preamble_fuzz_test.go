package transport

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

// bytesConn is a net.Conn that reads b, for the PROXY header fuzz test.
type bytesConn struct {
	net.Conn
	r *bytes.Reader
}

func (c bytesConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c bytesConn) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.1:5000"))
}

// FuzzProxyHeader feeds arbitrary bytes to the PROXY header reader (the
// library's parser and ours around it): it must never panic, and a header
// it accepts names a valid TCP peer, or keeps the proxy's (LOCAL).
func FuzzProxyHeader(f *testing.F) {
	f.Add(proxyV2(netip.MustParseAddrPort("10.1.2.3:4000"), netip.MustParseAddrPort("10.0.0.1:2575")))
	f.Add([]byte("PROXY TCP4 10.1.2.3 10.0.0.1 4000 2575\r\n\x0bMSH|"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(append(append([]byte{}, proxyV2Sig...), 0x20, 0x00, 0, 0))  // LOCAL
	f.Add(append(append([]byte{}, proxyV2Sig...), 0x21, 0x21, 0, 36)) // IPv6, truncated
	f.Add([]byte("\x0bMSH|^~\\&|"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pc, err := readProxyHeader(bytesConn{r: bytes.NewReader(b)})
		if err != nil {
			return
		}
		if a := addrOf(pc.RemoteAddr()); !a.IsValid() {
			t.Fatalf("accepted header with remote address %v", pc.RemoteAddr())
		}
	})
}

// FuzzSniffFirst: the first-bytes check never panics and never refuses a
// stream that starts like an MLLP frame.
func FuzzSniffFirst(f *testing.F) {
	f.Add([]byte("\x16\x03\x01"))
	f.Add([]byte("PROXY "))
	f.Add([]byte("\x0bMSH|"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := sniffFirst(b); err != nil && len(b) > 0 && b[0] == 0x0b {
			t.Fatalf("refused an MLLP start: %v", err)
		}
	})
}
