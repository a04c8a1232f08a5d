package outbox

import "testing"

func TestMessageID(t *testing.T) {
	for _, tc := range []struct {
		conn string
		seq  uint64
	}{{"lab", 1}, {"lab-2575", 42}, {"a.b_c-d-", 18446744073709551615}, {"9", 7}} {
		id := MessageID(tc.conn, tc.seq)
		conn, seq, ok := ParseMessageID(id)
		if !ok || conn != tc.conn || seq != tc.seq {
			t.Errorf("ParseMessageID(%q) = %q, %d, %v; want %q, %d", id, conn, seq, ok, tc.conn, tc.seq)
		}
	}
	for _, bad := range []string{"", "out-", "out-lab", "out-lab-", "out--1", "out-lab-0", "out-lab-01", "out-lab-+1", "in-7", "out-lab-1x", "lab-1"} {
		if conn, seq, ok := ParseMessageID(bad); ok {
			t.Errorf("ParseMessageID(%q) = %q, %d; want not an id", bad, conn, seq)
		}
	}
}
