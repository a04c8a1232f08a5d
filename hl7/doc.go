// Package hl7 reads HL7 v2 message headers and builds and parses acknowledgements.
//
// Everything works on raw bytes. HL7 v2 is often not UTF-8 (ISO-8859-1 and
// other single-byte charsets are common), so values are copied verbatim and
// never converted; a Go string here may hold any bytes. Only the segments that
// are needed are read, so the cost of parsing a header does not grow with the
// size of the message body.
//
// Messages carry protected health information: errors returned by this
// package name fields and positions but never contain message bytes.
package hl7
