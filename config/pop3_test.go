package config

import (
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
)

func TestPOP3Backend(t *testing.T) {
	t.Setenv("POP3_TEST_PASSWORD", "up-secret")
	c, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: pop3
      addr: pop.example.com:995
      ca_file: ca.pem
      username: alice@example.com
      password: ${POP3_TEST_PASSWORD}
  - user: bob
    password_hash: "HASH"
    backend:
      type: pop3
      addr: outlook.office365.com:995
      auth: xoauth2
      xoauth2_form: two-line
      username: bob@example.com
      token_file: bob.token
`)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Accounts[0].Backend.POP3
	if a == nil || a.Addr != "pop.example.com:995" || a.Password != "up-secret" || a.CAFile != "/etc/popbridge/ca.pem" {
		t.Errorf("alice: %+v", a)
	}
	b := c.Accounts[1].Backend.POP3
	if b == nil || b.Auth != modes.AuthXOAUTH2 || b.XOAUTH2Form != "two-line" || b.TokenFile != "/etc/popbridge/bob.token" {
		t.Errorf("bob: %+v", b)
	}

	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: pop3
      tls: ssl
      auth: xoauth2
      on_delete: purge
      xoauth2_form: three-line
      bogus: 1
`)
	for _, want := range []string{`unknown key "bogus"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: pop3
      tls: ssl
      auth: xoauth2
      on_delete: purge
      xoauth2_form: three-line
`)
	for _, want := range []string{"backend.addr: must be set", "backend.tls: unknown mode", "backend.username: must be set",
		"backend.token_file: must be set", "backend.on_delete: unknown policy", "backend.xoauth2_form: unknown form"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

func TestPOP3PassthroughAndKeep(t *testing.T) {
	c, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: carol
    backend:
      type: pop3
      addr: pop.example.com:995
      auth: passthrough
      on_delete: keep
`)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Accounts[0]
	if !a.Passthrough() || a.Backend.POP3.OnDelete != modes.Keep {
		t.Errorf("carol: passthrough %v, backend %+v", a.Passthrough(), a.Backend.POP3)
	}
}

func TestPOP3PassthroughTakesNoCredentials(t *testing.T) {
	_, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: carol
    backend:
      type: pop3
      addr: pop.example.com:995
      auth: passthrough
      username: carol@example.com
      password: unused
`)
	for _, want := range []string{"backend.username: not used with auth passthrough", "backend.password: not used with auth passthrough"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}
