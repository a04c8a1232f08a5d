package pebblejournal

import (
	"testing"

	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/outbox/outboxtest"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/service/registry/statetest"
)

var (
	_ registry.StateStore = (*StateStore)(nil)
	_ outbox.Store        = (*Outbox)(nil)
)

// reopened closes j and opens its directory again, as a restart would.
func reopened(t *testing.T, j *Journal) *Journal {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openJournal(t, j.dir, Options{})
}

func TestStateStoreConformance(t *testing.T) {
	statetest.Run(t,
		func(t *testing.T) registry.StateStore { return openJournal(t, t.TempDir(), Options{}).StateStore() },
		func(t *testing.T, s registry.StateStore) registry.StateStore {
			return reopened(t, s.(*StateStore).j).StateStore()
		})
}

func TestOutboxConformance(t *testing.T) {
	outboxtest.Run(t,
		func(t *testing.T) outbox.Store { return openJournal(t, t.TempDir(), Options{}).Outbox() },
		func(t *testing.T, s outbox.Store) outbox.Store { return reopened(t, s.(*Outbox).j).Outbox() })
}
