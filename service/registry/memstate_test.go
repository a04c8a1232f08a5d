package registry_test

import (
	"testing"

	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/service/registry/statetest"
)

func TestMemStateConformance(t *testing.T) {
	statetest.Run(t, func(*testing.T) registry.StateStore { return new(registry.MemState) }, nil)
}
