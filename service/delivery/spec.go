package delivery

import (
	"fmt"
	"slices"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
)

// Mode says how a consumer's attached streams share its messages.
type Mode int

const (
	// ModeShared: every attached stream gets messages; each message goes to
	// exactly one of them. The default.
	ModeShared Mode = 1
	// ModeExclusive: only the first attached stream gets messages; the
	// others wait in attach order and take over when it closes.
	ModeExclusive Mode = 2
)

func (m Mode) String() string {
	switch m {
	case ModeShared:
		return "shared"
	case ModeExclusive:
		return "exclusive"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Defaults of a Spec's zero fields.
const (
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliveries = 5
	DefaultMaxAckPending = 1000
)

// Spec is what a consumer delivers and how; it is fixed when the consumer
// is created.
type Spec struct {
	ListenerIDs   []string       // filter; empty = all (sorted, deduplicated by WithDefaults)
	ConnectionIDs []string       // filter; empty = all
	Kinds         []journal.Kind // filter; empty = all
	Mode          Mode           // 0 -> ModeShared
	AckWait       time.Duration  // 0 -> 30 s
	MaxDeliveries int            // 0 -> 5
	MaxAckPending int            // 0 -> 1000
}

// WithDefaults returns s with its zero fields set to their defaults and its
// filters sorted and deduplicated (empty filters become nil). It does not
// modify s.
func (s Spec) WithDefaults() Spec {
	s.ListenerIDs = sortedSet(s.ListenerIDs)
	s.ConnectionIDs = sortedSet(s.ConnectionIDs)
	s.Kinds = sortedSet(s.Kinds)
	if s.Mode == 0 {
		s.Mode = ModeShared
	}
	if s.AckWait == 0 {
		s.AckWait = DefaultAckWait
	}
	if s.MaxDeliveries == 0 {
		s.MaxDeliveries = DefaultMaxDeliveries
	}
	if s.MaxAckPending == 0 {
		s.MaxAckPending = DefaultMaxAckPending
	}
	return s
}

func sortedSet[T ~string | ~uint32](in []T) []T {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// Equal reports whether s and o are the same Spec once both have their
// defaults.
func (s Spec) Equal(o Spec) bool {
	s, o = s.WithDefaults(), o.WithDefaults()
	return slices.Equal(s.ListenerIDs, o.ListenerIDs) &&
		slices.Equal(s.ConnectionIDs, o.ConnectionIDs) &&
		slices.Equal(s.Kinds, o.Kinds) &&
		s.Mode == o.Mode && s.AckWait == o.AckWait &&
		s.MaxDeliveries == o.MaxDeliveries && s.MaxAckPending == o.MaxAckPending
}

// Match reports whether the consumer delivers r: r passes every non-empty
// filter. Filters need not be sorted.
func (s Spec) Match(r *journal.Record) bool {
	return (len(s.ListenerIDs) == 0 || slices.Contains(s.ListenerIDs, r.ListenerID)) &&
		(len(s.ConnectionIDs) == 0 || slices.Contains(s.ConnectionIDs, r.ConnectionID)) &&
		(len(s.Kinds) == 0 || slices.Contains(s.Kinds, r.Kind))
}

// Validate reports what makes s unusable: an unknown mode or a negative
// limit. Zero fields are fine (they take defaults).
func (s Spec) Validate() error {
	switch {
	case s.Mode != 0 && s.Mode != ModeShared && s.Mode != ModeExclusive:
		return fmt.Errorf("%w: unknown mode %d", ErrInvalid, int(s.Mode))
	case s.AckWait < 0:
		return fmt.Errorf("%w: negative ack wait %s", ErrInvalid, s.AckWait)
	case s.MaxDeliveries < 0:
		return fmt.Errorf("%w: negative max deliveries %d", ErrInvalid, s.MaxDeliveries)
	case s.MaxAckPending < 0:
		return fmt.Errorf("%w: negative max ack pending %d", ErrInvalid, s.MaxAckPending)
	}
	return nil
}
