package modes_test

import (
	"fmt"

	"github.com/popbridge/popbridge/internal/modes"
)

func ExampleList() {
	policy := modes.OnDelete("purge")
	if !modes.POP3OnDelete.Has(policy) {
		fmt.Printf("unknown policy %q (want %s)\n", policy, modes.POP3OnDelete)
	}
	fmt.Println("empty means", modes.POP3OnDelete.Or(""))
	// Output:
	// unknown policy "purge" (want delete or keep)
	// empty means delete
}
