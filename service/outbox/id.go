package outbox

import (
	"strconv"
	"strings"
)

// MessageID is the id of the message of connection connID at seq:
// "out-<connection_id>-<sequence>", as the API documents.
func MessageID(connID string, seq uint64) string {
	return "out-" + connID + "-" + strconv.FormatUint(seq, 10)
}

// ParseMessageID reads an id made by MessageID. Connection ids may hold
// '-', sequences never do, so the sequence is what follows the last one.
func ParseMessageID(id string) (connID string, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(id, "out-")
	i := strings.LastIndexByte(rest, '-')
	if !found || i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(rest[i+1:], 10, 64)
	if err != nil || seq == 0 || strconv.FormatUint(seq, 10) != rest[i+1:] {
		return "", 0, false
	}
	return rest[:i], seq, true
}
