// Package transport does Switchboard's raw TCP work: it listens and accepts,
// dials out, splits byte streams into frames, hands every received frame to a
// Sink, acknowledges it once the Sink says it is durable, and sends messages
// and matches the peer's acknowledgement to them.
//
// Promises the rest of Switchboard relies on:
//
//   - A positive acknowledgement is written only after Sink.Append returned
//     nil for that frame. If Append fails the peer gets a negative
//     acknowledgement or the connection is closed, never a positive one.
//   - A Send's acknowledgement is matched to its message (HL7: MSA-2 must be
//     the sent MSH-10). A Send that does not get its acknowledgement in time
//     resets the connection, so a late acknowledgement can never be credited
//     to the next message.
//   - One goroutine owns the reads of a connection; it belongs to the Conn
//     and Close stops and waits for it. Listeners own their accept loop and
//     their connections the same way.
//   - Bad input (junk, oversized or endless frames, unparsable HL7, slow or
//     silent peers) is answered or cut off and counted; memory per
//     connection stays bounded by the maximum frame size.
//   - Who may connect is decided before a byte is read (AllowedSources,
//     the connection caps, ConnSlots); what a connection must send first
//     (a PROXY header from a trusted proxy, a TLS handshake) is read on
//     the connection's own goroutine, within HandshakeTimeout, never in
//     the accept loop, and such connections hold their place in the caps
//     meanwhile, so silent connections cannot exhaust memory or file
//     descriptors. A verified TLS peer's identity goes with every frame
//     it sends (Message.PeerIdentity).
//
// The package never logs payload bytes (they are patient data) and knows
// nothing about gRPC.
package transport
