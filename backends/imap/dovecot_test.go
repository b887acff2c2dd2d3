package imap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/popbridge/popbridge/backends"
	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
)

// TestReferenceDovecot serves the edge-case corpus from Dovecot's IMAP
// server through popbridge and compares every reply with Dovecot's own
// POP3 server on the same Maildir: STAT, LIST, UIDL (Dovecot's default
// pop3_uidl_format is popbridge's UIDL), RETR and TOP. TOP runs twice:
// with the default whole-message fetch for small messages, and with tiny
// TEXT partials for every message.
func TestReferenceDovecot(t *testing.T) {
	const user, pass = "alice", "alice-secret"
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{user: pass}})
	corpus, err := d.WriteCorpus(user)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, m := range corpus {
		total += len(m.Data)
	}

	passes := []struct {
		name              string
		topWhole, partial int64
	}{
		{"default TOP", 0, 0},
		{"TOP by 100-octet partials", -1, 100},
	}
	identical := 0
	for _, ps := range passes {
		logs := &logRecorder{}
		b := newBackend(t, imapb.Options{
			Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: user, Password: pass,
			Store: openStore(t, t.TempDir()), Bodies: &cache.Bodies{},
			TopWhole: ps.topWhole, TopPartial: ps.partial, Logger: logs.logger(),
		})
		pb := popLogin(t, serve(t, b), "anyone", "anything")
		dc := popLogin(t, d.POP3Addr, user, pass)

		same := func(what string, dv, pv []byte) bool {
			t.Helper()
			if bytes.Equal(dv, pv) {
				return true
			}
			i := firstDiff(dv, pv)
			t.Errorf("%s: %s differs: Dovecot %d octets, popbridge %d; first difference at %d:\nDovecot:   %q\npopbridge: %q",
				ps.name, what, len(dv), len(pv), i, around(dv, i), around(pv, i))
			return false
		}
		same("STAT", []byte(cmd(t, dc, "STAT")), []byte(cmd(t, pb, "STAT")))
		same("LIST", multi(t, dc, "LIST"), multi(t, pb, "LIST"))
		same("UIDL", multi(t, dc, "UIDL"), multi(t, pb, "UIDL"))

		identical = 0
		for i, m := range corpus {
			n := i + 1
			ok := same(fmt.Sprintf("LIST %d (%s)", n, m.Name), []byte(cmd(t, dc, fmt.Sprintf("LIST %d", n))), []byte(cmd(t, pb, fmt.Sprintf("LIST %d", n))))
			var size int
			fmt.Sscanf(cmd(t, pb, fmt.Sprintf("LIST %d", n)), "+OK %d %d", new(int), &size)
			// TOP first, so the default pass serves RETR from Bodies.
			for _, c := range []string{"TOP %d 0", "TOP %d 1", "TOP %d 5", "TOP %d 99999999", "RETR %d"} {
				line := fmt.Sprintf(c, n)
				dv, pv := multiRaw(t, dc, line), multiRaw(t, pb, line)
				if len(m.Data) == 0 {
					// Dovecot sends a CRLF for an empty message (see
					// backends/maildir's reference test); popbridge sends
					// nothing, as LIST promised 0 octets.
					if string(dv) != "\r\n" || len(pv) != 0 || size != 0 {
						t.Errorf("%s (empty message): Dovecot %q, popbridge %q, LIST size %d", line, dv, pv, size)
						ok = false
					}
					continue
				}
				ok = same(fmt.Sprintf("%s (%s)", line, m.Name), dv, pv) && ok
				if strings.HasPrefix(c, "RETR") {
					body := unstuff(pv)
					if !bytes.HasSuffix(m.Data, []byte("\n")) && !bytes.HasSuffix(m.Data, []byte("\r")) {
						body = bytes.TrimSuffix(body, []byte("\r\n"))
					}
					if len(body) != size {
						t.Errorf("%s (%s): %d octets sent, LIST says %d", line, m.Name, len(body), size)
						ok = false
					}
				}
			}
			if ok {
				identical++
			}
		}
		quit(t, dc)
		quit(t, pb)
		if identical != len(corpus) {
			t.Fatalf("%s: only %d of %d messages identical to Dovecot POP3", ps.name, identical, len(corpus))
		}
		if strings.Contains(logs.text(), pass) {
			t.Fatal("the password appears in the log")
		}
	}
	t.Logf("imap: %d corpus messages (%d octets) through popbridge's IMAP backend identical to Dovecot POP3 on the same Maildir: "+
		"STAT, LIST (exact sizes), UIDL (Dovecot's %%08Xu%%08Xv), RETR, TOP 0/1/5/99999999 whole and by BODY[TEXT] partials",
		identical, total)
}

