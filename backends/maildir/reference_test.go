package maildir_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/backends/maildir"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/memback"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/internal/testcorpus"
	"github.com/popbridge/popbridge/proxy"
)

// TestReferenceDovecot serves one Maildir with Dovecot's POP3 server and
// with popbridge, and compares what they send for every message of the
// edge-case corpus.
func TestReferenceDovecot(t *testing.T) {
	const user, pass = "alice", "alice-secret"
	// pop3_uidl_format=%f: Dovecot's UIDL is the Maildir unique name too.
	d := dovecottest.Start(t, dovecottest.Options{
		Users:      map[string]string{user: pass},
		UIDLFormat: "%f",
	})
	corpus, err := d.WriteCorpus(user)
	if err != nil {
		t.Fatal(err)
	}

	b, err := maildir.New(maildir.Options{Path: d.MaildirPath(user), Account: user})
	if err != nil {
		t.Fatal(err)
	}
	// One user name and password over the Maildir.
	srv := &proxy.Server{Backend: memback.AuthForTest(b, map[string]string{user: pass}), AuthFailureDelay: -1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// Both servers list the corpus while part of it is in new/.
	pb := loginClient(t, ln.Addr().String(), user, pass)
	dc := loginClient(t, d.POP3Addr, user, pass)
	// Now every file moves or gains flags, as if an IMAP client read the
	// mail during both sessions: each server must follow its files.
	for _, m := range corpus {
		dir := filepath.Dir(filepath.Dir(m.Path))
		to := filepath.Join(dir, "cur", m.Unique+":2,RS")
		if err := os.Rename(m.Path, to); err != nil {
			t.Fatal(err)
		}
	}

	same := func(what string, dv, pv []byte) bool {
		t.Helper()
		if bytes.Equal(dv, pv) {
			return true
		}
		t.Errorf("%s differs: Dovecot %d octets, popbridge %d octets; first difference at %d:\nDovecot:   %q\npopbridge: %q",
			what, len(dv), len(pv), firstDiff(dv, pv), around(dv, firstDiff(dv, pv)), around(pv, firstDiff(dv, pv)))
		return false
	}

	dStat := cmd(t, dc, "STAT")
	pStat := cmd(t, pb, "STAT")
	same("STAT", []byte(dStat), []byte(pStat))
	if want := fmt.Sprintf("+OK %d ", len(corpus)); !strings.HasPrefix(pStat, want) {
		t.Fatalf("popbridge STAT %q, want %d messages", pStat, len(corpus))
	}
	same("LIST", multi(t, dc, "LIST"), multi(t, pb, "LIST"))
	same("UIDL", multi(t, dc, "UIDL"), multi(t, pb, "UIDL"))

	identical, empty := 0, 0
	for i, m := range corpus {
		n := i + 1
		ok := same(fmt.Sprintf("LIST %d (%s)", n, m.Name), []byte(cmd(t, dc, fmt.Sprintf("LIST %d", n))), []byte(cmd(t, pb, fmt.Sprintf("LIST %d", n))))
		ok = same(fmt.Sprintf("UIDL %d (%s)", n, m.Name), []byte(cmd(t, dc, fmt.Sprintf("UIDL %d", n))), []byte(cmd(t, pb, fmt.Sprintf("UIDL %d", n)))) && ok
		var size int
		fmt.Sscanf(cmd(t, pb, fmt.Sprintf("LIST %d", n)), "+OK %d %d", new(int), &size)

		for _, c := range []string{"RETR %d", "TOP %d 0", "TOP %d 1", "TOP %d 5", "TOP %d 99999999"} {
			line := fmt.Sprintf(c, n)
			dv, pv := multiRaw(t, dc, line), multiRaw(t, pb, line)
			if len(m.Data) == 0 {
				// Known difference, reported: for an empty message
				// (LIST size 0) Dovecot sends one CRLF before the ".",
				// so RETR delivers 2 octets where LIST promised 0.
				// popbridge sends 0 octets (RFC 1939 §11: the size is
				// the octets sent). Check each side for what it does.
				if string(dv) != "\r\n" || len(pv) != 0 || size != 0 {
					t.Errorf("%s (empty message): Dovecot %q, popbridge %q, LIST size %d", line, dv, pv, size)
					ok = false
				}
				continue
			}
			ok = same(fmt.Sprintf("%s (%s)", line, m.Name), dv, pv) && ok
			if strings.HasPrefix(c, "RETR") || strings.HasSuffix(c, "99999999") {
				// The whole message: LIST size = octets sent, before
				// stuffing, without a CRLF added for a missing final
				// line end.
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
		switch {
		case ok && len(m.Data) == 0:
			empty++
		case ok:
			identical++
		}
	}
	quit(t, dc)
	quit(t, pb)
	if identical+empty != len(corpus) {
		t.Errorf("reference: only %d of %d messages identical to Dovecot POP3", identical, len(corpus))
		return
	}
	t.Logf("reference: %d messages identical to Dovecot POP3 (STAT, LIST, UIDL, RETR, TOP 0/1/5/99999999; %d octets); "+
		"%d empty message(s) differ as documented (Dovecot sends CRLF for 0 octets)",
		identical, totalSize(corpus), empty)
}

func loginClient(t *testing.T, addr, user, pass string) *pop3test.Client {
	t.Helper()
	c, err := pop3test.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, pass); err != nil {
		t.Fatalf("login at %s: %v", addr, err)
	}
	return c
}

func cmd(t *testing.T, c *pop3test.Client, line string) string {
	t.Helper()
	reply, err := c.Cmd(line)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return reply
}

// multi sends line and returns the unstuffed multi-line body.
func multi(t *testing.T, c *pop3test.Client, line string) []byte {
	t.Helper()
	cmd(t, c, line)
	body, err := c.MultiLine()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return body
}

// multiRaw sends line and returns the multi-line body as sent (stuffed).
func multiRaw(t *testing.T, c *pop3test.Client, line string) []byte {
	t.Helper()
	cmd(t, c, line)
	body, err := c.MultiLineRaw()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return body
}

func quit(t *testing.T, c *pop3test.Client) {
	t.Helper()
	if err := c.Quit(); err != nil {
		t.Errorf("QUIT: %v", err)
	}
}

// unstuff removes the dot-stuffing of a raw multi-line body.
func unstuff(raw []byte) []byte {
	var out []byte
	for len(raw) > 0 {
		i := bytes.Index(raw, []byte("\r\n"))
		line := raw[:i+2]
		raw = raw[i+2:]
		if line[0] == '.' {
			line = line[1:]
		}
		out = append(out, line...)
	}
	return out
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func around(b []byte, i int) []byte {
	lo, hi := max(0, i-40), min(len(b), i+40)
	return b[lo:hi]
}

func totalSize(corpus []testcorpus.CorpusMessage) int {
	n := 0
	for _, m := range corpus {
		n += len(m.Data)
	}
	return n
}
