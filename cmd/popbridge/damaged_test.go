package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/app"
)

// fillStore writes a cache.db at path that spans many pages: a
// thousand records and a tombstone for each of alice and three others.
func fillStore(t *testing.T, path string) {
	t.Helper()
	s, err := cache.Open(path, &cache.Options{BatchDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, acct := range []string{"alice", "carol", "dave", "erin"} {
		var recs []cache.MessageRecord
		for i := range 1000 {
			recs = append(recs, cache.MessageRecord{Key: fmt.Sprintf("key-%05d", i), Size: int64(i), UIDL: fmt.Sprintf("uidl-%05d", i)})
		}
		if err := s.Apply(acct, cache.Change{Put: recs, AddTombstones: []string{"key-00001"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// middlePage returns the page holding the root of carol's message
// records (a branch page in the middle of the file) and the page size.
func middlePage(t *testing.T, path string) (off int64, size int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var page int64
	db.View(func(tx *bolt.Tx) error {
		page = int64(tx.Bucket([]byte("accounts")).Bucket([]byte("carol")).Bucket([]byte("m")).Root())
		return nil
	})
	if page < 2 {
		t.Fatalf("carol's records are inline (page %d)", page)
	}
	return page * int64(db.Info().PageSize), db.Info().PageSize
}

func garbage(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

func writeAt(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedStore breaks cache.db in several ways: serve, check and
// cache verify exit 1 and say which file to move aside and what is lost
// with it, instead of panicking (serve used to exit 2 with "invalid
// freelist page") or saying OK (check).
func TestDamagedStore(t *testing.T) {
	bin := buildBinary(t)
	path := writeConfig(t, "")
	db := filepath.Join(filepath.Dir(path), "state", app.StoreFile)
	fillStore(t, db)
	sound := must(os.ReadFile(db))

	r := runCmd(t, "", "cache", "verify", "-config", path)
	if r.code != 0 || r.stdout != db+": OK (every page read, consistency checked)\n" {
		t.Fatalf("cache verify of a sound file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	damages := []struct {
		name   string
		damage func()
		reason string
	}{
		{"truncated to half", func() { must(0, os.Truncate(db, int64(len(sound))/2)) }, "(truncated)"},
		{"garbage in a middle page", func() { off, n := middlePage(t, db); writeAt(t, db, off, garbage(n)) }, ""},
		{"garbage in a middle page after its header", func() { off, n := middlePage(t, db); writeAt(t, db, off+16, garbage(n-16)) }, ""},
		{"zeroed meta pages", func() { writeAt(t, db, 0, make([]byte, 2*os.Getpagesize())) }, "invalid database"},
		{"zero length", func() { must(0, os.Truncate(db, 0)) }, "the file is empty"},
		{"random bytes", func() { must(0, os.WriteFile(db, garbage(64<<10), 0o600)) }, "invalid database"},
	}
	wants := []string{
		db + " is damaged: ",
		"To recover, stop popbridge, move the file aside (mv " + db + " " + db + ".damaged) and start popbridge again",
		"the tombstones of messages hidden from POP3 (on_delete: keep",
		"the message sizes and UIDLs learnt from upstreams",
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			if err := os.WriteFile(db, sound, 0o600); err != nil {
				t.Fatal(err)
			}
			d.damage()
			damaged := must(os.ReadFile(db))
			for _, args := range [][]string{
				{"serve", "-config", path},
				{"check", "-config", path},
				{"cache", "verify", "-config", path},
				{"cache", "stats", "-config", path},
			} {
				code, stdout, stderr := runBinary(t, bin, args...)
				out := stdout + stderr
				if code != 1 {
					t.Errorf("%v: exit %d, want 1; output:\n%s", args, code, out)
					continue
				}
				for _, w := range append(wants, d.reason) {
					if !strings.Contains(out, w) {
						t.Errorf("%v: output lacks %q:\n%s", args, w, out)
					}
				}
				if strings.Contains(out, "goroutine ") || strings.Contains(out, "OK  state") {
					t.Errorf("%v: output:\n%s", args, out)
				}
			}
			if now := must(os.ReadFile(db)); string(now) != string(damaged) {
				t.Error("the damaged file was changed")
			}
		})
	}
}

// runBinary runs the popbridge binary bin with args, for at most 30 s.
func runBinary(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// buildBinary builds popbridge from this package into a temporary
// directory (like the e2e tests' buildPopbridge).
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "popbridge")
	// go test puts its own GOROOT/bin first on PATH.
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestVerifyViaServer runs cache verify while serve holds cache.db: the
// server checks its open file, and reports garbage written into it
// meanwhile as damage, without crashing.
func TestVerifyViaServer(t *testing.T) {
	path := writeConfig(t, "")
	db := filepath.Join(filepath.Dir(path), "state", app.StoreFile)
	fillStore(t, db)
	off, n := middlePage(t, db)
	_, stderr, stop := startServe(t, path)

	r := runCmd(t, "", "cache", "verify", "-config", path)
	want := fmt.Sprintf("%s: OK (every page read, consistency checked by the running popbridge, pid %d)\n", db, os.Getpid())
	if r.code != 0 || r.stdout != want {
		t.Errorf("cache verify of a sound file: exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, want)
	}

	writeAt(t, db, off+16, garbage(n-16))
	r = runCmd(t, "", "cache", "verify", "-config", path)
	if r.code != 1 || !strings.HasPrefix(r.stderr, "popbridge cache: "+db+" is damaged: ") ||
		!strings.Contains(r.stderr, "move the file aside (mv "+db+" "+db+".damaged)") {
		t.Errorf("cache verify of a damaged file: exit %d, stderr %q", r.code, r.stderr)
	}
	if code := stop(); code != 0 {
		t.Errorf("serve exited %d; log:\n%s", code, stderr)
	}
	if e := eventsWith(stderr.String(), "control socket: cache.db is damaged"); len(e) != 1 || e[0]["level"] != "error" {
		t.Errorf("server log: %v", e)
	}
}
