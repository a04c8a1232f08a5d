package delivery_test

import (
	"testing"

	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/service/delivery/deliverytest"
)

func TestMemStoreConformance(t *testing.T) {
	deliverytest.Run(t, func(*testing.T) delivery.Store { return delivery.NewMemStore() }, nil)
}
