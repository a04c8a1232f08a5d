package hl7

import "testing"

func TestVersionAtLeast(t *testing.T) {
	tests := []struct {
		v            string
		major, minor int
		want         bool
	}{
		{"2.4", 2, 4, true},
		{"2.3.1", 2, 4, false},
		{"2.3", 2, 4, false},
		{"2.10", 2, 4, true},
		{"2.5.1", 2, 5, true},
		{"2.4", 2, 5, false},
		{"2", 2, 4, false},
		{"3", 2, 5, true},
		{"1.9", 2, 4, false},
		{"", 2, 4, true},
		{"v2.3", 2, 4, true},
		{"99999999999999999999999.1", 2, 4, true},
	}
	for _, tt := range tests {
		if got := versionAtLeast(tt.v, tt.major, tt.minor); got != tt.want {
			t.Errorf("versionAtLeast(%q, %d, %d) = %v, want %v", tt.v, tt.major, tt.minor, got, tt.want)
		}
	}
}
