// Package pgtest runs a private PostgreSQL for tests, the way
// internal/dovecottest runs a private Dovecot: initdb into a fresh
// directory under /tmp, then the postgres server itself as a direct
// child, listening on 127.0.0.1 and a Unix socket in that directory, on a
// free port. Nothing of the system's clusters is used or touched.
//
// PostgreSQL refuses to run as root, so as root every command runs as
// the system user "postgres" that the Debian package creates. The
// settings favour speed over durability (fsync=off and friends): test
// data only.
//
// One server per test package (Launch in TestMain) and one database per
// test (CreateDB) is the cheap shape: initdb costs about a second,
// CREATE DATABASE a tenth of that.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/popbridge/popbridge/internal/freeport"
	"github.com/popbridge/popbridge/internal/testpeer"
)

// ErrNotInstalled is returned by Launch when no PostgreSQL server
// binaries are found.
var ErrNotInstalled = errors.New("pgtest: PostgreSQL not found in /usr/lib/postgresql/*/bin; install the Debian package postgresql")

// Server is a running private PostgreSQL.
type Server struct {
	// Dir holds data/ (the cluster), the Unix socket and postgres.log.
	Dir string
	// Port is the TCP port on 127.0.0.1 (and the socket's number).
	Port int
	// LogPath is the server's log file.
	LogPath string

	bin      string
	uid, gid int // the user the server runs as; -1 for ourselves
	dbs      atomic.Int64

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// BinDir returns the directory of the newest installed PostgreSQL's
// server binaries, or "" if there is none.
func BinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, "postgres")); err == nil && fi.Mode().IsRegular() {
			return d
		}
	}
	return ""
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start runs a PostgreSQL for the test and removes it in t.Cleanup.
// Without PostgreSQL the test is skipped, or fails when CI=true. The
// server's log is printed when the test failed.
func Start(t testing.TB) *Server {
	t.Helper()
	if BinDir() == "" {
		testpeer.Missing(t, ErrNotInstalled.Error())
	}
	s, err := Launch(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", s.Log())
		}
		s.Close()
	})
	return s
}

// ForPackage is Launch(0) for a package's TestMain, with the CI rule:
// when PostgreSQL is not installed it returns nil and no error (the
// tests skip), unless the environment has CI=true (then the error, and
// the run must fail).
func ForPackage() (*Server, error) {
	s, err := Launch(0)
	if errors.Is(err, ErrNotInstalled) && !testpeer.CI() {
		return nil, nil
	}
	return s, err
}

// Launch initialises a cluster in a new directory under the system's
// temporary directory and starts its server on port, or on a free port
// when port is 0. It returns ErrNotInstalled when PostgreSQL is missing.
// The caller must call Close. For TestMain, where there is no testing.T.
func Launch(port int) (*Server, error) {
	bin := BinDir()
	if bin == "" {
		return nil, ErrNotInstalled
	}
	s := &Server{bin: bin, uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: PostgreSQL refuses to run as root and there is no user postgres to run it as (the Debian package postgresql creates it): %w", err)
		}
		s.uid, _ = strconv.Atoi(u.Uid)
		s.gid, _ = strconv.Atoi(u.Gid)
	}
	// Not t.TempDir: its parent is private to root, and postgres must
	// enter it. Short, for the Unix socket's path.
	dir, err := os.MkdirTemp("", "pgtest")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s.Dir, s.LogPath = dir, filepath.Join(dir, "postgres.log")
	if s.uid >= 0 {
		if err := os.Chown(dir, s.uid, s.gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	start := time.Now()
	out, err := s.command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	// A free port may be taken between choosing and binding it: retry.
	for attempt := 0; ; attempt++ {
		p := port
		if p == 0 {
			if p, err = freePort(); err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
		}
		s.Port = p
		err = s.Restart()
		if err == nil {
			break
		}
		if port != 0 || attempt == 2 || !strings.Contains(err.Error(), "in use") {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "pgtest: postgres: initdb+start %v (%s)\n", time.Since(start).Round(time.Millisecond), dir)
	return s, nil
}

// command returns cmd to run as the server's user.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.Dir
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT}
	if s.uid >= 0 {
		attr.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}
	}
	cmd.SysProcAttr = attr
	return cmd
}

// Restart starts the server again after Shutdown, on the same port and
// data, and waits until it accepts connections. Launch uses it too.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("pgtest: the server is already running")
	}
	log, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer log.Close()
	cmd := s.command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.Dir, "data"),
		"-k", s.Dir, "-p", strconv.Itoa(s.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=50", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = log, log
	if s.uid >= 0 {
		os.Chown(s.LogPath, s.uid, s.gid)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		cancel()
		if err == nil {
			c.Close(context.Background())
			break
		}
		select {
		case <-done:
			return fmt.Errorf("pgtest: postgres exited during startup: %s\n%s", cmd.ProcessState, s.tail())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("pgtest: postgres not ready after 30s: %v\n%s", err, s.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.done = cmd, done
	return nil
}

// Shutdown stops the server (a fast shutdown: connections are ended) and
// keeps its data, for Restart. It does nothing when the server is down.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	s.Shutdown()
	os.RemoveAll(s.Dir)
}

// DSN returns the URL of database db over loopback TCP.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// SocketDSN returns the keyword/value DSN of database db over the Unix
// socket in Dir.
func (s *Server) SocketDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.Dir, s.Port, db)
}

// NewDB creates a fresh, empty database and returns its DSN.
func (s *Server) NewDB() (string, error) {
	name := fmt.Sprintf("t%03d", s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return s.DSN(name), nil
}

// CreateDB creates a fresh database for the test and returns its DSN.
func (s *Server) CreateDB(t testing.TB) string {
	t.Helper()
	dsn, err := s.NewDB()
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Log returns the server's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

func (s *Server) tail() string {
	l := s.Log()
	if len(l) > 4<<10 {
		l = l[len(l)-4<<10:]
	}
	return "postgres log:\n" + l
}

// freePort returns a free TCP port on 127.0.0.1 (freeport).
func freePort() (int, error) {
	ps, err := freeport.Ports(1)
	if err != nil {
		return 0, fmt.Errorf("pgtest: free port: %w", err)
	}
	return ps[0], nil
}
