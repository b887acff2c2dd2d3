package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
)

// TestSend: the send section and the defaults derived from the backend.
func TestSend(t *testing.T) {
	t.Setenv("SMTP_TEST_PASSWORD", "smtp-secret")
	c, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
  submission: 127.0.0.1:1587
  submissions: 127.0.0.1:1465
tls: {self_signed: true}
accounts:
  - user: alice
    password_hash: "HASH"
    backend: {type: maildir, path: mail/alice}
    send:
      type: smtp
      addr: mail.example.com:587
      ca_file: ca.pem
      server_name: mx.example.com
      username: alice@example.com
      password: ${SMTP_TEST_PASSWORD}
      from: [alice@example.com, info@example.com]
  - user: bob@gmail.com
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.gmail.com:993
      auth: xoauth2
      username: bob@gmail.com
      oauth2: {provider: google, client_id: id, client_secret: s}
  - user: carol
    password_hash: "HASH"
    backend:
      type: imap
      addr: outlook.office365.com:993
      username: carol@contoso.com
      password: pw
  - user: dave@gmail.com
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2: {provider: google, client_id: id, client_secret: s}
  - user: erin
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.example.com:993
      username: erin
      password: pw
  - user: fred
    password_hash: "HASH"
    backend:
      type: imap
      addr: imap.gmail.com:993
      auth: xoauth2
      username: fred@gmail.com
      oauth2: {provider: google, client_id: id, client_secret: s}
    send: {type: smtp, addr: "smtp.gmail.com:465"}
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.Submission != "127.0.0.1:1587" || c.Listen.Submissions != "127.0.0.1:1465" {
		t.Errorf("listen: %+v", c.Listen)
	}
	s, why := c.Accounts[0].DefaultSend()
	if s == nil || s.Type != modes.SendSMTP || s.Addr != "mail.example.com:587" || s.TLS != modes.TLSStartTLS || s.Auth != modes.AuthPassword ||
		s.Password != "smtp-secret" || s.CAFile != "/etc/popbridge/ca.pem" || !slices.Equal(s.From, []string{"alice@example.com", "info@example.com"}) {
		t.Errorf("alice: %+v %q", s, why)
	}
	s, why = c.Accounts[1].DefaultSend()
	if s == nil || s.Addr != "smtp.gmail.com:465" || s.TLS != modes.TLSImplicit || s.Auth != modes.AuthXOAUTH2 || s.Username != "bob@gmail.com" ||
		!slices.Equal(s.From, []string{"bob@gmail.com"}) || c.Accounts[1].Send != nil {
		t.Errorf("bob (imap.gmail.com default): %+v %q", s, why)
	}
	s, why = c.Accounts[2].DefaultSend()
	if s == nil || s.Addr != "smtp.office365.com:587" || s.TLS != modes.TLSStartTLS || s.Auth != modes.AuthPassword || s.Password != "pw" || s.Username != "carol@contoso.com" {
		t.Errorf("carol (office365 default): %+v %q", s, why)
	}
	s, why = c.Accounts[3].DefaultSend()
	if s == nil || s.Type != modes.SendGmail || !slices.Equal(s.From, []string{"dave@gmail.com"}) {
		t.Errorf("dave (gmail backend): %+v %q", s, why)
	}
	if s, why = c.Accounts[4].DefaultSend(); s != nil || !strings.Contains(why, "knows no submission server for imap.example.com:993: add one") {
		t.Errorf("erin (unknown host): %+v %q", s, why)
	}
	s, why = c.Accounts[5].DefaultSend()
	if s == nil || s.TLS != modes.TLSImplicit || s.Auth != modes.AuthXOAUTH2 || s.Username != "fred@gmail.com" || !c.Accounts[5].BackendGrant() {
		t.Errorf("fred (send section, backend's grant): %+v %q", s, why)
	}
}

