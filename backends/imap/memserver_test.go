package imap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
)

const (
	memUser     = "user@example.org"
	memPassword = "password"
	goodToken   = "ya29.good-token"
)

// memServer is go-imap's in-memory IMAP server with one user, who may log
// in with a password (LOGIN, AUTHENTICATE PLAIN) or with the access token
// goodToken (AUTHENTICATE XOAUTH2, OAUTHBEARER), checked here.
type memServer struct {
	addr string
	user *imapmemserver.User
	srv  *imapserver.Server

	mu      sync.Mutex
	auths   []string   // "MECH user token-ok" per AUTHENTICATE
	fetches []imap.UID // UID of each FETCH of a body section, in order
	// standIns are UIDs the server answers with courierStandIn, as
	// Courier-IMAP does for a message another client expunged.
	standIns map[imap.UID]bool
}

// courierStandIn is what Courier-IMAP 5 sends for a message expunged by
// another client: 129 octets from root@localhost.
const courierStandIn = "From: root@localhost\r\nSubject: message unavailable\r\n\r\n" +
	"This message is no longer available on the server. Sorry, it was removed.\r\n"

// standIn makes FETCHes of uid answer courierStandIn (the message itself
// stays, so this session's listing still has its real size).
func (ms *memServer) standIn(uid imap.UID) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.standIns == nil {
		ms.standIns = map[imap.UID]bool{}
	}
	ms.standIns[uid] = true
}

func (ms *memServer) isStandIn(uid imap.UID) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.standIns[uid]
}

// writeStandIn answers a FETCH of uid with courierStandIn: its size, its
// sections, its partials. The sequence number is the UID: the tests
// using it expunge nothing.
func writeStandIn(w *imapserver.FetchWriter, uid imap.UID, options *imap.FetchOptions) error {
	rw := w.CreateMessage(uint32(uid))
	rw.WriteUID(uid)
	if options.RFC822Size {
		rw.WriteRFC822Size(int64(len(courierStandIn)))
	}
	for _, sec := range options.BodySection {
		data := courierStandIn
		header, text, _ := strings.Cut(courierStandIn, "\r\n\r\n")
		switch sec.Specifier {
		case imap.PartSpecifierHeader:
			data = header + "\r\n\r\n"
		case imap.PartSpecifierText:
			data = text
		}
		if p := sec.Partial; p != nil {
			data = data[min(int(p.Offset), len(data)):]
			data = data[:min(int(p.Size), len(data))]
		}
		wc := rw.WriteBodySection(sec, int64(len(data)))
		io.WriteString(wc, data)
		if err := wc.Close(); err != nil {
			return err
		}
	}
	return rw.Close()
}

func startMemServer(t *testing.T, caps imap.CapSet, mechs ...string) *memServer {
	t.Helper()
	ms := &memServer{user: imapmemserver.NewUser(memUser, memPassword)}
	if err := ms.user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	if mechs == nil {
		mechs = []string{"PLAIN", "XOAUTH2", "OAUTHBEARER"}
	}
	ms.srv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &saslSession{ms: ms, mechs: mechs}, nil, nil
		},
		Caps:         caps,
		InsecureAuth: true,
		Logger:       log.New(io.Discard, "", 0),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms.addr = ln.Addr().String()
	go ms.srv.Serve(ln)
	t.Cleanup(func() { ms.srv.Close() })
	return ms
}

func (ms *memServer) record(s string) {
	ms.mu.Lock()
	ms.auths = append(ms.auths, s)
	ms.mu.Unlock()
}

func (ms *memServer) authLog() string {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return strings.Join(ms.auths, "; ")
}