// TestUIDLsStable checks that UIDLs and sizes survive sessions and a
// restart (new Backend, reopened store), that the second login is warm
// (no FETCH), and that only new mail is fetched later.
func TestUIDLsStable(t *testing.T) {
	const user, pass = "bob", "bob-secret"
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{user: pass}})
	if _, err := d.WriteCorpus(user); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logs := &logRecorder{}
	opts := imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: user, Password: pass, Logger: logs.logger()}

	listing := func(addr string) (uidl, list []byte) {
		c := popLogin(t, addr, "x", "y")
		uidl, list = multi(t, c, "UIDL"), multi(t, c, "LIST")
		quit(t, c)
		return uidl, list
	}
	store := openStore(t, dir)
	opts.Store = store
	addr := serve(t, newBackend(t, opts))
	u1, l1 := listing(addr)
	if got := logs.syncLine(t); got != fmt.Sprintf("cold fetched=%d search=false", bytes.Count(l1, []byte("\r\n"))) {
		t.Errorf("first login: %s", got)
	}
	u2, l2 := listing(addr)
	if got := logs.syncLine(t); got != "warm fetched=0 search=false" {
		t.Errorf("second login: %s, want warm with nothing fetched", got)
	}
	if !bytes.Equal(u1, u2) || !bytes.Equal(l1, l2) {
		t.Fatalf("second session differs:\n%s\n%s", u1, u2)
	}

	// Restart: a new store handle on the same file and a new Backend.
	store.Close()
	opts.Store = openStore(t, dir)
	addr = serve(t, newBackend(t, opts))
	u3, l3 := listing(addr)
	if got := logs.syncLine(t); got != "warm fetched=0 search=false" {
		t.Errorf("after restart: %s, want warm", got)
	}
	if !bytes.Equal(u1, u3) || !bytes.Equal(l1, l3) {
		t.Fatalf("after restart UIDLs differ:\n%s\n%s", u1, u3)
	}

	// New mail is fetched alone; an expunge is found by the count.
	ic := imapDial(t, d, user)
	appendMessages(t, ic, "INBOX", 2, 500)
	u4, _ := listing(addr)
	if got := logs.syncLine(t); got != "warm fetched=2 search=false" {
		t.Errorf("after 2 new messages: %s", got)
	}
	if !bytes.HasPrefix(u4, u1) || bytes.Count(u4, []byte("\r\n")) != bytes.Count(u1, []byte("\r\n"))+2 {
		t.Fatalf("after new mail:\n%s\nwant the old listing plus two", u4)
	}
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	u5, _ := listing(addr)
	if got := logs.syncLine(t); got != "warm fetched=0 search=true" {
		t.Errorf("after an expunge: %s", got)
	}
	first, rest, _ := bytes.Cut(u4, []byte("\r\n"))
	_, firstUIDL, _ := bytes.Cut(first, []byte(" "))
	if bytes.Contains(u5, firstUIDL) || bytes.Count(u5, []byte("\r\n")) != bytes.Count(rest, []byte("\r\n")) {
		t.Fatalf("after expunging message 1:\n%s", u5)
	}
	listing(addr)
	if got := logs.syncLine(t); got != "warm fetched=0 search=false" {
		t.Errorf("after the expunge was recorded: %s", got)
	}
	t.Logf("imap: UIDLs stable across sessions and a restart; warm logins fetch nothing, new mail alone, expunges found by count")
}

