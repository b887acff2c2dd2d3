package testpeer

import "testing"

// TestLookPath: a program that exists is found; one that does not skips
// the (sub)test, or fails it under CI=true.
func TestLookPath(t *testing.T) {
	if p := LookPath(t, "sh", "dash"); p == "" {
		t.Fatal("sh not found")
	}
	t.Setenv("CI", "")
	var skipped bool
	t.Run("missing", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		LookPath(t, "no-such-program-popbridge", "none")
		t.Error("LookPath returned for a missing program")
	})
	if !skipped {
		t.Fatal("a missing program did not skip the test without CI")
	}
}
