// Package testpeer holds the one rule for tests that need a real peer
// from a Debian package (a server, a client program, a browser): where it
// is missing they are skipped, except under CI=true, where .ci/run has
// installed it and its absence must fail the run.
package testpeer

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run under .ci/run (CI=true).
func CI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test for want of a peer, or fails it under CI.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if CI() {
		t.Fatalf("%s (CI=true: it must run)", msg)
	}
	t.Skip(msg)
}

// LookPath returns the path of the program name from the Debian package
// pkg, or calls Missing.
func LookPath(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, fmt.Sprintf("%s not found; install the Debian package %s", name, pkg))
	}
	return p
}