// deleteCase is one delete policy, checked from the IMAP side.
type deleteCase struct {
	policy modes.OnDelete
	// check gets the INBOX before and after QUIT (UID -> flags), the UIDs
	// the client deleted, and the Trash folder afterwards.
	check    func(t *testing.T, before, after map[imap.UID][]imap.Flag, deleted []imap.UID, trash map[imap.UID][]imap.Flag)
	relisted int // messages listed by the next POP3 session
}

func TestDeletePolicies(t *testing.T) {
	cases := []deleteCase{
		{policy: modes.Expunge, relisted: 3, check: func(t *testing.T, before, after map[imap.UID][]imap.Flag, deleted []imap.UID, trash map[imap.UID][]imap.Flag) {
			for _, u := range deleted {
				if _, ok := after[u]; ok {
					t.Errorf("UID %d still in INBOX", u)
				}
			}
			if len(after) != len(before)-len(deleted) {
				t.Errorf("INBOX has %d messages, want %d", len(after), len(before)-len(deleted))
			}
		}},
		{policy: modes.Move("Trash"), relisted: 3, check: func(t *testing.T, before, after map[imap.UID][]imap.Flag, deleted []imap.UID, trash map[imap.UID][]imap.Flag) {
			if len(after) != len(before)-len(deleted) || len(trash) != len(deleted) {
				t.Errorf("INBOX %d, Trash %d messages; want %d and %d", len(after), len(trash), len(before)-len(deleted), len(deleted))
			}
		}},
		{policy: modes.Seen, relisted: 3, check: func(t *testing.T, before, after map[imap.UID][]imap.Flag, deleted []imap.UID, trash map[imap.UID][]imap.Flag) {
			if len(after) != len(before) {
				t.Errorf("INBOX has %d messages, want %d", len(after), len(before))
			}
			for u, f := range after {
				if want := slices.Contains(deleted, u); hasFlag(f, imap.FlagSeen) != want || hasFlag(f, imap.FlagDeleted) {
					t.Errorf("UID %d flags %v; \\Seen wanted: %v", u, f, want)
				}
			}
		}},
		{policy: modes.Keep, relisted: 3, check: func(t *testing.T, before, after map[imap.UID][]imap.Flag, deleted []imap.UID, trash map[imap.UID][]imap.Flag) {
			if len(after) != len(before) {
				t.Errorf("INBOX has %d messages, want %d", len(after), len(before))
			}
			for u, f := range after {
				if len(f) != len(before[u]) {
					t.Errorf("UID %d flags changed from %v to %v", u, before[u], f)
				}
			}
		}},
	}
	users := map[string]string{}
	for i := range cases {
		users[fmt.Sprintf("user%d", i)] = "pw"
	}
	d := dovecottest.Start(t, dovecottest.Options{Users: users})
	for i, tc := range cases {
		t.Run(string(tc.policy), func(t *testing.T) {
			user := fmt.Sprintf("user%d", i)
			ic := imapDial(t, d, user)
			appendMessages(t, ic, "INBOX", 5, 300)
			before := folderState(t, ic, "INBOX")
			b := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: user, Password: "pw",
				OnDelete: tc.policy, Store: openStore(t, t.TempDir())})
			addr := serve(t, b)
			c := popLogin(t, addr, "x", "y")
			uids := uidlList(t, c)
			multi(t, c, "RETR 2") // BODY.PEEK[]: no \Seen
			cmd(t, c, "DELE 1")
			cmd(t, c, "DELE 3")
			if got := quit(t, c); got != "+OK Logging out, 2 messages deleted." {
				t.Fatalf("QUIT: %q", got)
			}
			var deleted []imap.UID
			for _, u := range []string{uids[0], uids[2]} {
				var uid, v uint32
				fmt.Sscanf(u, "%08x%08x", &uid, &v)
				deleted = append(deleted, imap.UID(uid))
			}
			after := folderState(t, ic, "INBOX")
			if f := after[imap.UID(mustUID(t, uids[1]))]; hasFlag(f, imap.FlagSeen) {
				t.Errorf("RETR set \\Seen on message 2: %v", f)
			}
			var trash map[imap.UID][]imap.Flag
			if strings.HasPrefix(string(tc.policy), "move:") {
				trash = folderState(t, ic, "Trash")
			}
			tc.check(t, before, after, deleted, trash)

			c = popLogin(t, addr, "x", "y")
			again := uidlList(t, c)
			quit(t, c)
			if len(again) != tc.relisted || slices.Contains(again, uids[0]) || slices.Contains(again, uids[2]) {
				t.Errorf("next session lists %v; want %d messages without %s and %s", again, tc.relisted, uids[0], uids[2])
			}
		})
	}
	t.Logf("imap: delete policies expunge, move:Trash (created), seen, keep verified from the IMAP side; RETR left \\Seen unset")
}

