package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
)

const xoUser = "ann@example.org"

// xoauthIMAP is go-imap's in-memory server whose only SASL mechanism is
// XOAUTH2, with access tokens checked against the fake authorization
// server; LOGIN (password "pw") is for the test's own setup.
type xoauthIMAP struct {
	addr string
	user *imapmemserver.User
	mu   sync.Mutex
	auth []string
}

func startXOAUTHIMAP(t *testing.T, valid func(string) bool) *xoauthIMAP {
	t.Helper()
	s := &xoauthIMAP{user: imapmemserver.NewUser(xoUser, "pw")}
	if err := s.user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &xoSession{s: s, valid: valid}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapSASLIR: {}},
		InsecureAuth: true,
		Logger:       log.New(io.Discard, "", 0),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

type xoSession struct {
	*imapmemserver.UserSession
	s     *xoauthIMAP
	valid func(string) bool
}

func (x *xoSession) Login(user, pass string) error {
	if err := x.s.user.Login(user, pass); err != nil {
		return err
	}
	x.UserSession = imapmemserver.NewUserSession(x.s.user)
	return nil
}

func (x *xoSession) AuthenticateMechanisms() []string { return []string{"XOAUTH2"} }

func (x *xoSession) Authenticate(mech string) (sasl.Server, error) {
	if mech != "XOAUTH2" {
		return nil, errors.New("unsupported mechanism")
	}
	return &xoServer{x: x}, nil
}

// xoServer is XOAUTH2 as Gmail documents it: a bad token gets a JSON
// error challenge, answered by an empty response, then NO.
type xoServer struct {
	x      *xoSession
	failed bool
}

func (s *xoServer) Next(resp []byte) ([]byte, bool, error) {
	if s.failed {
		return nil, true, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "Invalid credentials"}
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	m := regexp.MustCompile("^user=([^\x01]*)\x01auth=Bearer ([^\x01]*)\x01\x01$").FindSubmatch(resp)
	ok := m != nil && string(m[1]) == xoUser && s.x.valid(string(m[2]))
	s.x.s.mu.Lock()
	s.x.s.auth = append(s.x.s.auth, fmt.Sprint(ok))
	s.x.s.mu.Unlock()
	if !ok {
		s.failed = true
		return []byte(`{"status":"401","schemes":"bearer"}`), false, nil
	}
	s.x.UserSession = imapmemserver.NewUserSession(s.x.s.user)
	return nil, true, nil
}

func (s *xoauthIMAP) auths() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.auth, " ")
}

