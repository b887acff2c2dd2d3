package cache

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
)

const benchMessages = 10_000

// benchRecords returns n records with Maildir-like keys and UIDLs.
func benchRecords(prefix string, n int) []MessageRecord {
	recs := make([]MessageRecord, n)
	for i := range recs {
		key := fmt.Sprintf("%s1733%06d.M%06dP%05d.mail.example.org", prefix, i, i*7, i%99991)
		recs[i] = MessageRecord{Key: key, Size: int64(2000 + i*37%500000), UIDL: key[:len(key)-17]}
	}
	return recs
}

func benchStore(b *testing.B, opts *Options) (*Store, []MessageRecord) {
	b.Helper()
	s, _ := openTemp(b, opts)
	recs := benchRecords("", benchMessages)
	if err := s.PutMessages("alice", recs); err != nil {
		b.Fatal(err)
	}
	return s, recs
}

// BenchmarkWarmLookup10k is a warm session's lookup of the size and UIDL
// of each of 10,000 messages of one account.
func BenchmarkWarmLookup10k(b *testing.B) {
	s, recs := benchStore(b, nil)
	keys := make([]string, len(recs))
	for i, r := range recs {
		keys[i] = r.Key
	}
	if _, err := s.Snapshot("alice"); err != nil {
		b.Fatal(err)
	}
	loads := s.loads.Load()
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			snap, err := s.Snapshot("alice")
			if err != nil {
				b.Fatal(err)
			}
			var total int64
			for _, k := range keys {
				r, ok := snap.Message(k)
				if !ok || r.UIDL == "" {
					b.Fatalf("%s missing", k)
				}
				total += r.Size
			}
		}
	})
	b.Run("message-calls", func(b *testing.B) {
		for b.Loop() {
			for _, k := range keys {
				if _, ok, err := s.Message("alice", k); !ok || err != nil {
					b.Fatalf("%s missing: %v", k, err)
				}
			}
		}
	})
	b.Run("messages-copy", func(b *testing.B) {
		for b.Loop() {
			m, err := s.Messages("alice")
			if err != nil || len(m) != benchMessages {
				b.Fatal(len(m), err)
			}
		}
	})
	if n := s.loads.Load(); n != loads {
		b.Errorf("warm lookups read the file %d times", n-loads)
	}
}

// BenchmarkColdLoad10k reads the 10,000 records from bbolt each time, as
// the first session after a start does.
func BenchmarkColdLoad10k(b *testing.B) {
	s, _ := benchStore(b, &Options{MemoryRecords: -1})
	for b.Loop() {
		snap, err := s.Snapshot("alice")
		if err != nil || snap.Len() != benchMessages {
			b.Fatal(snap.Len(), err)
		}
	}
}

// BenchmarkPut10k writes 10,000 new records of a new account in one
// transaction, fsync included, from records in key order and shuffled.
func BenchmarkPut10k(b *testing.B) {
	sorted := benchRecords("", benchMessages)
	shuffled := slices.Clone(sorted)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	})
	for _, tc := range []struct {
		name string
		recs []MessageRecord
	}{{"sorted", sorted}, {"shuffled", shuffled}} {
		b.Run(tc.name, func(b *testing.B) {
			s, _ := openTemp(b, nil)
			n := 0
			for b.Loop() {
				n++
				if err := s.PutMessages(fmt.Sprint("acct", n), tc.recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*benchMessages), "ns/record")
		})
	}
}

// BenchmarkPut1Warm10k adds one record to a cached account of 10,000: the
// commit plus the copy of the cached snapshot.
func BenchmarkPut1Warm10k(b *testing.B) {
	s, _ := benchStore(b, &Options{BatchDelay: -1})
	if _, err := s.Snapshot("alice"); err != nil {
		b.Fatal(err)
	}
	loads := s.loads.Load()
	n := 0
	for b.Loop() {
		n++
		if err := s.PutMessages("alice", []MessageRecord{{Key: fmt.Sprint("new", n), Size: 1}}); err != nil {
			b.Fatal(err)
		}
	}
	if s.loads.Load() != loads {
		b.Error("a write to a warm account reloaded it")
	}
}

// BenchmarkSmallWrites is one record per write from many goroutines, each
// on its own account: batching shares the commits and their fsyncs.
func BenchmarkSmallWrites(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts *Options
	}{{"batched", nil}, {"alone", &Options{BatchDelay: -1}}} {
		b.Run(tc.name, func(b *testing.B) {
			s, _ := openTemp(b, tc.opts)
			var id atomic.Int64
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				account := fmt.Sprint("acct", id.Add(1))
				i := 0
				for pb.Next() {
					i++
					if err := s.AddTombstones(account, []string{fmt.Sprint(i)}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestSnapshotMemory checks the per-record cost that Options.MemoryRecords
// documents (about 180 bytes for these 45-byte keys).
func TestSnapshotMemory(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	if err := s.PutMessages("alice", benchRecords("", benchMessages)); err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := int64(ms.HeapAlloc)
	snap, err := s.load("alice")
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := float64(int64(ms.HeapAlloc)-before) / benchMessages
	runtime.KeepAlive(snap)
	t.Logf("%.0f bytes per cached record", per)
	if per > 300 {
		t.Errorf("%.0f bytes per cached record; the Options.MemoryRecords doc says about 180", per)
	}
}

// BenchmarkVerify100k reads and checks a file of 100,000 records (ten
// accounts of 10,000, about 35 MB), as every Open of an existing file
// does; the file stays in the page cache.
func BenchmarkVerify100k(b *testing.B) {
	s, path := openTemp(b, nil)
	for a := range 10 {
		if err := s.PutMessages(fmt.Sprintf("acct%d", a), benchRecords("", benchMessages)); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	for b.Loop() {
		if err := Verify(path, nil); err != nil {
			b.Fatal(err)
		}
	}
}
