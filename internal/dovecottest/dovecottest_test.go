package dovecottest_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
)

// wire returns what a POP3 server sends for data: CRLF line ends.
func wire(data []byte) []byte {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

func TestDovecotPOP3OverCorpus(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{
		Users:      map[string]string{"alice": "alice-pw", "bob": "bob-pw"},
		UIDLFormat: "%f",
	})
	msgs, err := d.WriteCorpus("alice")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, m := range msgs {
		n, _ := proxy.CRLFSize(bytes.NewReader(m.Data))
		total += n
	}

	c, err := pop3test.Dial(d.POP3Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if strings.Contains(c.Greeting, "<") {
		t.Errorf("greeting %q offers APOP", c.Greeting)
	}
	if _, err := c.Cmd("USER alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cmd("PASS wrong"); err == nil {
		t.Fatal("wrong password accepted")
	} else if !errors.As(err, new(*pop3test.ResponseError)) {
		t.Fatalf("wrong password: %v, want a ResponseError", err)
	}
	if err := c.Login("alice", "alice-pw"); err != nil {
		t.Fatal(err)
	}
	stat, err := c.Cmd("STAT")
	if want := fmt.Sprintf("+OK %d %d", len(msgs), total); stat != want || err != nil {
		t.Fatalf("STAT = %q, %v; want %q", stat, err, want)
	}

	_, uidl, err := c.CmdMulti("UIDL")
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&want, "%d %s\r\n", i+1, m.Unique)
	}
	if string(uidl) != want.String() {
		t.Errorf("UIDL (%%f) =\n%s\nwant\n%s", uidl, want.String())
	}

	// RETR of a few edge cases equals the stored message with CRLF line
	// ends, plus the CRLF Dovecot adds when the last line has none (even
	// to an empty message, whose LIST size is 0).
	for i, m := range msgs {
		switch m.Name {
		case "dot-lines", "no-final-newline", "crlf-stored", "empty-file", "long-line":
		default:
			continue
		}
		status, body, err := c.CmdMulti(fmt.Sprintf("RETR %d", i+1))
		if err != nil {
			t.Fatalf("RETR %d (%s): %v", i+1, m.Name, err)
		}
		exp := wire(m.Data)
		if !bytes.HasSuffix(exp, []byte("\r\n")) {
			if !strings.HasPrefix(status, fmt.Sprintf("+OK %d ", len(exp))) {
				t.Errorf("RETR %s: status %q, want the size without the added CRLF", m.Name, status)
			}
			exp = append(exp, "\r\n"...)
		}
		if !bytes.Equal(body, exp) {
			t.Errorf("RETR %s: got %d octets, want %d:\n%q\nwant\n%q", m.Name, len(body), len(exp), clip(body), clip(exp))
		}
	}
	if err := c.Quit(); err != nil {
		t.Errorf("QUIT: %v", err)
	}

	// Implicit TLS with the generated certificate, and a second user.
	tc, err := pop3test.DialTLS(d.POP3SAddr, d.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Login("bob", "bob-pw"); err != nil {
		t.Fatal(err)
	}
	if stat, err := tc.Cmd("STAT"); stat != "+OK 0 0" || err != nil {
		t.Errorf("bob STAT = %q, %v", stat, err)
	}
	tc.Quit()

	// IMAP answers too, in the clear and with implicit TLS.
	for _, addr := range []string{d.IMAPAddr, d.IMAPSAddr} {
		var conn net.Conn
		var err error
		if addr == d.IMAPSAddr {
			conn, err = tls.Dial("tcp", addr, d.TLSConfig())
		} else {
			conn, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatalf("IMAP %s: %v", addr, err)
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(conn, buf)
		conn.Close()
		if err != nil || string(buf) != "* OK" {
			t.Errorf("IMAP %s greeting %q, %v", addr, buf, err)
		}
	}
}

func owner(path string) (int, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid), nil
}

func TestMaildirOwnedByMailUser(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	if d.Users["test"] != "secret" {
		t.Fatalf("default users %v", d.Users)
	}
	if os.Geteuid() == 0 && d.UID == 0 {
		t.Fatal("mail user is root")
	}
	msgs, err := d.WriteCorpus("test")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{d.MaildirPath("test"), msgs[0].Path} {
		uid, err := owner(p)
		if err != nil {
			t.Fatal(err)
		}
		if uid != d.UID {
			t.Errorf("%s owned by %d, want %d", p, uid, d.UID)
		}
	}
	// Stop ends the instance even with a client still logged in.
	c, err := pop3test.Dial(d.POP3Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("test", "secret"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := d.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Stop took %v", took)
	}
	if _, err := pop3test.Dial(d.POP3Addr); err == nil {
		t.Error("POP3 still answers after Stop")
	}
}

func clip(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}
