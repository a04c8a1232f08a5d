// Package journal defines Switchboard's durable, ordered message log: the
// Journal interface every storage backend implements, the Record it stores
// and the record encoding backends share.
//
// Every inbound HL7 frame is appended here before the TCP peer is
// acknowledged; gRPC subscribers then read the log by sequence number at
// their own pace (replay from a sequence, then tail with Wait).
//
// The embedded backend is journal/pebblejournal; journal/journaltest holds
// the conformance suite every backend must pass.
package journal