// TestSendProblems: every problem of a send section and of the
// submission listeners, in plain words.
func TestSendProblems(t *testing.T) {
	_, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
  submission: 127.0.0.1:1110
  submissions: nowhere
accounts:
  - user: alice
    password_hash: "HASH"
    backend: {type: maildir, path: mail/alice}
    send: {type: smtp, tls: none, auth: xoauth2, from: [alice]}
  - user: bob
    password_hash: "HASH"
    backend: {type: maildir, path: mail/bob}
    send: {type: gmail, addr: smtp.gmail.com:465}
  - user: carol
    password_hash: "HASH"
    backend: {type: maildir, path: mail/carol}
    send: {type: pigeon}
  - user: dave
    password_hash: "HASH"
    backend: {type: maildir, path: mail/dave}
    send: {addr: smtp.example.com:587, username: dave, command_timeout: soon, max_per_minute: -1}
`)
	got := errLines(err)
	for _, want := range []string{
		"listen.submission: needs tls (a server certificate: SMTP clients log in only over TLS, except where cleartext_auth allows)",
		"listen.submission: same address as listen.pop3",
		`listen.submissions: invalid address "nowhere" (want host:port, e.g. 127.0.0.1:1110)`,
		"accounts[0].send.addr: must be set (host:port of the submission server, e.g. smtp.example.com:587)",
		`accounts[0].send.tls: unknown mode "none" (want starttls or implicit; submission is never sent in clear text)`,
		"accounts[0].send.username: must be set for auth xoauth2 (the mailbox address)",
		"accounts[0].send.token_file: must be set for auth xoauth2, or the backend must have an oauth2 section whose grant is used",
		`accounts[0].send.from[0]: "alice" is not an address (want e.g. alice@example.com)`,
		"accounts[1].send.type: gmail sends with the oauth2 grant of a gmail backend; this account's backend is maildir: use type smtp",
		"accounts[1].send.addr: not used with type gmail (only with type smtp)",
		"accounts[1].send.from: must be set for type gmail when the user name is not an address: the addresses this account sends as",
		`accounts[2].send.type: unknown type "pigeon" (want smtp, gmail or graph)`,
		"accounts[3].send.from: must be set: the addresses this account sends as (the username dave is not an address)",
		"accounts[3].send.password: must be set for auth password (or password_file)",
		`accounts[3].send.command_timeout: invalid duration "soon" (want e.g. 90s, 10m, 1h)`,
		"accounts[3].send.max_per_minute: must not be negative (0 means no limit)",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	if len(got) != 17 {
		t.Errorf("%d problems, want 17:\n%s", len(got), strings.Join(got, "\n"))
	}
}

// TestSendSentFolder: sent_folder is for imap backends and names a
// folder.
func TestSendSentFolder(t *testing.T) {
	_, err := parseString(t, `
listen: {pop3: 127.0.0.1:1110}
accounts:
  - user: alice
    password_hash: "HASH"
    backend: {type: maildir, path: mail/alice}
    send: {addr: smtp.example.com:587, username: alice@example.com, password: pw, sent_folder: Sent}
  - user: bob
    password_hash: "HASH"
    backend: {type: imap, addr: imap.example.com:993, username: bob@example.com, password: pw}
    send: {sent_folder: "  "}
  - user: carol
    password_hash: "HASH"
    backend: {type: imap, addr: imap.example.com:993, username: carol@example.com, password: pw}
    send: {addr: smtp.example.com:587, sent_folder: Sent}
`)
	got := errLines(err)
	for _, want := range []string{
		"accounts[0].send.sent_folder: only for imap backends (popbridge appends the copy over the backend's IMAP connection); this account's backend is maildir: remove it",
		`accounts[1].send.sent_folder: is blank: name the folder (e.g. Sent) or remove the setting`,
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing problem %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, line := range got {
		if strings.HasPrefix(line, "accounts[2]") {
			t.Errorf("unexpected problem %q", line)
		}
	}
}

// TestSendGraph: a graph backend sends through Graph by default, from
// its user name or its shared mailbox; own scopes without Mail.Send
// leave it unable to send (no send section) or are an error (send type
// graph); type graph needs a graph backend and takes no smtp settings.
func TestSendGraph(t *testing.T) {
	c, err := parseString(t, `
listen: {pop3: 127.0.0.1:1110}
accounts:
  - user: alice@contoso.com
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, tenant: organizations, client_id: id}
  - user: team
    password_hash: "HASH"
    backend:
      type: graph
      mailbox: team@contoso.com
      oauth2: {provider: microsoft, tenant: organizations, client_id: id}
  - user: bob@contoso.com
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, tenant: organizations, client_id: id, scopes: [offline_access, Mail.ReadWrite]}
  - user: carol@contoso.com
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, tenant: organizations, client_id: id, scopes: [offline_access, Mail.ReadWrite, Mail.Send]}
    send: {type: graph, max_per_minute: 30}
`)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]string{{"alice@contoso.com"}, {"team@contoso.com"}, nil, {"carol@contoso.com"}} {
		s, why := c.Accounts[i].DefaultSend()
		switch {
		case want == nil && (s != nil || !strings.Contains(why, "lack Mail.Send")):
			t.Errorf("accounts[%d]: %+v, %q; want no sender (scopes lack Mail.Send)", i, s, why)
		case want != nil && (s == nil || s.Type != modes.SendGraph || !slices.Equal(s.From, want)):
			t.Errorf("accounts[%d]: %+v, %q; want type graph from %v", i, s, why, want)
		}
	}
	_, err = parseString(t, `
listen: {pop3: 127.0.0.1:1110}
accounts:
  - user: bob@contoso.com
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, tenant: organizations, client_id: id, scopes: [offline_access, Mail.ReadWrite]}
    send: {type: graph, addr: smtp.office365.com:587}
  - user: dave
    password_hash: "HASH"
    backend: {type: maildir, path: mail/dave}
    send: {type: graph}
`)
	got := errLines(err)
	for _, want := range []string{
		"accounts[0].send.type: graph sends with the scope Mail.Send (Mail.Send.Shared for another mailbox), which the backend's oauth2.scopes lack: add it and run popbridge auth again, or leave scopes out",
		"accounts[0].send.addr: not used with type graph (only with type smtp)",
		"accounts[1].send.type: graph sends with the oauth2 grant of a graph backend; this account's backend is maildir: use type smtp",
		"accounts[1].send.from: must be set for type graph when the user name is not an address: the addresses this account sends as",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	if len(got) != 4 {
		t.Errorf("%d problems, want 4:\n%s", len(got), strings.Join(got, "\n"))
	}
}
