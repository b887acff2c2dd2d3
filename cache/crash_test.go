package cache

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The crash test runs the test binary again as a child that writes in a
// loop and reports each commit on stdout, kills it with SIGKILL at a random
// moment, and checks that every reported commit survived whole.
const (
	crashEnv      = "POPBRIDGE_CACHE_CRASH_CHILD" // the store path, in the child
	crashAccounts = 4                             // concurrent writers, batched together
	crashRecords  = 40                            // records per batch
)

// crashChange is batch b of an account: records (b, 0..39), the removal of
// record (b-1, 39), a tombstone for (b, 0), and HighestUID = b, in one
// Apply, so the file holds batches 1..HighestUID and nothing of later ones.
func crashChange(b uint32) Change {
	c := Change{
		Delete:        []string{crashKey(b-1, crashRecords-1)},
		AddTombstones: []string{crashKey(b, 0)},
		Sync:          &SyncState{UIDValidity: 1, HighestUID: b},
	}
	for i := range crashRecords {
		c.Put = append(c.Put, MessageRecord{Key: crashKey(b, i), Size: crashSize(b, i), UIDL: "u" + crashKey(b, i)})
	}
	return c
}

func crashKey(b uint32, i int) string { return fmt.Sprintf("%08d-%02d", b, i) }
func crashSize(b uint32, i int) int64 { return int64(b)*1000 + int64(i) }

// TestCrashChild is TestCrash's child; on its own it is skipped.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("run by TestCrash")
	}
	s, err := Open(path, &Options{BatchDelay: time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var wg sync.WaitGroup
	for a := range crashAccounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			account := fmt.Sprint("crash", a)
			st, err := s.SyncState(account)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
			deadline := time.Now().Add(20 * time.Second) // in case the parent dies
			for b := st.HighestUID + 1; time.Now().Before(deadline); b++ {
				if err := s.Apply(account, crashChange(b)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(4)
				}
				fmt.Fprintf(os.Stdout, "committed %s %d\n", account, b) // one write(2)
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

func TestCrash(t *testing.T) {
	iterations := 100
	if testing.Short() {
		iterations = 10
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("POPBRIDGE_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("POPBRIDGE_CRASH_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	path := filepath.Join(t.TempDir(), "cache.db")
	reported := map[string]uint32{} // highest batch each account reported committed
	start := time.Now()
	for i := range iterations {
		// Half the kills count from the start (some land in Open), half
		// from the first commit (they land in the write loop).
		afterFirst := i%2 == 1
		delay := time.Duration(rng.IntN(30_000)) * time.Microsecond
		lines, stderr := crashOnce(t, path, afterFirst, delay)
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) != 3 || f[0] != "committed" {
				continue // test framework output
			}
			b, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil {
				t.Fatalf("child printed %q", l)
			}
			reported[f[1]] = max(reported[f[1]], uint32(b))
		}
		if t.Failed() {
			t.Fatalf("iteration %d: child stderr:\n%s", i, stderr)
		}
		verifyCrashStore(t, path, reported)
		if t.Failed() {
			t.Fatalf("iteration %d (kill %v after %s)", i, delay, map[bool]string{true: "first commit", false: "start"}[afterFirst])
		}
	}
	total := 0
	for _, b := range reported {
		total += int(b)
	}
	t.Logf("%d kills, %d batches reported committed, %v", iterations, total, time.Since(start).Round(time.Millisecond))
	if total == 0 {
		t.Error("the child never reported a commit: the test tested nothing")
	}
}

// crashOnce runs the child until it is killed and returns its stdout lines.
func crashOnce(t *testing.T, path string, afterFirst bool, delay time.Duration) ([]string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	var lines []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if len(lines) == 0 {
				close(first)
			}
			lines = append(lines, sc.Text())
		}
		if len(lines) == 0 {
			close(first)
		}
	}()
	if afterFirst {
		select {
		case <-first:
		case <-time.After(10 * time.Second):
			t.Error("no commit reported within 10s")
		}
	}
	time.Sleep(delay)
	cmd.Process.Signal(syscall.SIGKILL)
	<-done // the pipe is drained: every line written before the kill is read
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Errorf("child was not killed but exited: %v", err)
	}
	return lines, stderr.String()
}

// verifyCrashStore opens the store as popbridge would after the crash and
// checks each account holds exactly batches 1..HighestUID, at least up to
// the last one the child reported.
func verifyCrashStore(t *testing.T, path string, reported map[string]uint32) {
	t.Helper()
	s, err := Open(path, &Options{BatchDelay: -1, MemoryRecords: -1, LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	err = s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for a := range crashAccounts {
		account := fmt.Sprint("crash", a)
		snap, err := s.Snapshot(account)
		if err != nil {
			t.Fatal(err)
		}
		h := snap.sync.HighestUID
		if h < reported[account] {
			t.Errorf("%s: HighestUID %d, but batch %d was reported committed", account, h, reported[account])
		}
		if h > 0 && snap.sync.UIDValidity != 1 {
			t.Errorf("%s: UIDValidity %d, want 1", account, snap.sync.UIDValidity)
		}
		// (k, 39) survives only in the last batch; every other record does.
		if want := int(h) * (crashRecords - 1); h > 0 && snap.Len() != want+1 || h == 0 && snap.Len() != 0 {
			t.Errorf("%s: %d records for %d batches, want %d", account, snap.Len(), h, want+1)
		}
		if snap.TombstoneCount() != int(h) {
			t.Errorf("%s: %d tombstones for %d batches", account, snap.TombstoneCount(), h)
		}
		for k := uint32(1); k <= h; k++ {
			for i := range crashRecords {
				r, ok := snap.Message(crashKey(k, i))
				last := i == crashRecords-1
				if last && k < h {
					if ok {
						t.Errorf("%s: record %s outlived its deletion", account, crashKey(k, i))
					}
					continue
				}
				if !ok || r.Size != crashSize(k, i) || r.UIDL != "u"+crashKey(k, i) {
					t.Errorf("%s: batch %d record %d = %+v, %v", account, k, i, r, ok)
				}
			}
			if !snap.Tombstoned(crashKey(k, 0)) {
				t.Errorf("%s: batch %d tombstone missing", account, k)
			}
		}
		if t.Failed() {
			return
		}
	}
}