func mustUID(t *testing.T, uidl string) uint32 {
	t.Helper()
	var uid, v uint32
	if _, err := fmt.Sscanf(uidl, "%08x%08x", &uid, &v); err != nil {
		t.Fatalf("UIDL %q: %v", uidl, err)
	}
	return uid
}

// TestMarkReadOnRetr checks that RETR sets \Seen with mark_read_on_retr,
// also when the body comes from Bodies, and that TOP never does.
func TestMarkReadOnRetr(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"carol": "pw"}})
	ic := imapDial(t, d, "carol")
	appendMessages(t, ic, "INBOX", 3, 200)
	b := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: "carol", Password: "pw",
		MarkReadOnRetr: true, Bodies: &cache.Bodies{}})
	c := popLogin(t, serve(t, b), "x", "y")
	multi(t, c, "TOP 1 1") // whole message into Bodies, peeked
	multi(t, c, "TOP 2 1")
	multi(t, c, "RETR 2") // from Bodies: STORE \Seen
	multi(t, c, "RETR 3") // BODY[]
	quit(t, c)
	st := folderState(t, ic, "INBOX")
	var seen []bool
	for _, u := range slices.Sorted(mapsKeys(st)) {
		seen = append(seen, hasFlag(st[u], imap.FlagSeen))
	}
	if !slices.Equal(seen, []bool{false, true, true}) {
		t.Fatalf("\\Seen on messages 1-3: %v, want false true true", seen)
	}
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestExpungedMidSession: another IMAP client expunges a message during a
// POP3 session; RETR and TOP of it fail, the rest of the session works
// and QUIT deletes what the client deleted. (Message 3 is expunged, not 2:
// RETR 1 already sent the FETCH of message 2 ahead, and a message whose
// data arrived before it was expunged is delivered.)
func TestExpungedMidSession(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"dave": "pw"}})
	ic := imapDial(t, d, "dave")
	appendMessages(t, ic, "INBOX", 4, 100<<10) // above TopWhole: TOP uses partials
	b := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: "dave", Password: "pw"})
	c := popLogin(t, serve(t, b), "x", "y")
	uids := uidlList(t, c)
	multi(t, c, "RETR 1")

	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.UIDSetNum(imap.UID(mustUID(t, uids[2]))), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Expunge().Close(); err != nil {
		t.Fatal(err)
	}

	for _, line := range []string{"RETR 3", "TOP 3 3"} {
		_, err := c.Cmd(line)
		if !isPOPErr(err, "-ERR Message was removed") {
			t.Fatalf("%s of the expunged message: %v", line, err)
		}
	}
	for _, line := range []string{"RETR 2", "RETR 4"} {
		if got := multi(t, c, line); len(got) < 100_000 {
			t.Fatalf("%s after the expunge: %d octets", line, len(got))
		}
	}
	multi(t, c, "TOP 4 2")
	cmd(t, c, "DELE 4")
	if got := quit(t, c); got != "+OK Logging out, 1 messages deleted." {
		t.Fatalf("QUIT: %q", got)
	}
	if st := folderState(t, ic, "INBOX"); len(st) != 2 {
		t.Fatalf("INBOX has %d messages, want 2 (4 - 1 expunged elsewhere - 1 deleted)", len(st))
	}
	t.Logf("imap: a message expunged by another IMAP client mid-session gives -ERR for RETR/TOP of it only")
}