// client logs in with a password, for setting up and checking the folder.
func (ms *memServer) client(t *testing.T) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(ms.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(memUser, memPassword).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

type saslSession struct {
	*imapmemserver.UserSession // nil until authenticated
	ms                         *memServer
	mechs                      []string
}

func (s *saslSession) Login(user, pass string) error {
	if err := s.ms.user.Login(user, pass); err != nil {
		return err
	}
	s.UserSession = imapmemserver.NewUserSession(s.ms.user)
	return nil
}

func (s *saslSession) AuthenticateMechanisms() []string { return s.mechs }

// Fetch records FETCHes of body sections.
func (s *saslSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if len(options.BodySection) > 0 {
		if set, ok := numSet.(imap.UIDSet); ok {
			if uids, ok := set.Nums(); ok {
				s.ms.mu.Lock()
				s.ms.fetches = append(s.ms.fetches, uids...)
				s.ms.mu.Unlock()
			}
		}
	}
	if set, ok := numSet.(imap.UIDSet); ok {
		if uids, ok := set.Nums(); ok && slices.ContainsFunc(uids, s.ms.isStandIn) {
			for _, uid := range uids {
				var err error
				if s.ms.isStandIn(uid) {
					err = writeStandIn(w, uid, options)
				} else {
					err = s.UserSession.Fetch(w, imap.UIDSetNum(uid), options)
				}
				if err != nil {
					return err
				}
			}
			return nil
		}
	}
	return s.UserSession.Fetch(w, numSet, options)
}

func (ms *memServer) fetchLog() []imap.UID {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return slices.Clone(ms.fetches)
}

var errBadToken = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "Invalid credentials"}

func (s *saslSession) Authenticate(mech string) (sasl.Server, error) {
	check := func(user, token string) bool {
		ok := user == memUser && token == goodToken
		s.ms.record(fmt.Sprintf("%s %s %v", mech, user, ok))
		if ok {
			s.UserSession = imapmemserver.NewUserSession(s.ms.user)
		}
		return ok
	}
	switch mech {
	case "PLAIN":
		return sasl.NewPlainServer(func(identity, user, pass string) error { return s.Login(user, pass) }), nil
	case "XOAUTH2":
		return &xoauth2Server{check: check}, nil
	case "OAUTHBEARER":
		return noAuthErr{sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			if !check(o.Username, o.Token) {
				return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
			}
			return nil
		})}, nil
	}
	return nil, errors.New("unsupported mechanism")
}

// noAuthErr reports go-sasl's OAUTHBEARER failure as a NO
// [AUTHENTICATIONFAILED], as real servers do (imapserver would send NO
// [SERVERBUG] for a plain error).
type noAuthErr struct{ sasl.Server }

func (n noAuthErr) Next(resp []byte) ([]byte, bool, error) {
	ch, done, err := n.Server.Next(resp)
	if err != nil {
		err = errBadToken
	}
	return ch, done, err
}

// xoauth2Server is Gmail's XOAUTH2 as documented: a bad token gets a
// base64 JSON error challenge, to which the client must send an empty
// response; then NO.
type xoauth2Server struct {
	check  func(user, token string) bool
	failed bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.failed {
		if len(resp) != 0 {
			return nil, true, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "expected an empty response"}
		}
		return nil, true, errBadToken
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	user, token, ok := parseXOAUTH2(resp)
	if !ok || !x.check(user, token) {
		x.failed = true
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
	}
	return nil, true, nil
}

func parseXOAUTH2(resp []byte) (user, token string, ok bool) {
	rest, ok := bytes.CutSuffix(resp, []byte("\x01\x01"))
	if !ok {
		return "", "", false
	}
	u, a, ok := bytes.Cut(rest, []byte("\x01"))
	if !ok || !bytes.HasPrefix(u, []byte("user=")) || !bytes.HasPrefix(a, []byte("auth=Bearer ")) {
		return "", "", false
	}
	return string(u[5:]), string(a[12:]), true
}

func tokens(tok string) oauth2.TokenSource {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})
}

var rev2 = imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}}

