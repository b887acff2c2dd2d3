package main

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

// Files in the state directory.
const (
	storeFile   = "cache.db"     // the cache store, held by one process
	controlFile = "control.sock" // the running server's control socket
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path
// holds 108 bytes with the final NUL).
const maxSocketPath = 107

// state is what every backend of one popbridge process shares.
type state struct {
	dir string
	// tokens, if set, is the state directory whose tokens/ the OAuth2
	// sources use instead of dir's (check runs on a scratch store but
	// must use the real tokens).
	tokens string
	store  *cache.Store
	bodies *cache.Bodies // nil keeps no bodies
	// log is the server's log, for backends that report on their own
	// (imap: UIDVALIDITY changes); nil logs nothing.
	log *zerolog.Logger
	// metrics feeds listen.http; nil (no listen.http) records nothing.
	metrics *metrics
	// workers are the backends working in the background (sync.go).
	workers workers
}

// tokenHome is the directory holding tokens/.
func (st *state) tokenHome() string {
	if st.tokens != "" {
		return st.tokens
	}
	return st.dir
}

// openState opens the store in dir, creating dir 0700 if missing.
func openState(dir string, bodies *cache.Bodies) (*state, error) {
	store, err := cache.Open(filepath.Join(dir, storeFile), nil)
	if errors.Is(err, cache.ErrDamaged) {
		return nil, damagedStore(err)
	}
	if err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	return &state{dir: dir, store: store, bodies: bodies}, nil
}

// damagedStore adds to the error of a damaged cache.db what to do, and
// what is lost with the file. Other errors are returned as they are.
func damagedStore(err error) error {
	var de *cache.DamagedError
	if !errors.As(err, &de) {
		return err
	}
	return damagedStoreError{de}
}

// damagedStoreError is a DamagedError explained for people.
type damagedStoreError struct{ *cache.DamagedError }

func (e damagedStoreError) Error() string {
	return fmt.Sprintf("%s is damaged: %s. To recover, stop popbridge, move the file aside (mv %s %s.damaged) and start popbridge again: "+
		"it creates a new, empty %s. Lost with the old file: the tombstones of messages hidden from POP3 "+
		"(on_delete: keep, imap seen, gmail mark-read and download_once), which show again, so mail clients that leave "+
		"mail on the server may download them again; and the message sizes and UIDLs learnt from upstreams, "+
		"which are learnt again at the next login (a first login on a large mailbox takes longer). Nothing upstream is changed.",
		e.Path, e.Reason, e.Path, e.Path, storeFile)
}

func (e damagedStoreError) Unwrap() error { return e.DamagedError }

// close stops the backends' background work, then closes the store,
// logging a failure.
func (s *state) close(log zerolog.Logger) {
	s.closeBackends()
	if err := s.store.Close(); err != nil {
		log.Error().Err(err).Msg("closing the cache store")
	}
}

// The control protocol: one JSON object a line each way, on a unix
// socket in the state directory. Requests are {"op":"stats"},
// {"op":"forget","account":"NAME"} and {"op":"verify"}; every request
// gets one reply.

// controlRequest is a request line.
type controlRequest struct {
	Op      string `json:"op"`
	Account string `json:"account,omitempty"`
}

// Reply codes beside "ok": false.
const (
	codeNoAccount  = "no-account"
	codeInUse      = "in-use"
	codeBadRequest = "bad-request"
	codeFailed     = "failed"
	codeDamaged    = "damaged" // verify: Error is the reason
)

// controlReply is a reply line.
type controlReply struct {
	OK       bool           `json:"ok"`
	Code     string         `json:"code,omitempty"`
	Error    string         `json:"error,omitempty"`
	PID      int            `json:"pid,omitempty"`
	Accounts []accountStats `json:"accounts,omitempty"`
	Bodies   *bodyStats     `json:"bodies,omitempty"`
}

// accountStats is one account's line of stats.
type accountStats struct {
	Account    string `json:"account"`
	Messages   int    `json:"messages"`
	Tombstones int    `json:"tombstones"`
	Bytes      int64  `json:"bytes"`      // sum of the recorded message sizes
	DiskBytes  int64  `json:"disk_bytes"` // file pages the account uses
}

// bodyStats describes the running server's body cache.
type bodyStats struct {
	Count int   `json:"count"`
	Bytes int64 `json:"bytes"`
}

func storeStats(store *cache.Store) ([]accountStats, error) {
	st, err := store.Stats()
	if err != nil {
		return nil, err
	}
	out := make([]accountStats, 0, len(st))
	for _, a := range st {
		out = append(out, accountStats{a.Account, a.Messages, a.Tombstones, a.Bytes, a.DiskBytes})
	}
	return out, nil
}

// controlIdle bounds the wait for a control request.
const controlIdle = 30 * time.Second

// controlServer answers the control protocol for a running server.
type controlServer struct {
	st   *state
	ln   *net.UnixListener
	path string
	log  zerolog.Logger
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// startControl listens on the state directory's control socket (mode
// 0600), replacing a stale socket left by a process that died, and serves
// it until Close.
func startControl(st *state, log zerolog.Logger) (*controlServer, error) {
	path := filepath.Join(st.dir, controlFile)
	ln, err := listenControl(path)
	if err != nil {
		return nil, err
	}
	c := &controlServer{st: st, ln: ln, path: path, log: log, conns: map[net.Conn]struct{}{}}
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

func (c *controlServer) serve() {
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
func (c *controlServer) handle(conn net.Conn) {
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
func (c *controlServer) do(line []byte) controlReply {
	var req controlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return controlReply{Code: codeBadRequest, Error: "not a JSON request: " + err.Error()}
	}
	switch req.Op {
	case "stats":
		accts, err := storeStats(c.st.store)
		if err != nil {
			c.log.Error().Err(err).Msg("control socket: stats")
			return controlReply{Code: codeFailed, Error: err.Error()}
		}
		n, total := c.st.bodies.Len()
		return controlReply{OK: true, PID: os.Getpid(), Accounts: accts, Bodies: &bodyStats{n, total}}
	case "forget":
		if req.Account == "" {
			return controlReply{Code: codeBadRequest, Error: "forget needs an account"}
		}
		err := c.st.store.Forget(req.Account)
		switch {
		case errors.Is(err, cache.ErrInUse):
			return controlReply{Code: codeInUse, Error: err.Error()}
		case errors.Is(err, cache.ErrNoAccount):
			c.st.bodies.Forget(req.Account)
			return controlReply{Code: codeNoAccount, Error: err.Error()}
		case err != nil:
			c.log.Error().Err(err).Str("account", req.Account).Msg("control socket: forget")
			return controlReply{Code: codeFailed, Error: err.Error()}
		}
		c.st.bodies.Forget(req.Account)
		c.log.Info().Str("account", req.Account).Msg("cache forgotten")
		return controlReply{OK: true, PID: os.Getpid()}
	case "verify":
		err := c.st.store.Verify()
		var de *cache.DamagedError
		switch {
		case errors.As(err, &de):
			c.log.Error().Err(err).Msg("control socket: cache.db is damaged; stop popbridge and move it aside")
			return controlReply{Code: codeDamaged, Error: de.Reason, PID: os.Getpid()}
		case err != nil:
			c.log.Error().Err(err).Msg("control socket: verify")
			return controlReply{Code: codeFailed, Error: err.Error()}
		}
		return controlReply{OK: true, PID: os.Getpid()}
	}
	return controlReply{Code: codeBadRequest, Error: fmt.Sprintf("unknown op %q (want stats, forget or verify)", req.Op)}
}

// Close stops listening, removes the socket, ends open connections and
// waits for their requests to finish.
func (c *controlServer) Close() error {
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

// askServer sends req to the server listening in the state directory
// dir. ok is false when none listens there.
func askServer(dir string, req controlRequest) (reply controlReply, ok bool, err error) {
	path := filepath.Join(dir, controlFile)
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
