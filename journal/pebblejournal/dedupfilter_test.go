package pebblejournal

import "testing"

// TestDedupFilterCounts: an id is "maybe held" while any entry with its
// hash is counted, so removing one of two ids that share a hash (a
// collision, forced here with one seed and the same id) never hides the
// other.
func TestDedupFilterCounts(t *testing.T) {
	f := newDedupFilter()
	if f.mayHold("a") {
		t.Fatal("empty filter holds a")
	}
	f.add("a")
	f.add("a") // a second entry with the same hash
	f.remove("a")
	if !f.mayHold("a") {
		t.Fatal("after add, add, remove: a not held; a colliding entry would be missed")
	}
	f.remove("a")
	f.remove("a") // more removes than adds stay at zero
	if f.mayHold("a") || len(f.counts) != 0 {
		t.Fatalf("after removing every entry: held %v, %d counts left", f.mayHold("a"), len(f.counts))
	}
	f.add("b")
	if f.mayHold("a") || !f.mayHold("b") {
		t.Fatal("b's entry counts for a, or not for b")
	}
}