// TestOAuth logs in with XOAUTH2 and OAUTHBEARER against a server that
// checks the token: a good token lists the folder, a rejected one gives
// -ERR [AUTH] promptly.
func TestOAuth(t *testing.T) {
	ms := startMemServer(t, rev2)
	appendMessages(t, ms.client(t), "INBOX", 3, 200)
	for _, auth := range []modes.Auth{modes.AuthXOAUTH2, modes.AuthOAuthBearer} {
		for _, tok := range []string{goodToken, "expired-token"} {
			logs := &logRecorder{}
			b := newBackend(t, imapb.Options{Addr: ms.addr, TLS: modes.TLSNone, Auth: auth, Username: memUser,
				TokenSource: tokens(tok), Logger: logs.logger(), CommandTimeout: 5 * time.Second})
			c, err := pop3test.Dial(serve(t, b))
			if err != nil {
				t.Fatal(err)
			}
			within(t, 2*time.Second, fmt.Sprintf("%s login with %s", auth, tok), func() {
				err = c.Login("x", "y")
			})
			switch {
			case tok == goodToken && err != nil:
				t.Errorf("%s with a good token: %v", auth, err)
			case tok == goodToken:
				if got := cmd(t, c, "STAT"); !strings.HasPrefix(got, "+OK 3 ") {
					t.Errorf("%s: STAT %q", auth, got)
				}
				quit(t, c)
			case !isPOPErr(err, "-ERR [AUTH]"):
				t.Errorf("%s with a rejected token: %v, want -ERR [AUTH]", auth, err)
			}
			c.Close()
			if strings.Contains(logs.text(), tok) {
				t.Errorf("the token appears in the log")
			}
		}
	}
	want := "XOAUTH2 user@example.org true; XOAUTH2 user@example.org false; OAUTHBEARER user@example.org true; OAUTHBEARER user@example.org false"
	if got := ms.authLog(); got != want {
		t.Fatalf("server saw %q, want %q", got, want)
	}

	// A server that does not offer the mechanism: the operator's problem.
	plainOnly := startMemServer(t, rev2, "PLAIN")
	b := newBackend(t, imapb.Options{Addr: plainOnly.addr, TLS: modes.TLSNone, Auth: modes.AuthXOAUTH2, Username: memUser, TokenSource: tokens(goodToken)})
	if _, err := b.OpenMaildrop(context.Background(), backends.Login{}); !errors.Is(err, proxy.ErrPermanent) {
		t.Fatalf("XOAUTH2 to a server without it: %v, want [SYS/PERM]", err)
	}
	t.Logf("imap: XOAUTH2 and OAUTHBEARER checked by a server: good tokens log in, rejected ones give -ERR [AUTH]")
}

