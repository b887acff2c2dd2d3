package app

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/dovecottest"
)

// acceptingSender accepts every message, reading it whole.
type acceptingSender struct{ got [][]byte }

func (a *acceptingSender) MaySend(string) bool { return true }
func (a *acceptingSender) Begin(context.Context, string, backends.MailOptions) (backends.Transaction, error) {
	return &acceptingTx{a}, nil
}

type acceptingTx struct{ a *acceptingSender }

func (t *acceptingTx) Rcpt(context.Context, string) error { return nil }
func (t *acceptingTx) Data(_ context.Context, r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	t.a.got = append(t.a.got, b)
	return "250 queued", err
}
func (t *acceptingTx) Close() error { return nil }

// TestSentFolder: with send.sent_folder, a message the upstream accepted
// is appended byte for byte to that folder at a private Dovecot, \Seen;
// a folder that cannot take it leaves the send a success, counted as a
// failed copy; the spool is empty afterwards.
func TestSentFolder(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"alice": "alice-pw"}})
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, d.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "popbridge.yaml")
	src := `listen: {pop3: 127.0.0.1:0}
state_dir: state
accounts:
  - user: alice
    password_hash: "` + testHash(t) + `"
    backend: {type: imap, addr: "` + d.IMAPSAddr + `", tls: implicit, ca_file: "` + ca + `", server_name: localhost, username: alice, password: alice-pw}
    send: {type: smtp, addr: "127.0.0.1:1", username: a@example.com, password: pw, sent_folder: Sent}
  - user: bob
    password_hash: "` + testHash(t) + `"
    backend: {type: imap, addr: "` + d.IMAPSAddr + `", tls: implicit, ca_file: "` + ca + `", server_name: localhost, username: alice, password: alice-pw}
    send: {type: smtp, addr: "127.0.0.1:1", username: b@example.com, password: pw, sent_folder: NoSuchFolder}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	// The upstream Sent folder.
	c, err := imapclient.DialTLS(d.IMAPSAddr, &imapclient.Options{TLSConfig: d.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Sent", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	cfg := must(config.Load(path))
	st := must(openState(filepath.Join(dir, "state"), nil))
	defer st.close(zerolog.Nop())
	st.metrics = newMetrics(cfg, nil)
	var logs syncBuffer
	log := zerolog.New(&logs)
	st.log = &log
	set := must(newSenders(cfg, st))
	msg := []byte("From: a@example.com\r\nTo: b@example.net\r\nBcc: hidden@example.org\r\nSubject: sent copy\r\n\r\n.dot line\r\n\xc3\xa9t\xc3\xa9\r\nno final newline")
	send := func(user string) (*acceptingSender, error) {
		o := set.senders[user].(*observedSender)
		up := &acceptingSender{}
		o.Sender.(*sentCopy).Sender = up
		tx, err := o.Begin(context.Background(), "a@example.com", backends.MailOptions{})
		if err != nil {
			return nil, err
		}
		defer tx.Close()
		_, err = tx.Data(context.Background(), bytes.NewReader(msg))
		return up, err
	}
	up, err := send("alice")
	if err != nil || len(up.got) != 1 || !bytes.Equal(up.got[0], msg) {
		t.Fatalf("send: %v, upstream got %q", err, up.got)
	}
	if _, err := c.Select("Sent", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch from Sent: %v, %d messages", err, len(msgs))
	}
	var body []byte
	for _, b := range msgs[0].BodySection {
		body = b.Bytes
	}
	if !bytes.Equal(body, msg) {
		t.Fatalf("Sent holds\n%q\nwant\n%q", body, msg)
	}
	if !strings.Contains(strings.ToLower(strings.Join(flagStrings(msgs[0].Flags), " ")), `\seen`) {
		t.Fatalf("flags %v lack \\Seen", msgs[0].Flags)
	}

	// A folder that does not exist: the send succeeds, the copy counts as failed.
	if _, err := send("bob"); err != nil {
		t.Fatalf("send with a failing copy: %v", err)
	}
	vec := st.metrics.sentCopiesVec()
	if ok, failed := counterValue(vec.WithLabelValues("alice", "ok")), counterValue(vec.WithLabelValues("bob", "failed")); ok != 1 || failed != 1 {
		t.Fatalf("sent copies: ok %v, failed %v", ok, failed)
	}
	if !strings.Contains(logs.String(), "could not be stored in the sent folder") || strings.Contains(logs.String(), "alice-pw") {
		t.Fatalf("log:\n%s", logs.String())
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "state", SpoolDir)); len(left) != 0 {
		t.Fatalf("spool not emptied: %v", left)
	}
}

func flagStrings(fs []imap.Flag) []string {
	var s []string
	for _, f := range fs {
		s = append(s, string(f))
	}
	return s
}

func counterValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
