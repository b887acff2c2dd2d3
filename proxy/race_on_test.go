//go:build race

package proxy

// raceEnabled says the tests run under the race detector, which makes
// some code ten times slower.
const raceEnabled = true
