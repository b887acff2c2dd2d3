package config

import (
	"strings"
	"testing"
)

func TestOAuth2(t *testing.T) {
	t.Setenv("MS_SECRET", "ms-secret")
	c, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: bob@gmail.com
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.gmail.com:993
      auth: xoauth2
      username: bob@gmail.com
      oauth2:
        provider: google
        client_id: 123.apps.googleusercontent.com
        client_secret: GOCSPX-x
        token_key_file: token.key
  - user: carol
    password_hash: "HASH"
    backend:
      type: pop3
      addr: outlook.office365.com:995
      auth: xoauth2
      xoauth2_form: two-line
      username: carol@outlook.com
      oauth2:
        provider: microsoft
        tenant: consumers
        client_id: 0000-1111
        client_secret: ${MS_SECRET}
        scopes: [https://outlook.office.com/POP.AccessAsUser.All, offline_access]
`)
	if err != nil {
		t.Fatal(err)
	}
	o := c.Accounts[0].Backend.IMAP.OAuth2
	if o == nil || o.Provider != "google" || o.ClientSecret != "GOCSPX-x" || o.TokenKeyFile != "/etc/popbridge/token.key" {
		t.Errorf("bob: %+v", o)
	}
	o = c.Accounts[1].Backend.POP3.OAuth2
	if o == nil || o.Tenant != "consumers" || o.ClientSecret != "ms-secret" || len(o.Scopes) != 2 {
		t.Errorf("carol: %+v", o)
	}

	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: bob
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.gmail.com:993
      username: bob
      password: x
      token_file: t
      oauth2:
        provider: custom
        tenant: x
        auth_url: ftp://x
  - user: ann
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.gmail.com:993
      auth: xoauth2
      username: ann
      oauth2:
        provider: google
        client_id: x
        clientid: y
`)
	for _, want := range []string{
		`accounts[1].backend.oauth2: unknown key "clientid" (did you mean client_id?)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}

	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: bob
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.gmail.com:993
      username: bob
      password: x
      token_file: t
      oauth2:
        provider: custom
        tenant: x
        auth_url: ftp://x
`)
	for _, want := range []string{
		"accounts[0].backend.oauth2: needs auth xoauth2 or oauthbearer",
		"accounts[0].backend.oauth2: set either token_file or oauth2, not both",
		"accounts[0].backend.oauth2.client_id: must be set",
		"accounts[0].backend.oauth2.auth_url: must be an http(s) URL",
		"accounts[0].backend.oauth2.token_url: must be set for provider custom",
		"accounts[0].backend.oauth2.scopes: must be set for provider custom",
		"accounts[0].backend.oauth2.tenant: only for provider microsoft",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}
