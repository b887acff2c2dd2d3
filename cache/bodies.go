package cache

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
)

// Defaults for Bodies fields left zero.
const (
	DefaultBodyBytes = 64 << 20 // 64 MiB
	DefaultBodyItem  = 1 << 20  // 1 MiB
)

// Bodies keeps recently fetched message bodies in memory, bounded in
// bytes, least recently used first out. The zero value is ready to use; a
// nil *Bodies keeps nothing. Set the fields before first use. It is safe
// for concurrent use.
type Bodies struct {
	// MaxBytes bounds the sum of the kept bodies' lengths; zero or less
	// means DefaultBodyBytes.
	MaxBytes int64
	// MaxItem is the largest body kept; larger ones pass through. Zero or
	// less means DefaultBodyItem.
	MaxItem int64

	mu  sync.Mutex
	lru *weighted[bodyKey, []byte]

	hits, misses atomic.Uint64 // Get calls, for Stats
}

type bodyKey struct{ account, key string }

func (b *Bodies) init() {
	if b.lru == nil {
		limit := b.MaxBytes
		if limit <= 0 {
			limit = DefaultBodyBytes
		}
		b.lru = newWeighted[bodyKey, []byte](limit)
	}
}

func (b *Bodies) maxItem() int64 {
	if b.MaxItem <= 0 {
		return DefaultBodyItem
	}
	return b.MaxItem
}

// Get returns the kept body; the caller must not modify it.
func (b *Bodies) Get(account, key string) ([]byte, bool) {
	if b == nil {
		return nil, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	body, ok := b.lru.get(bodyKey{account, key})
	b.count(ok)
	return body, ok
}

func (b *Bodies) count(hit bool) {
	if hit {
		b.hits.Add(1)
	} else {
		b.misses.Add(1)
	}
}

// Stats returns how many Get calls (Open's included) found a body and
// how many did not, since b was made. A nil *Bodies has zero of both.
func (b *Bodies) Stats() (hits, misses uint64) {
	if b == nil {
		return 0, 0
	}
	return b.hits.Load(), b.misses.Load()
}

// Put keeps body, evicting the least recently used bodies to make room,
// unless it is larger than MaxItem or the whole cache; then it only drops
// an older body for the key. The caller must not modify body afterwards.
// It reports whether body was kept.
func (b *Bodies) Put(account, key string, body []byte) bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	k := bodyKey{account, key}
	if int64(len(body)) > b.maxItem() {
		b.lru.remove(k)
		return false
	}
	return b.lru.add(k, body, int64(len(body)))
}

// Remove drops the body of one message, e.g. after it was deleted.
func (b *Bodies) Remove(account, key string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.lru.remove(bodyKey{account, key})
}

// Forget drops every body of the account.
func (b *Bodies) Forget(account string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.lru.removeFunc(func(k bodyKey) bool { return k.account == account })
}

// Purge drops every body, e.g. when changes elsewhere went unheard.
func (b *Bodies) Purge() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.lru.purge()
}

// Len returns the number of kept bodies and their total length.
func (b *Bodies) Len() (n int, total int64) {
	if b == nil {
		return 0, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	return b.lru.len(), b.lru.total
}

// Open returns the kept body as a stream, or else opens it with open and
// returns Tee of it. size is as for Tee.
func (b *Bodies) Open(account, key string, size int64, open func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	if body, ok := b.Get(account, key); ok {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	r, err := open()
	if err != nil {
		return nil, err
	}
	return b.Tee(account, key, size, r), nil
}

// Tee returns a reader of r that keeps a copy of what is read and Puts it
// when r reaches io.EOF, if the copy is complete: exactly size bytes, or
// any length when size is negative (unknown), and within MaxItem. A stream
// that fails, or is closed before EOF, is not kept; to keep a message that
// was only partly used (TOP), read the rest before Close. An open Tee
// holds up to MaxItem bytes. When size is above MaxItem, r itself is
// returned.
func (b *Bodies) Tee(account, key string, size int64, r io.ReadCloser) io.ReadCloser {
	if b == nil || size > b.maxItem() {
		return r
	}
	t := &tee{b: b, account: account, key: key, size: size, r: r}
	if size > 0 {
		t.buf = make([]byte, 0, size)
	}
	return t
}

type tee struct {
	b            *Bodies
	account, key string
	size         int64
	r            io.ReadCloser
	buf          []byte
	off          bool // stopped copying: error, too long, or kept
}

func (t *tee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if !t.off {
		t.buf = append(t.buf, p[:n]...)
		if int64(len(t.buf)) > t.b.maxItem() || (t.size >= 0 && int64(len(t.buf)) > t.size) {
			t.stop()
		}
	}
	if err != nil && !t.off {
		if err == io.EOF && (t.size < 0 || int64(len(t.buf)) == t.size) {
			t.b.Put(t.account, t.key, t.buf)
		}
		t.stop()
	}
	return n, err
}

func (t *tee) stop() {
	t.off, t.buf = true, nil
}

func (t *tee) Close() error {
	t.stop()
	return t.r.Close()
}
