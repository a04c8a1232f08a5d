package outbox_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/outbox/outboxtest"
)

// TestMain checks for leaked goroutines. It is the package's only one;
// the worker's tests share it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMemStoreConformance(t *testing.T) {
	outboxtest.Run(t, func(*testing.T) outbox.Store { return new(outbox.MemStore) }, nil)
}
