package transport

import (
	"bytes"
	"fmt"
)

// A plain listener's peer that opens with a TLS handshake has TLS turned
// on where Switchboard does not; one that opens with a PROXY protocol
// header is a proxy Switchboard was not told to trust, or a peer trying
// to claim another address. Neither is a message: an MLLP frame starts
// with 0x0B, so these bytes would only be skipped as junk, after a wait,
// with nothing said. They are refused at once instead, with a reason an
// operator can act on.
var (
	proxyV1Sig = []byte("PROXY ")
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// sniffFirst checks the first bytes read on a plain inbound connection.
// It recognises only what it can see (a read of fewer bytes than a
// signature is let through), so it never refuses a real frame.
func sniffFirst(b []byte) error {
	switch {
	case len(b) >= 3 && b[0] == 0x16 && b[1] == 0x03 && b[2] <= 0x04:
		// A TLS record header: handshake, version 3.x.
		return fmt.Errorf("%w: the peer started a TLS handshake on a plain-TCP listener (is TLS configured on one side only?)", ErrTLSHandshake)
	case len(b) >= len(proxyV1Sig) && bytes.Equal(b[:len(proxyV1Sig)], proxyV1Sig),
		len(b) >= len(proxyV2Sig) && bytes.Equal(b[:len(proxyV2Sig)], proxyV2Sig):
		return fmt.Errorf("%w: a PROXY protocol header from an address that is not a trusted proxy", ErrProxyHeader)
	}
	return nil
}

// sniffs reports whether a connection with framing f is checked: only
// where a frame cannot start with those bytes (MLLP, start and end
// markers not starting with them).
func sniffs(f Framing) bool {
	switch f.Kind {
	case FramingMLLP:
		return true
	case FramingStartEnd:
		return len(f.Start) > 0 && f.Start[0] != 0x16 && f.Start[0] != 'P' && f.Start[0] != '\r'
	}
	return false
}