// TestAuthIMAPXOAUTH2 runs "popbridge auth" against the fake
// authorization server (the browser's redirect pasted on stdin), then
// serves the IMAP account, whose XOAUTH2 tokens the server refreshes
// from the stored (encrypted) refresh token, to a POP3 client; a revoked
// grant then reaches the client as -ERR [SYS/PERM].
func TestAuthIMAPXOAUTH2(t *testing.T) {
	f := oauthtest.Start(t)
	f.Rotate = true
	f.AccessTTL = 30 * time.Second // shorter than oauth.Early: every login refreshes
	up := startXOAUTHIMAP(t, f.ValidAccess)
	c, err := imapclient.DialInsecure(up.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(xoUser, "pw").Wait(); err != nil {
		t.Fatal(err)
	}
	msg := "From: x@example.org\r\nSubject: via oauth\r\n\r\nhello\r\n"
	ac := c.Append("INBOX", int64(len(msg)), nil)
	io.WriteString(ac, msg)
	ac.Close()
	if _, err := ac.Wait(); err != nil {
		t.Fatal(err)
	}
	c.Close()

	t.Setenv(oauth.KeyEnv, strings.Repeat("5a", 32))
	hash, _ := bcrypt.GenerateFromPassword([]byte("pop-pw"), bcrypt.MinCost)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
state_dir: state
log:
  format: json
accounts:
  - user: ann
    password_hash: "%s"
    backend:
      type: imap
      addr: %s
      tls: none
      auth: xoauth2
      username: %s
      oauth2:
        provider: custom
        client_id: %s
        auth_url: %s
        token_url: %s
        scopes: [mail, offline_access]
`, hash, up.addr, xoUser, f.ClientID, f.AuthURL, f.TokenURL)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	// popbridge auth, the browser elsewhere: the redirect is pasted.
	stdout := authPasted(t, "ann", path)
	tokFile := filepath.Join(dir, "state", "tokens", "ann.json")
	fi, err := os.Stat(tokFile)
	if err != nil || fi.Mode().Perm() != 0o600 || !strings.Contains(stdout.String(), "saved to "+tokFile+" (encrypted)") {
		t.Fatalf("token file: %v %v\n%s", fi, err, stdout)
	}
	t.Logf("oauth: popbridge auth stored %s after the pasted redirect", tokFile)

	addr, log, stop := startServe(t, path)
	p := dialPOP3(t, addr)
	p.cmd("USER ann")
	if s := p.cmd("PASS pop-pw"); s != "+OK Logged in." {
		t.Fatalf("PASS %q\n%s", s, log)
	}
	if s := p.cmd("STAT"); !strings.HasPrefix(s, "+OK 1 ") {
		t.Fatalf("STAT %q", s)
	}
	if got := p.multi("RETR 1"); got != strings.ReplaceAll(msg, "\r\n", "\n") {
		t.Fatalf("RETR 1: %q", got)
	}
	p.cmd("QUIT")
	t.Logf("oauth: POP3 session served over IMAP XOAUTH2; upstream auths %q, refreshes at the fake %d", up.auths(), f.Refreshes())
	if f.Refreshes() < 1 || !strings.HasPrefix(up.auths(), "true") {
		t.Fatalf("auths %q, refreshes %d", up.auths(), f.Refreshes())
	}

	f.RevokeAll()
	p = dialPOP3(t, addr)
	p.cmd("USER ann")
	if s := p.cmd("PASS pop-pw"); s != "-ERR [SYS/PERM] OAuth2 grant expired or revoked; the owner must run popbridge auth" {
		t.Fatalf("revoked grant: PASS %q\n%s", s, log)
	}
	waitFor(t, "the invalid_grant log line", func() string {
		for _, l := range strings.Split(log.String(), "\n") {
			if strings.Contains(l, "invalid_grant") && strings.Contains(l, `"account":"ann"`) {
				return l
			}
		}
		return ""
	})
	t.Logf("oauth: revoked grant answered with -ERR [SYS/PERM]")
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	if bytes.Contains([]byte(log.String()+stdout.String()), []byte("rt-")) || strings.Contains(log.String(), "at-") {
		t.Fatalf("a token appears in the output:\n%s\n%s", log, stdout)
	}
}

// TestAuthDevice runs popbridge auth with the device flow against the
// fake (one authorization_pending poll), for a pop3 account, and checks
// the usage errors.
func TestAuthDevice(t *testing.T) {
	f := oauthtest.Start(t)
	f.DevicePending = 1
	hash, _ := bcrypt.GenerateFromPassword([]byte("pop-pw"), bcrypt.MinCost)
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
accounts:
  - user: bob
    password_hash: "%s"
    backend:
      type: pop3
      addr: 127.0.0.1:1
      tls: none
      auth: xoauth2
      username: bob@example.org
      oauth2:
        provider: custom
        client_id: %s
        device_url: %s
        token_url: %s
        scopes: [pop]
  - user: plain
    password_hash: "%s"
    backend:
      type: maildir
      path: md
`, hash, f.ClientID, f.DeviceURL, f.TokenURL, hash)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", "auth", "-config", path, "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "ABCD-EFGH") || !strings.Contains(r.stdout, "device flow") {
		t.Fatalf("auth -flow device: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	tok, err := (&oauth.Store{Dir: filepath.Join(dir, "popbridge-state", "tokens")}).Load("bob")
	if err != nil || !f.ValidAccess(tok.AccessToken) {
		t.Fatalf("stored token: %v", err)
	}
	t.Logf("oauth: device flow polls %q", f.Polls())

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"auth", "-config", path}, 2, "name the ACCOUNT"},
		{[]string{"auth", "bob"}, 2, "-config is required"},
		{[]string{"auth", "nobody", "-config", path}, 1, `no account "nobody"`},
		{[]string{"auth", "plain", "-config", path}, 1, "has no oauth2 section"},
		{[]string{"auth", "bob", "-config", path, "-flow", "carrier-pigeon"}, 2, `unknown -flow "carrier-pigeon"`},
		{[]string{"auth", "bob", "-config", path, "-flow", "loopback"}, 1, "the loopback flow needs auth_url"},
		{[]string{"auth", "-h"}, 0, "Usage: popbridge auth ACCOUNT -config FILE"},
	} {
		r := runCmd(t, "", c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", c.args, r.code, r.stderr, c.code, c.want)
		}
	}
}

// authURLFrom waits for the authorization URL that popbridge auth prints
// on stdout and returns it.
func authURLFrom(t *testing.T, stdout *syncBuffer) string {
	t.Helper()
	return waitFor(t, "the authorization URL", func() string {
		if m := regexp.MustCompile(`(?m)^  (http://\S+/authorize\?\S+)$`).FindStringSubmatch(stdout.String()); m != nil {
			return m[1]
		}
		return ""
	})
}

// browserRedirect opens authURL as the user's browser would and returns
// where the provider sends the browser back to, without going there.
func browserRedirect(t *testing.T, authURL string) string {
	t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Location")
}

// authPasted runs popbridge auth ACCOUNT -config path with the browser
// elsewhere: the URL the browser ends on is pasted, as on a headless
// server. It fails t unless auth exits 0 within 10 s, and returns auth's
// stdout.
func authPasted(t *testing.T, account, path string) *syncBuffer {
	t.Helper()
	pr, pw := io.Pipe()
	defer pw.Close()
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"auth", account, "-config", path}, pr, stdout, stderr)
	}()
	io.WriteString(pw, browserRedirect(t, authURLFrom(t, stdout))+"\n")
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("auth exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("auth did not finish:\n%s", stdout)
	}
	return stdout
}