// TestSASLErrorChallenge checks that a rejected token leaves the
// connection usable: the error challenge is answered, so the server ends
// AUTHENTICATE with NO and the next command is a command.
func TestSASLErrorChallenge(t *testing.T) {
	ms := startMemServer(t, rev2)
	host, port := "127.0.0.1", 0
	fmt.Sscanf(ms.addr[strings.LastIndexByte(ms.addr, ':')+1:], "%d", &port)
	for name, cl := range map[string]sasl.Client{
		"XOAUTH2":     imapb.NewXOAUTH2Client(memUser, "bad"),
		"OAUTHBEARER": imapb.NewOAuthBearerClient(memUser, "bad", host, port),
	} {
		c, err := imapclient.DialInsecure(ms.addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ie *imap.Error
		if err := c.Authenticate(cl); !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo {
			t.Errorf("%s with a bad token: %v, want NO", name, err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Noop().Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: NOOP after the failure: %v", name, err)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("%s: NOOP after the failure hangs: the connection is out of step", name)
		}
		c.Close()
	}
}

// TestWithoutUIDPLUS runs the delete policies against a server without
// UIDPLUS and MOVE: EXPUNGE only when no other message is \Deleted, COPY
// instead of MOVE.
func TestWithoutUIDPLUS(t *testing.T) {
	ms := startMemServer(t, imap.CapSet{imap.CapIMAP4rev1: {}})
	ic := ms.client(t)
	appendMessages(t, ic, "INBOX", 6, 200)
	if err := ic.Create("Archive", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	store := openStore(t, t.TempDir())
	session := func(policy modes.OnDelete, dele ...int) (listed []string) {
		t.Helper()
		logs := &logRecorder{}
		b := newBackend(t, imapb.Options{Addr: ms.addr, TLS: modes.TLSNone, Username: memUser, Password: memPassword,
			OnDelete: policy, Store: store, Logger: logs.logger()})
		c := popLogin(t, serve(t, b), "x", "y")
		listed = uidlList(t, c)
		for _, n := range dele {
			cmd(t, c, fmt.Sprintf("DELE %d", n))
		}
		if got := quit(t, c); !strings.HasPrefix(got, "+OK") {
			t.Fatalf("QUIT: %q", got)
		}
		return listed
	}
	count := func(folder string) (n, deleted int) {
		for _, f := range folderState(t, ic, folder) {
			n++
			if hasFlag(f, imap.FlagDeleted) {
				deleted++
			}
		}
		return n, deleted
	}

	// Nobody else has \Deleted messages: EXPUNGE.
	session(modes.Expunge, 1)
	if n, del := count("INBOX"); n != 5 || del != 0 {
		t.Fatalf("after expunge: %d messages, %d \\Deleted; want 5, 0", n, del)
	}
	// Another client marked message 5 \Deleted: ours stay, flagged and
	// hidden; the other one is not expunged.
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.SeqSetNum(5), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	before := session(modes.Expunge, 1)
	if n, del := count("INBOX"); n != 5 || del != 2 {
		t.Fatalf("with a foreign \\Deleted message: %d messages, %d \\Deleted; want 5, 2", n, del)
	}
	after := session(modes.Move("Archive"), 1)
	if len(after) != 4 || slices.Contains(after, before[0]) {
		t.Fatalf("listing after the hidden delete: %v (before %v)", after, before)
	}
	// move: COPY, then the same rule: message 5 is still \Deleted, so the
	// moved message stays in INBOX (flagged) and a copy is in Archive.
	if n, del := count("Archive"); n != 1 || del != 0 {
		t.Fatalf("Archive: %d messages, %d \\Deleted; want 1, 0", n, del)
	}
	if n, del := count("INBOX"); n != 5 || del != 3 {
		t.Fatalf("INBOX after move: %d messages, %d \\Deleted; want 5, 3", n, del)
	}
	t.Logf("imap: without UIDPLUS, EXPUNGE only when no foreign \\Deleted message; otherwise flagged and hidden; COPY for MOVE")
}

// TestUIDValidityChange recreates the folder upstream: every UIDL changes,
// the log says why, and messages hidden by keep are listed again.
func TestUIDValidityChange(t *testing.T) {
	ms := startMemServer(t, rev2)
	ic := ms.client(t)
	appendMessages(t, ic, "INBOX", 3, 200)
	logs := &logRecorder{}
	b := newBackend(t, imapb.Options{Addr: ms.addr, TLS: modes.TLSNone, Username: memUser, Password: memPassword,
		OnDelete: modes.Keep, Store: openStore(t, t.TempDir()), Logger: logs.logger()})
	addr := serve(t, b)
	c := popLogin(t, addr, "x", "y")
	first := uidlList(t, c)
	cmd(t, c, "DELE 2")
	quit(t, c)
	c = popLogin(t, addr, "x", "y")
	if got := uidlList(t, c); len(got) != 2 {
		t.Fatalf("after keep: %v", got)
	}
	quit(t, c)

	if err := ic.Delete("INBOX").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Create("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMessages(t, ic, "INBOX", 3, 200)
	c = popLogin(t, addr, "x", "y")
	second := uidlList(t, c)
	quit(t, c)
	if len(second) != 3 {
		t.Fatalf("after the folder was recreated: %v, want 3 messages (nothing hidden)", second)
	}
	for _, u := range second {
		if slices.Contains(first, u) {
			t.Fatalf("UIDL %s survived a UIDVALIDITY change (%v -> %v)", u, first, second)
		}
	}
	l := logs.last(`UIDVALIDITY of "INBOX" changed: the server renumbered the folder, so every message gets a new UIDL and POP3 clients that keep mail on the server will download it again`)
	if l == nil || l["forgotten"] != float64(3) || l["unhidden"] != float64(1) {
		t.Fatalf("no UIDVALIDITY log line with forgotten=3 unhidden=1:\n%s", logs.text())
	}
	if got := logs.syncLine(t); got != "cold fetched=3 search=false" {
		t.Errorf("sync after the change: %s", got)
	}
}

// cutter forwards TCP connections to an upstream and can cut them all,
// as a server restart or a NAT timeout would.
type cutter struct {
	addr     string
	upstream string
	mu       sync.Mutex
	conns    []net.Conn
	dials    int
}

func startCutter(t *testing.T, upstream string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &cutter{addr: ln.Addr().String(), upstream: upstream}
	t.Cleanup(func() { ln.Close(); k.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			k.mu.Lock()
			k.conns = append(k.conns, c, u)
			k.dials++
			k.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return k
}

func (k *cutter) cut() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		c.Close()
	}
	k.conns = nil
}

func (k *cutter) dialCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dials
}

// TestReconnect: the IMAP connection dies while the POP3 client is idle;
// the next command dials again and the session goes on, QUIT included.
func TestReconnect(t *testing.T) {
	ms := startMemServer(t, rev2)
	appendMessages(t, ms.client(t), "INBOX", 3, 200)
	k := startCutter(t, ms.addr)
	b := newBackend(t, imapb.Options{Addr: k.addr, TLS: modes.TLSNone, Username: memUser, Password: memPassword})
	c := popLogin(t, serve(t, b), "x", "y")
	multi(t, c, "RETR 1")
	k.cut()
	time.Sleep(50 * time.Millisecond)
	multi(t, c, "RETR 2")
	cmd(t, c, "DELE 3")
	k.cut()
	if got := quit(t, c); got != "+OK Logging out, 1 messages deleted." {
		t.Fatalf("QUIT after a cut: %q", got)
	}
	// RETR 2 may need no new connection: RETR 1 sent its FETCH ahead,
	// and the reply may have arrived before the cut.
	if n := k.dialCount(); n < 2 || n > 3 {
		t.Errorf("%d connections, want 2 or 3", n)
	}
	if n := len(folderState(t, ms.client(t), "INBOX")); n != 2 {
		t.Fatalf("INBOX has %d messages, want 2", n)
	}
}

// TestTimeouts: a server that accepts but never greets, and one that
// stalls mid-command, fail the login within the timeouts or the context.
func TestTimeouts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the test ends
		}
	}()
	b := newBackend(t, imapb.Options{Addr: ln.Addr().String(), TLS: modes.TLSNone, Username: "u", Password: "p",
		CommandTimeout: 300 * time.Millisecond})
	within(t, time.Second, "login to a silent server (command timeout)", func() {
		if _, err := b.OpenMaildrop(context.Background(), backends.Login{}); !errors.Is(err, proxy.ErrTemporary) {
			t.Errorf("silent server: %v, want [SYS/TEMP]", err)
		}
	})
	b = newBackend(t, imapb.Options{Addr: ln.Addr().String(), TLS: modes.TLSImplicit, Username: "u", Password: "p"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	within(t, time.Second, "TLS login to a silent server (context)", func() {
		if _, err := b.OpenMaildrop(ctx, backends.Login{}); !errors.Is(err, proxy.ErrTemporary) {
			t.Errorf("silent TLS server: %v, want [SYS/TEMP]", err)
		}
	})
}

// TestSlowReader: the command timeout bounds the server's silences, not
// the whole download, so a message read more slowly than the timeout
// (a slow POP3 client) still arrives whole.
func TestSlowReader(t *testing.T) {
	ms := startMemServer(t, rev2)
	appendMessages(t, ms.client(t), "INBOX", 1, 1<<20)
	b := newBackend(t, imapb.Options{Addr: ms.addr, TLS: modes.TLSNone, Username: memUser, Password: memPassword,
		CommandTimeout: 200 * time.Millisecond})
	mb, err := b.OpenMaildrop(context.Background(), backends.Login{})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	list, err := mb.List(context.Background())
	if err != nil || len(list) != 1 {
		t.Fatalf("List: %v %v", list, err)
	}
	rc, err := mb.Open(context.Background(), list[0].UID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	start := time.Now()
	buf := make([]byte, 128<<10)
	var n int64
	for {
		k, err := rc.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d octets and %v: %v", n, time.Since(start), err)
		}
		time.Sleep(60 * time.Millisecond)
	}
	if n != list[0].Size || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("read %d of %d octets in %v", n, list[0].Size, time.Since(start))
	}
}

// TestFetchAhead: after RETR n, the FETCH of message n+1 is sent before
// the client asks, and RETR n+1 uses it; while the client goes on in
// order, each FETCH ahead asks for twice as many messages. Any other
// command drops it.
func TestFetchAhead(t *testing.T) {
	ms := startMemServer(t, rev2)
	appendMessages(t, ms.client(t), "INBOX", 9, 300)
	b := newBackend(t, imapb.Options{Addr: ms.addr, TLS: modes.TLSNone, Username: memUser, Password: memPassword})
	c := popLogin(t, serve(t, b), "x", "y")
	fetched := func(want ...imap.UID) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for !slices.Equal(ms.fetchLog(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("FETCHes of UIDs %v, want %v", ms.fetchLog(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	retr := func(n int) {
		t.Helper()
		got := multi(t, c, fmt.Sprintf("RETR %d", n))
		if want := fmt.Sprintf("Subject: message %d\r\n", n-1); !strings.Contains(string(got), want) {
			t.Fatalf("RETR %d served %q", n, got[:40])
		}
	}
	retr(1)
	fetched(1, 2) // 2 went ahead, unasked
	retr(2)
	fetched(1, 2, 3, 4) // then 3 and 4 in one FETCH
	// TOP of a small message fetches it whole: not message 3, so the
	// FETCH ahead is dropped; then message 2 goes ahead.
	multi(t, c, "TOP 1 0")
	fetched(1, 2, 3, 4, 1, 2)
	retr(3)
	fetched(1, 2, 3, 4, 1, 2, 3, 4)
	retr(4)
	fetched(1, 2, 3, 4, 1, 2, 3, 4, 5, 6)
	// Skipping message 5 of the FETCH ahead: its reply is dropped.
	retr(6)
	fetched(1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	retr(7)
	retr(8)
	retr(9)
	fetched(1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	cmd(t, c, "DELE 4")
	if got := quit(t, c); got != "+OK Logging out, 1 messages deleted." {
		t.Fatalf("QUIT with a FETCH ahead outstanding: %q", got)
	}
}

// TestFetchAheadExpunged: a message expunged by another client before a
// FETCH ahead of several messages reached the server has no reply in it;
// RETR of it gives -ERR, the messages around it are served whole, and no
// message gets \Seen.
func TestFetchAheadExpunged(t *testing.T) {
	ms := startMemServer(t, rev2)
	ic := ms.client(t)
	appendMessages(t, ic, "INBOX", 6, 300)
	b := newBackend(t, imapb.Options{Addr: ms.addr, TLS: modes.TLSNone, Username: memUser, Password: memPassword})
	c := popLogin(t, serve(t, b), "x", "y")
	retr := func(n int) {
		t.Helper()
		got := multi(t, c, fmt.Sprintf("RETR %d", n))
		if want := fmt.Sprintf("Subject: message %d\r\n", n-1); !strings.Contains(string(got), want) {
			t.Fatalf("RETR %d served %q", n, got[:40])
		}
	}
	retr(1) // 2 goes ahead
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.UIDSetNum(4), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	retr(2) // then 3 and 4 in one FETCH, which has no reply for 4
	retr(3)
	if _, err := c.Cmd("RETR 4"); !isPOPErr(err, "-ERR Message was removed") {
		t.Fatalf("RETR of the expunged message: %v", err)
	}
	retr(5)
	retr(6)
	if got := quit(t, c); got != "+OK Logging out, 0 messages deleted." {
		t.Fatalf("QUIT: %q", got)
	}
	msgs, err := ic.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil || len(msgs) != 5 {
		t.Fatalf("INBOX: %d messages, %v", len(msgs), err)
	}
	for _, m := range msgs {
		if slices.Contains(m.Flags, imap.FlagSeen) {
			t.Errorf("UID %d has \\Seen", m.UID)
		}
	}
}

// TestStandInForExpunged: a server that answers the FETCH of a message
// another client expunged with a stand-in of another size (Courier-IMAP)
// gets -ERR for RETR and TOP of that message, whatever path fetches it
// (on its own, in a FETCH sent ahead, TOP of a small or a large message),
// never the stand-in; the other messages are served whole.
func TestStandInForExpunged(t *testing.T) {
	if n := len(courierStandIn); n != 129 {
		t.Fatalf("the stand-in has %d octets, want 129", n)
	}
	ms := startMemServer(t, rev2)
	ic := ms.client(t)
	appendMessages(t, ic, "INBOX", 4, 300)
	appendMessages(t, ic, "INBOX", 1, 100<<10) // UID 5: TOP fetches header and partials
	logs := &logRecorder{}
	b := newBackend(t, imapb.Options{Addr: ms.addr, TLS: modes.TLSNone, Username: memUser, Password: memPassword, Logger: logs.logger()})
	c := popLogin(t, serve(t, b), "x", "y")
	var sizes []int64
	for _, l := range strings.Split(strings.TrimSpace(string(multi(t, c, "LIST"))), "\r\n") {
		var n, size int64
		fmt.Sscanf(l, "%d %d", &n, &size)
		sizes = append(sizes, size)
	}

	ms.standIn(1) // fetched on its own
	ms.standIn(3) // in the FETCH sent ahead after RETR 2
	ms.standIn(5) // large: TOP fetches its header
	for _, tc := range []string{"RETR 1", "TOP 1 0", "RETR 2", "RETR 3", "TOP 3 5", "RETR 4", "TOP 5 0", "TOP 5 10", "RETR 5"} {
		var n int
		fmt.Sscanf(tc[strings.IndexByte(tc, ' ')+1:], "%d", &n)
		_, body, err := c.CmdMulti(tc)
		switch {
		case ms.isStandIn(imap.UID(n)):
			if !isPOPErr(err, "-ERR Message was removed") {
				t.Errorf("%s of a message the server replaced with a stand-in: %v, %q", tc, err, body)
			}
		case err != nil:
			t.Errorf("%s: %v", tc, err)
		case strings.HasPrefix(tc, "RETR") && int64(len(body)) != sizes[n-1]:
			t.Errorf("%s: %d octets, LIST says %d", tc, len(body), sizes[n-1])
		}
	}
	if got := quit(t, c); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("QUIT: %q", got)
	}
	if l := logs.find("the server sent a message of another size than listed (a stand-in for an expunged message?): treated as removed"); len(l) == 0 {
		t.Errorf("no log line about the stand-in:\n%s", logs.text())
	}
}
