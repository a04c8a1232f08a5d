package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/switchboard-dev/switchboard/internal/tlsfiles"
)

// TLS errors. A failed handshake or a refused peer certificate closes the
// connection; on Dial the error also wraps ErrConnectFailed.
var (
	// ErrTLSHandshake: the TLS handshake failed or did not finish within
	// its timeout (a plain-TCP peer on a TLS listener, an untrusted or
	// expired certificate, no common protocol version).
	ErrTLSHandshake = errors.New("TLS handshake failed")
	// ErrPeerNotAllowed: the peer's verified certificate matches none of
	// the allowed peer names (or it presented none).
	ErrPeerNotAllowed = errors.New("peer certificate not allowed")
)

// TLSInfo describes a connection's TLS session.
type TLSInfo struct {
	// Version and CipherSuite are as Go names them ("TLS 1.3",
	// "TLS_AES_128_GCM_SHA256").
	Version, CipherSuite string
	// PeerIdentity is the verified peer certificate's identity (its first
	// URI SAN, else first DNS SAN, else common name, else subject); empty
	// when the peer presented none.
	PeerIdentity string
	// PeerNames are every name of the peer certificate that allow-lists
	// match (common name and DNS, URI, IP and email SANs).
	PeerNames []string
	// PeerSubject is the peer certificate's subject distinguished name.
	PeerSubject string
}

// tlsInfoOf describes an established session. Only verified chains count:
// with VerifyClientCertIfGiven an unverified certificate never reaches
// here (the handshake fails), so PeerCertificates is trusted.
func tlsInfoOf(cs tls.ConnectionState) *TLSInfo {
	info := &TLSInfo{Version: tls.VersionName(cs.Version), CipherSuite: tls.CipherSuiteName(cs.CipherSuite)}
	if leaf := peerLeaf(cs); leaf != nil {
		info.PeerIdentity = tlsfiles.Identity(leaf)
		info.PeerNames = tlsfiles.Names(leaf)
		info.PeerSubject = leaf.Subject.String()
	}
	return info
}

// peerLeaf returns the peer's certificate when it was verified.
func peerLeaf(cs tls.ConnectionState) *x509.Certificate {
	if len(cs.PeerCertificates) == 0 || len(cs.VerifiedChains) == 0 {
		return nil
	}
	return cs.PeerCertificates[0]
}

// checkPeer enforces an allow-list of peer names on an established
// session; no list allows every verified peer.
func checkPeer(cs tls.ConnectionState, allowed []string) error {
	if len(allowed) == 0 {
		return nil
	}
	leaf := peerLeaf(cs)
	if leaf == nil {
		return fmt.Errorf("%w: no verified certificate presented", ErrPeerNotAllowed)
	}
	if !tlsfiles.Match(leaf, allowed) {
		return fmt.Errorf("%w: %q matches none of the allowed peer names", ErrPeerNotAllowed, tlsfiles.Identity(leaf))
	}
	return nil
}

// checkTLSConfig rejects a TLS configuration that would weaken the
// decisions every part of Switchboard follows (TLS 1.2 at least, peers
// verified).
func checkTLSConfig(c *tls.Config, server bool) error {
	if c == nil {
		return nil
	}
	if c.MinVersion != 0 && c.MinVersion < tls.VersionTLS12 {
		return fmt.Errorf("%w: TLS below 1.2 is not allowed", ErrInvalidConfig)
	}
	if !server && c.InsecureSkipVerify && c.VerifyConnection == nil && c.VerifyPeerCertificate == nil {
		return fmt.Errorf("%w: a TLS client must verify the server's certificate", ErrInvalidConfig)
	}
	return nil
}

// tlsMin12 returns c with MinVersion raised to TLS 1.2 (a copy when it
// changes), so a caller's zero MinVersion cannot mean TLS 1.0 on an older
// Go.
func tlsMin12(c *tls.Config) *tls.Config {
	if c == nil || c.MinVersion >= tls.VersionTLS12 {
		return c
	}
	c = c.Clone()
	c.MinVersion = tls.VersionTLS12
	return c
}
