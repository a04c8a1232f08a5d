//go:build !unix

package bench

// raiseFileLimit does nothing: this system (Windows, for one) has no
// RLIMIT_NOFILE soft limit for a program to raise.
func raiseFileLimit(uint64) error { return nil }