// TestDovecotStopped: Dovecot goes away mid-session; every command that
// needs it fails cleanly and QUIT deletes nothing.
func TestDovecotStopped(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"erin": "pw"}})
	corpus, err := d.WriteCorpus("erin")
	if err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: "erin", Password: "pw",
		DialTimeout: 2 * time.Second, CommandTimeout: 2 * time.Second})
	addr := serve(t, b)
	c := popLogin(t, addr, "x", "y")
	multi(t, c, "RETR 1")
	cmd(t, c, "DELE 1")
	cmd(t, c, "DELE 2")
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, "RETR and QUIT with Dovecot stopped", func() {
		if _, err := c.Cmd("RETR 3"); !isPOPErr(err, "-ERR [SYS/TEMP]") {
			t.Errorf("RETR 3 with Dovecot stopped: %v", err)
		}
		if _, err := c.Cmd("QUIT"); !isPOPErr(err, "-ERR [SYS/TEMP]") {
			t.Errorf("QUIT with Dovecot stopped: %v", err)
		}
	})
	if n := countMaildir(t, d.MaildirPath("erin")); n != len(corpus) {
		t.Fatalf("%d message files left of %d: something was deleted", n, len(corpus))
	}
	// A new login fails as temporary, not as bad credentials.
	c2, err := pop3test.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Login("x", "y"); !isPOPErr(err, "-ERR [SYS/TEMP]") {
		t.Fatalf("login with Dovecot stopped: %v", err)
	}
	t.Logf("imap: Dovecot stopped mid-session: RETR and QUIT answer -ERR [SYS/TEMP], login too, nothing deleted")
}

// TestLoginErrors maps upstream failures to POP3 response codes.
func TestLoginErrors(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"frank": "right"}})
	bad := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: "frank", Password: "wrong"})
	c, _ := pop3test.Dial(serve(t, bad))
	defer c.Close()
	if err := c.Login("x", "y"); !isPOPErr(err, "-ERR [AUTH]") {
		t.Errorf("wrong upstream password: %v", err)
	}

	// Passthrough: the POP3 credentials are the IMAP ones.
	pt := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Auth: modes.AuthPassthrough})
	addr := serve(t, pt)
	c = popLogin(t, addr, "frank", "right")
	quit(t, c)
	c, _ = pop3test.Dial(addr)
	defer c.Close()
	if err := c.Login("frank", "wrong"); !isPOPErr(err, "-ERR [AUTH]") {
		t.Errorf("passthrough with a wrong password: %v", err)
	}
	if err := pt.Check(context.Background()); err != nil {
		t.Errorf("Check (passthrough: connect only): %v", err)
	}

	// TLS: implicit and STARTTLS with the test CA; an untrusted
	// certificate is the operator's problem ([SYS/PERM]).
	for _, tc := range []struct {
		mode modes.TLS
		addr string
	}{{modes.TLSImplicit, d.IMAPSAddr}, {modes.TLSStartTLS, d.IMAPAddr}} {
		ok := newBackend(t, imapb.Options{Addr: tc.addr, TLS: tc.mode, TLSConfig: d.TLSConfig(), Username: "frank", Password: "right"})
		if err := ok.Check(context.Background()); err != nil {
			t.Errorf("tls %s: %v", tc.mode, err)
		}
		untrusted := newBackend(t, imapb.Options{Addr: tc.addr, TLS: tc.mode, Username: "frank", Password: "right"})
		_, err := untrusted.OpenMaildrop(context.Background(), backends.Login{})
		if !errors.Is(err, proxy.ErrPermanent) {
			t.Errorf("tls %s with an untrusted certificate: %v, want [SYS/PERM]", tc.mode, err)
		}
	}

	// A folder that does not exist.
	nf := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: "frank", Password: "right", Folder: "Nope"})
	if err := nf.Check(context.Background()); !errors.Is(err, proxy.ErrPermanent) {
		t.Errorf("missing folder: %v, want [SYS/PERM]", err)
	}

	// Nothing listening: temporary.
	gone := newBackend(t, imapb.Options{Addr: "127.0.0.1:1", TLS: modes.TLSNone, Username: "frank", Password: "right"})
	c, _ = pop3test.Dial(serve(t, gone))
	defer c.Close()
	if err := c.Login("x", "y"); !isPOPErr(err, "-ERR [SYS/TEMP]") {
		t.Errorf("unreachable upstream: %v", err)
	}
}
