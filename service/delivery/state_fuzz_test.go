package delivery

import (
	"reflect"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
)

// FuzzDecodeState: decodeState never panics on any bytes (a stored value
// may be corrupt), and whatever it accepts encodes back to the same bytes.
func FuzzDecodeState(f *testing.F) {
	at := time.Unix(1764633600, 5).UTC()
	for _, st := range []stored{
		{spec: Spec{}.WithDefaults(), created: at, next: 1},
		{spec: Spec{ListenerIDs: []string{"adt", "lab"}, ConnectionIDs: []string{"c-1"}, Kinds: []journal.Kind{journal.KindMessage},
			Mode: ModeExclusive, AckWait: time.Second, MaxDeliveries: 3, MaxAckPending: 10}.WithDefaults(),
			created: at, next: 42, dead: 2, pending: []storedPending{{seq: 7, count: 1, first: at}, {seq: 9, count: 4, first: at}}},
	} {
		f.Add(encodeState(&st))
	}
	f.Add([]byte{})
	f.Add([]byte{stateV1})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b)
		if err != nil {
			return
		}
		again, err := decodeState(encodeState(&st))
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if !reflect.DeepEqual(st, again) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", st, again)
		}
	})
}
