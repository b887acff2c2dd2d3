package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/admin"
)

// acceptingSender is in sentcopy_test.go.

// TestAdminSending: the admin page's account data carries each
// account's SMTP sending from its sender's status: the last send, the
// last send error in plain words, and why an account cannot send (no
// send section, or no submission listener).
func TestAdminSending(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	src := `listen: {pop3: 127.0.0.1:0}
state_dir: state
accounts:
  - user: alice
    password_hash: "` + testHash(t) + `"
    backend: {type: maildir, path: mail}
    send: {type: smtp, addr: "127.0.0.1:1", username: a@example.com, password: pw}
  - user: bob
    password_hash: "` + testHash(t) + `"
    backend: {type: maildir, path: bob}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	cfg.Listen.Submission = "127.0.0.1:0" // the listener itself is not needed here
	st := must(openState(filepath.Join(dir, "state"), nil))
	defer st.close(zerolog.Nop())
	st.metrics = newMetrics(cfg, nil)
	set := must(newSenders(cfg, st))
	srcs := &adminSources{st: st, cfg: func() *config.Config { return cfg }}
	ctx := context.Background()
	accounts := func() (alice, bob admin.Account) {
		as := srcs.Accounts(ctx)
		if len(as) != 2 {
			t.Fatalf("accounts %+v", as)
		}
		return as[0], as[1]
	}

	alice, bob := accounts()
	if alice.SendOff != "" || !alice.LastSend.IsZero() || alice.LastSendError != "" {
		t.Fatalf("alice before any send: %+v", alice)
	}
	if !strings.Contains(bob.SendOff, "no send section") {
		t.Fatalf("bob, without a send section: SendOff %q", bob.SendOff)
	}

	// A real failed send: nothing listens on the upstream's port.
	o := set.senders["alice"].(*observedSender)
	if _, err := o.Begin(ctx, "a@example.com", backends.MailOptions{}); err == nil {
		t.Fatal("a send to a closed port worked")
	}
	alice, _ = accounts()
	if alice.LastSendError != plainSendClass("upstream_unreachable") || !strings.Contains(alice.LastSendError, "could not be reached") || alice.LastSendErrorAt.IsZero() || !alice.LastSend.IsZero() {
		t.Fatalf("alice after a failed send: %+v", alice)
	}

	// A send that works.
	o.Sender = &acceptingSender{}
	tx, err := o.Begin(ctx, "a@example.com", backends.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Data(ctx, strings.NewReader("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	alice, _ = accounts()
	if alice.LastSend.IsZero() || alice.LastSend.Before(alice.LastSendErrorAt) {
		t.Fatalf("alice after a send: %+v", alice)
	}

	// Without a submission listener no account sends.
	cfg.Listen.Submission = ""
	alice, bob = accounts()
	for _, v := range []admin.Account{alice, bob} {
		if !strings.Contains(v.SendOff, "no SMTP submission listener") {
			t.Errorf("%s without a listener: SendOff %q", v.User, v.SendOff)
		}
	}
	t.Logf("admin: last send %v, last send error %q, bob: %q", alice.LastSend.Format("15:04:05"), alice.LastSendError, bob.SendOff)
}
