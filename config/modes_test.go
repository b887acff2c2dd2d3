package config

import (
	"reflect"
	"slices"
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
)

// TestValidateThroughModes checks that config takes the words of each
// backend setting from internal/modes: a word added there is accepted
// here and named in the message about a word that is not.
func TestValidateThroughModes(t *testing.T) {
	m, p, i, g, tls, forms, providers := modes.MaildirOnDelete, modes.POP3OnDelete, modes.IMAPOnDelete,
		modes.GmailOnDelete, modes.TLSModes, modes.XOAUTH2Forms, modes.Providers
	t.Cleanup(func() {
		modes.MaildirOnDelete, modes.POP3OnDelete, modes.IMAPOnDelete, modes.GmailOnDelete,
			modes.TLSModes, modes.XOAUTH2Forms, modes.Providers = m, p, i, g, tls, forms, providers
	})
	modes.MaildirOnDelete = append(slices.Clip(modes.MaildirOnDelete), "new")
	modes.POP3OnDelete = append(slices.Clip(modes.POP3OnDelete), "new")
	modes.IMAPOnDelete = append(slices.Clip(modes.IMAPOnDelete), "new")
	modes.GmailOnDelete = append(slices.Clip(modes.GmailOnDelete), "new")
	modes.TLSModes = append(slices.Clip(modes.TLSModes), "new")
	modes.XOAUTH2Forms = append(slices.Clip(modes.XOAUTH2Forms), "new")
	modes.Providers = append(slices.Clip(modes.Providers), "new")

	up := Upstream{Addr: "h:1", TLS: "new", Username: "u", Password: "p"}
	c := &Config{
		Listen: Listen{POP3: "127.0.0.1:0"},
		Accounts: []Account{
			{User: "m", PasswordHash: testHash, Backend: Backend{Type: TypeMaildir,
				Maildir: &MaildirBackend{Path: "/m", OnDelete: "new"}}},
			{User: "p", PasswordHash: testHash, Backend: Backend{Type: TypePOP3,
				POP3: &POP3Backend{Upstream: up, OnDelete: "new", XOAUTH2Form: "new"}}},
			{User: "i", PasswordHash: testHash, Backend: Backend{Type: TypeIMAP,
				IMAP: &IMAPBackend{Upstream: up, OnDelete: "new"}}},
			{User: "g", PasswordHash: testHash, Backend: Backend{Type: TypeGmail,
				Gmail: &GmailBackend{OAuth2: &OAuth2{Provider: "new", ClientID: "id"}, OnDelete: "new"}}},
		},
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate with the new words: %v", err)
	}

	c.Accounts[0].Backend.Maildir.OnDelete = "old"
	c.Accounts[1].Backend.POP3.OnDelete = "old"
	c.Accounts[1].Backend.POP3.XOAUTH2Form = "old"
	c.Accounts[1].Backend.POP3.TLS = "old"
	c.Accounts[2].Backend.IMAP.OnDelete = "old"
	c.Accounts[3].Backend.Gmail.OnDelete = "old"
	c.Accounts[3].Backend.Gmail.OAuth2.Provider = "old"
	want := []string{
		`accounts[0].backend.on_delete: unknown policy "old" (want remove, keep or new)`,
		`accounts[1].backend.tls: unknown mode "old" (want implicit, starttls, none or new)`,
		`accounts[1].backend.xoauth2_form: unknown form "old" (want one-line, two-line or new)`,
		`accounts[1].backend.on_delete: unknown policy "old" (want delete, keep or new)`,
		`accounts[2].backend.on_delete: unknown policy "old" (want expunge, move:FOLDER, seen, keep or new)`,
		`accounts[3].backend.oauth2.provider: unknown provider "old" (want google, microsoft, custom or new)`,
		`accounts[3].backend.on_delete: unknown policy "old" (want archive, trash, delete, mark-read, keep or new)`,
	}
	if got := errLines(c.Validate()); !reflect.DeepEqual(got, want) {
		t.Errorf("Validate =\n%q\nwant\n%q", got, want)
	}
}
