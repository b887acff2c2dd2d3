// Package control is the control socket of a running popbridge server:
// a unix socket in the state directory on which the popbridge cache
// commands ask the server that holds cache.db for its stats, to forget an
// account, or to verify the file. The protocol is one JSON object a line
// each way.
package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/cache"
)

// File is the control socket in the state directory.
const File = "control.sock"

// maxSocketPath is the longest unix socket path Linux accepts (sun_path
// holds 108 bytes with the final NUL).
const maxSocketPath = 107

// The control protocol: one JSON object a line each way, on a unix
// socket in the state directory. Requests are {"op":"stats"},
// {"op":"forget","account":"NAME"} and {"op":"verify"}; every request
// gets one reply.

// Request is a request line.
type Request struct {
	Op      string `json:"op"`
	Account string `json:"account,omitempty"`
}

// Reply codes beside "ok": false.
const (
	CodeNoAccount  = "no-account"
	CodeInUse      = "in-use"
	CodeBadRequest = "bad-request"
	CodeFailed     = "failed"
	CodeDamaged    = "damaged" // verify: Error is the reason
)

// Reply is a reply line.
type Reply struct {
	OK       bool           `json:"ok"`
	Code     string         `json:"code,omitempty"`
	Error    string         `json:"error,omitempty"`
	PID      int            `json:"pid,omitempty"`
	Accounts []AccountStats `json:"accounts,omitempty"`
	Bodies   *BodyStats     `json:"bodies,omitempty"`
}

// AccountStats is one account's line of stats.
type AccountStats struct {
	Account    string `json:"account"`
	Messages   int    `json:"messages"`
	Tombstones int    `json:"tombstones"`
	Bytes      int64  `json:"bytes"`      // sum of the recorded message sizes
	DiskBytes  int64  `json:"disk_bytes"` // file pages the account uses
}

// BodyStats describes the running server's body cache.
type BodyStats struct {
	Count int   `json:"count"`
	Bytes int64 `json:"bytes"`
}

// StoreStats returns the stats of every account in store.
func StoreStats(store cache.StateStore) ([]AccountStats, error) {
	st, err := store.Stats()
	if err != nil {
		return nil, err
	}
	out := make([]AccountStats, 0, len(st))
	for _, a := range st {
		out = append(out, AccountStats{a.Account, a.Messages, a.Tombstones, a.Bytes, a.DiskBytes})
	}
	return out, nil
}

// controlIdle bounds the wait for a control request.
const controlIdle = 30 * time.Second

// Server answers the control protocol for a running server.
type Server struct {
	store  cache.StateStore
	bodies *cache.Bodies // nil keeps no bodies
	ln     *net.UnixListener
	path   string
	log    zerolog.Logger
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Start listens on the state directory's control socket (mode
// 0600), replacing a stale socket left by a process that died, and serves
// it until Close.
func Start(dir string, store cache.StateStore, bodies *cache.Bodies, log zerolog.Logger) (*Server, error) {
	path := filepath.Join(dir, File)
	ln, err := listenControl(path)
	if err != nil {
		return nil, err
	}
	c := &Server{store: store, bodies: bodies, ln: ln, path: path, log: log, conns: map[net.Conn]struct{}{}}
	c.wg.Add(1)
	go c.serve()
	return c, nil
}

// listenControl binds path. The caller holds the store's lock, so no
// other popbridge can serve this state directory: a socket there is a
// crashed process's, unless something else answers on it.
func listenControl(path string) (*net.UnixListener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: path longer than %d bytes", path, maxSocketPath)
	}
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("control socket %s: exists and is not a socket; remove it", path)
	case err == nil:
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another process answers on it", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("control socket %s: removing the stale socket: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// Path is the socket's path.
func (c *Server) Path() string { return c.path }

func (c *Server) serve() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				return
			}
			c.log.Warn().Err(err).Msg("control socket: accept")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			conn.Close()
			return
		}
		c.conns[conn] = struct{}{}
		c.wg.Add(1)
		c.mu.Unlock()
		go c.handle(conn)
	}
}

