package config

import (
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
)

func TestIMAPBackend(t *testing.T) {
	t.Setenv("IMAP_TEST_PASSWORD", "up-secret")
	c, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.example.com:993
      ca_file: ca.pem
      server_name: mail.example.com
      username: alice@example.com
      password: ${IMAP_TEST_PASSWORD}
      folder: Work
      on_delete: move:Trash
      mark_read_on_retr: true
      command_timeout: 2m
  - user: bob@gmail.com
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.gmail.com:993
      auth: xoauth2
      username: bob@gmail.com
      token_file: bob.token
      on_delete: seen
  - user: carol
    backend:
      type: imap
      addr: 127.0.0.1:143
      tls: starttls
      auth: passthrough
`)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Accounts[0].Backend.IMAP
	if a == nil || a.Addr != "imap.example.com:993" || a.Password != "up-secret" || a.CAFile != "/etc/popbridge/ca.pem" ||
		a.Folder != "Work" || a.OnDelete != "move:Trash" || !a.MarkReadOnRetr || a.CommandTimeout != "2m" || a.ServerName != "mail.example.com" {
		t.Errorf("alice: %+v", a)
	}
	b := c.Accounts[1].Backend.IMAP
	if b == nil || b.Auth != modes.AuthXOAUTH2 || b.TokenFile != "/etc/popbridge/bob.token" {
		t.Errorf("bob: %+v", b)
	}
	if !c.Accounts[2].Passthrough() || c.Accounts[0].Passthrough() {
		t.Errorf("Passthrough: %v %v", c.Accounts[2].Passthrough(), c.Accounts[0].Passthrough())
	}

	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.example.com:993
      username: a
      password: b
      bogus: 1
`)
	if err == nil || !strings.Contains(err.Error(), `unknown key "bogus" for backend type imap`) {
		t.Errorf("unknown key: %v", err)
	}

	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    backend:
      type: imap
      tls: ssl
      auth: xoauth2
      on_delete: purge
      dial_timeout: soon
  - user: bob
    backend:
      type: imap
      addr: imap.example.com:993
      username: bob
      password: pw
      on_delete: "move:"
  - user: carol
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.example.com:993
      auth: passthrough
      username: carol
      on_delete: move:INBOX
`)
	for _, want := range []string{
		"accounts[0].password_hash: must be set",
		"accounts[0].backend.addr: must be set", "accounts[0].backend.tls: unknown mode",
		"accounts[0].backend.username: must be set for auth xoauth2", "accounts[0].backend.token_file: must be set",
		"accounts[0].backend.on_delete: unknown policy", "accounts[0].backend.dial_timeout: invalid duration",
		"accounts[1].password_hash: must be set", "accounts[1].backend.on_delete: move: needs a folder",
		"accounts[2].backend.username: not used with auth passthrough", "accounts[2].backend.on_delete: moves to the folder served",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}
