package control

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/cache"
)

// TestServer asks a control server every request of the protocol, then
// closes it: the socket goes and Ask finds no server.
func TestServer(t *testing.T) {
	dir := t.TempDir()
	store, err := cache.Open(filepath.Join(dir, "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.PutMessages("ann", []cache.MessageRecord{{Key: "k1", Size: 10, UIDL: "u1"}}); err != nil {
		t.Fatal(err)
	}
	bodies := &cache.Bodies{}
	bodies.Put("ann", "k1", []byte("body"))
	c, err := Start(dir, store, bodies, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(c.Path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: %v, %v; want mode 0600", c.Path(), fi, err)
	}

	r, ok, err := Ask(dir, Request{Op: "stats"})
	if err != nil || !ok || !r.OK || r.PID != os.Getpid() || len(r.Accounts) != 1 || r.Accounts[0].Account != "ann" ||
		r.Accounts[0].Messages != 1 || r.Bodies == nil || r.Bodies.Count != 1 {
		t.Errorf("stats: %+v, %v, %v", r, ok, err)
	}
	if r, _, _ := Ask(dir, Request{Op: "verify"}); !r.OK {
		t.Errorf("verify: %+v", r)
	}
	if r, _, _ := Ask(dir, Request{Op: "forget", Account: "bob"}); r.OK || r.Code != CodeNoAccount {
		t.Errorf("forget of an unknown account: %+v", r)
	}
	if r, _, _ := Ask(dir, Request{Op: "forget"}); r.Code != CodeBadRequest {
		t.Errorf("forget without an account: %+v", r)
	}
	if r, _, _ := Ask(dir, Request{Op: "frobnicate"}); r.Code != CodeBadRequest || !strings.Contains(r.Error, "unknown op") {
		t.Errorf("unknown op: %+v", r)
	}
	if r, _, _ := Ask(dir, Request{Op: "forget", Account: "ann"}); !r.OK {
		t.Errorf("forget ann: %+v", r)
	}
	if n, _ := bodies.Len(); n != 0 {
		t.Errorf("forget left %d bodies", n)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(c.Path()); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
	if _, ok, err := Ask(dir, Request{Op: "stats"}); ok || err != nil {
		t.Errorf("Ask after Close: ok %v, %v; want no server", ok, err)
	}
}

// TestStart replaces a stale socket, and refuses a file that is not a
// socket or a socket another process answers on.
func TestStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, File)
	store, err := cache.Open(filepath.Join(dir, "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	// A socket nobody answers on: left by a process that died.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	c, err := Start(dir, store, nil, zerolog.Nop())
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	if _, err := Start(dir, store, nil, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "another process answers on it") {
		t.Errorf("second server: %v", err)
	}
	c.Close()

	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(dir, store, nil, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a plain file: %v", err)
	}
}
