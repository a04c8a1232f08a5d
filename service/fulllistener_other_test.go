//go:build !linux

package service_test

import "testing"

// fullListener skips the test: making a listener whose accept queue is full
// relies on Linux's handling of a zero backlog (fulllistener_linux_test.go).
func fullListener(t *testing.T) string {
	t.Helper()
	t.Skip("needs a listener with a full accept queue, which this test makes only on Linux")
	return ""
}