// handle answers the requests of one connection until it ends or idles.
func (c *Server) handle(conn net.Conn) {
	defer func() {
		conn.Close()
		c.mu.Lock()
		delete(c.conns, conn)
		c.mu.Unlock()
		c.wg.Done()
	}()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 1024), 64<<10)
	for {
		conn.SetDeadline(time.Now().Add(controlIdle))
		if !sc.Scan() {
			return
		}
		out, err := json.Marshal(c.do(sc.Bytes()))
		if err != nil {
			c.log.Error().Err(err).Msg("control socket: encoding a reply")
			return
		}
		if _, err := conn.Write(append(out, '\n')); err != nil {
			return
		}
	}
}

// do carries out one request line.
func (c *Server) do(line []byte) Reply {
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Reply{Code: CodeBadRequest, Error: "not a JSON request: " + err.Error()}
	}
	switch req.Op {
	case "stats":
		accts, err := StoreStats(c.store)
		if err != nil {
			c.log.Error().Err(err).Msg("control socket: stats")
			return Reply{Code: CodeFailed, Error: err.Error()}
		}
		n, total := c.bodies.Len()
		return Reply{OK: true, PID: os.Getpid(), Accounts: accts, Bodies: &BodyStats{n, total}}
	case "forget":
		if req.Account == "" {
			return Reply{Code: CodeBadRequest, Error: "forget needs an account"}
		}
		err := c.store.Forget(req.Account)
		switch {
		case errors.Is(err, cache.ErrInUse):
			return Reply{Code: CodeInUse, Error: err.Error()}
		case errors.Is(err, cache.ErrNoAccount):
			c.bodies.Forget(req.Account)
			return Reply{Code: CodeNoAccount, Error: err.Error()}
		case err != nil:
			c.log.Error().Err(err).Str("account", req.Account).Msg("control socket: forget")
			return Reply{Code: CodeFailed, Error: err.Error()}
		}
		c.bodies.Forget(req.Account)
		c.log.Info().Str("account", req.Account).Msg("cache forgotten")
		return Reply{OK: true, PID: os.Getpid()}
	case "verify":
		v, ok := c.store.(interface{ Verify() error })
		if !ok {
			return Reply{Code: CodeBadRequest, Error: "verify checks a bbolt cache.db; this server keeps its state in PostgreSQL"}
		}
		err := v.Verify()
		var de *cache.DamagedError
		switch {
		case errors.As(err, &de):
			c.log.Error().Err(err).Msg("control socket: cache.db is damaged; stop popbridge and move it aside")
			return Reply{Code: CodeDamaged, Error: de.Reason, PID: os.Getpid()}
		case err != nil:
			c.log.Error().Err(err).Msg("control socket: verify")
			return Reply{Code: CodeFailed, Error: err.Error()}
		}
		return Reply{OK: true, PID: os.Getpid()}
	}
	return Reply{Code: CodeBadRequest, Error: fmt.Sprintf("unknown op %q (want stats, forget or verify)", req.Op)}
}

// Close stops listening, removes the socket, ends open connections and
// waits for their requests to finish.
func (c *Server) Close() error {
	c.mu.Lock()
	c.closed = true
	for conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	err := c.ln.Close() // removes the socket file
	c.wg.Wait()
	if err != nil {
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	return nil
}

// Ask sends req to the server listening in the state directory
// dir. ok is false when none listens there.
func Ask(dir string, req Request) (reply Reply, ok bool, err error) {
	path := filepath.Join(dir, File)
	if len(path) > maxSocketPath {
		return reply, false, nil // no server could have bound it
	}
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
		return reply, false, nil
	}
	if err != nil {
		return reply, false, fmt.Errorf("control socket: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlIdle))
	line, err := json.Marshal(req)
	if err != nil {
		return reply, false, fmt.Errorf("control socket: %w", err)
	}
	if _, err := conn.Write(append(line, '\n')); err != nil {
		return reply, false, fmt.Errorf("control socket %s: %w", path, err)
	}
	resp, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return reply, false, fmt.Errorf("control socket %s: reading the reply: %w", path, err)
	}
	if err := json.Unmarshal(resp, &reply); err != nil {
		return reply, false, fmt.Errorf("control socket %s: bad reply: %w", path, err)
	}
	return reply, true, nil
}
