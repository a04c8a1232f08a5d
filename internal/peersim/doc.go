// Package peersim is a scriptable test peer for integrators: the other end
// of a Switchboard listener or connection, behaving well or badly on cue.
//
// In listen mode (Server) it accepts connections and answers every message
// as a Scenario says: an HL7 ACK with any code (AA, AE, AR, CA, CE, CR), a
// NAK for the byte and fixed acknowledgement policies, late, never, with
// the wrong MSA-2, or by closing or resetting the connection. In send mode
// (Sender) it sends messages read from files and reports what came back.
//
// It reuses Switchboard's own wire code rather than copying it: frames are
// read with transport.Decoder and written with transport.Framing, HL7
// headers are read and ACKs built by package hl7, non-HL7 acknowledgements
// come from transport's policies, and the sender is a transport.Conn, so
// ACK matching is exactly Switchboard's. Only the accept loop is its own:
// transport.Listener exists never to misbehave, and misbehaving is this
// package's purpose.
//
// Like the rest of Switchboard it never logs or prints payload bytes: a
// control id and a message type are the most it shows of a message.
package peersim
