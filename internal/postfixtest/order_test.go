package postfixtest

import (
	"slices"
	"testing"
)

// TestDeliveryOrder: names of one second sort by their microseconds,
// not by the inode that comes first in the name.
func TestDeliveryOrder(t *testing.T) {
	names := []string{
		"1796316854.Vfe00I9bb001M000100.vm",
		"1796316853.Vfe00I9bb372M883930.vm",
		"1796316853.Vfe00I9bba01M881754.vm",
	}
	slices.SortFunc(names, cmpDelivered)
	want := []string{"1796316853.Vfe00I9bba01M881754.vm", "1796316853.Vfe00I9bb372M883930.vm", "1796316854.Vfe00I9bb001M000100.vm"}
	if !slices.Equal(names, want) {
		t.Fatalf("sorted %q, want %q", names, want)
	}
}
