package pebblejournal

import (
	"testing"

	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/service/delivery/deliverytest"
)

var _ delivery.Store = (*ConsumerStore)(nil)

func TestConsumerStoreConformance(t *testing.T) {
	deliverytest.Run(t,
		func(t *testing.T) delivery.Store { return openJournal(t, t.TempDir(), Options{}).Consumers() },
		func(t *testing.T, s delivery.Store) delivery.Store {
			return reopened(t, s.(*ConsumerStore).j).Consumers()
		})
}
