package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
)

func TestGraphBackend(t *testing.T) {
	c, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, tenant: consumers, client_id: 00000000-aaaa-bbbb-cccc-000000000001}
  - user: bob
    password_hash: "HASH"
    backend:
      type: graph
      oauth2:
        provider: microsoft
        tenant: contoso.onmicrosoft.com
        client_id: id
        scopes: [offline_access, Mail.ReadWrite, Mail.Send]
      mailbox: shared@contoso.com
      folder: Inbox/Lists
      window: {batch: 250}
      on_delete: move:Inbox/Done
      download_once: true
      mark_read_on_retr: true
      exact_sizes: false
      api_endpoint: https://graph.microsoft.us/v1.0
      max_concurrent: 2
      call_timeout: 10s
      login_wait: 20s
  - user: carol
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47, client_id: id}
      window: {since: 30d}
      on_delete: delete
  - user: dave
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, tenant: organizations, client_id: id, scopes: [offline_access, Mail.Read]}
      on_delete: keep
  - user: erin
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, client_id: id, scopes: [offline_access, https://graph.microsoft.com/Mail.ReadWrite.Shared]}
      mailbox: shared@contoso.com
`)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Accounts[0].Backend.Graph
	if a == nil || !a.Exact() || a.OnDelete != "" || a.Folder != "" || a.Mailbox != "" || a.Window != (GmailWindow{}) ||
		a.OAuth2.Tenant != "consumers" || c.Accounts[0].Passthrough() {
		t.Errorf("alice: %+v", a)
	}
	b := c.Accounts[1].Backend.Graph
	if b == nil || b.Exact() || !b.DownloadOnce || !b.MarkReadOnRetr || b.Window.Batch != 250 || b.OnDelete != modes.Move("Inbox/Done") ||
		b.Mailbox != "shared@contoso.com" || b.Folder != "Inbox/Lists" || b.APIEndpoint != "https://graph.microsoft.us/v1.0" ||
		b.MaxConcurrent != 2 || b.CallTimeout != "10s" || b.LoginWait != "20s" {
		t.Errorf("bob: %+v", b)
	}
	if g := c.Accounts[2].Backend.Graph; g.OnDelete != modes.Delete || g.Window.Since != "30d" {
		t.Errorf("carol: %+v", g)
	}

	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: graph
      mailbox: "not an address"
      folder: Inbox//Lists
      window: {since: yesterday}
      on_delete: trash
      api_endpoint: "ftp://x"
      max_concurrent: 5
  - user: bob
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: google, client_id: id}
      on_delete: "move:"
      window: {since: 30d, batch: 10}
  - user: carol
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, tenant: my tenant, client_id: id, scopes: [https://outlook.office.com/IMAP.AccessAsUser.All, offline_access]}
      login_wait: -1s
  - user: dave
    password_hash: "HASH"
    backend:
      type: graph
      oauth2: {provider: microsoft, client_id: id, scopes: [Mail.Read]}
      call_timeout: soon
`)
	for _, want := range []string{
		"accounts[0].backend.oauth2: must be set (Microsoft Graph needs an OAuth2 client; see docs/graph.md)",
		`accounts[0].backend.mailbox: "not an address" must be empty (the signed-in user) or a mailbox's address`,
		`accounts[0].backend.folder: "Inbox//Lists" has an empty part`,
		`accounts[0].backend.window: since "yesterday"`,
		`accounts[0].backend.on_delete: unknown policy "trash" (want deleteditems, archive, delete, mark-read, keep or move:FOLDER)`,
		"accounts[0].backend.api_endpoint: must be an http(s) base URL, e.g. https://graph.microsoft.com/v1.0",
		"accounts[0].backend.max_concurrent: must be between 1 and 4, Graph's limit per mailbox (0 means 4)",
		"accounts[1].backend.oauth2.provider: google cannot grant Microsoft Graph access (want microsoft or custom)",
		`accounts[1].backend.on_delete: unknown policy "move:"`,
		"accounts[1].backend.window: set since or batch",
		`accounts[2].backend.oauth2.tenant: "my tenant" is not a tenant: want consumers (Outlook.com), organizations (work or school), or your tenant's id (a GUID) or domain`,
		"accounts[2].backend.oauth2.scopes: https://outlook.office.com/IMAP.AccessAsUser.All is for IMAP or POP, not Graph",
		"accounts[2].backend.login_wait: must not be negative (0 means 8s)",
		"accounts[3].backend.oauth2.scopes: must include Mail.ReadWrite: on_delete deleteditems changes the mailbox",
		"accounts[3].backend.oauth2.scopes: must include offline_access, or Microsoft sends no refresh token",
		`accounts[3].backend.call_timeout: invalid duration "soon"`,
	} {
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
      type: graph
      oauth2: {provider: microsoft, client_id: id}
      labels: [INBOX]
`)
	if err == nil || !strings.Contains(err.Error(), `unknown key "labels" for backend type graph`) {
		t.Errorf("gmail key on graph: %v", err)
	}
}

// TestGraphThroughModes checks that graph's on_delete words come from
// internal/modes: a word added there is accepted and suggested here.
func TestGraphThroughModes(t *testing.T) {
	saved := modes.GraphOnDelete
	t.Cleanup(func() { modes.GraphOnDelete = saved })
	modes.GraphOnDelete = append(modes.GraphOnDelete[:len(modes.GraphOnDelete):len(modes.GraphOnDelete)], "new")
	c := &Config{
		Listen: Listen{POP3: "127.0.0.1:0"},
		Accounts: []Account{{User: "g", PasswordHash: testHash, Backend: Backend{Type: TypeGraph,
			Graph: &GraphBackend{OAuth2: &OAuth2{Provider: modes.ProviderMicrosoft, ClientID: "id"}, OnDelete: "new"}}}},
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate with the new word: %v", err)
	}
	c.Accounts[0].Backend.Graph.OnDelete = "old"
	want := []string{`accounts[0].backend.on_delete: unknown policy "old" (want deleteditems, archive, delete, mark-read, keep, move:FOLDER or new)`}
	if got := errLines(c.Validate()); !reflect.DeepEqual(got, want) {
		t.Errorf("Validate =\n%q\nwant\n%q", got, want)
	}
}
