package app

import (
	"testing"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/modes"
)

// TestDescribe checks the backend descriptions of popbridge check and
// sync, with the defaults of empty settings and without secrets.
func TestDescribe(t *testing.T) {
	up := config.Upstream{Addr: "mail.example.com:993", Username: "u", Password: "s3cret"}
	for _, tc := range []struct {
		backend config.Backend
		want    string
	}{
		{config.Backend{Type: config.TypeMaildir, Maildir: &config.MaildirBackend{Path: "/m"}},
			"maildir /m, on_delete remove"},
		{config.Backend{Type: config.TypeMaildir, Maildir: &config.MaildirBackend{Path: "/m", OnDelete: modes.Keep}},
			"maildir /m, on_delete keep"},
		{config.Backend{Type: config.TypePOP3, POP3: &config.POP3Backend{Upstream: up}},
			"pop3 mail.example.com:993, tls implicit, auth password"},
		{config.Backend{Type: config.TypeIMAP, IMAP: &config.IMAPBackend{Upstream: up}},
			"imap mail.example.com:993/INBOX, tls implicit, auth password, on_delete expunge"},
		{config.Backend{Type: config.TypeIMAP, IMAP: &config.IMAPBackend{
			Upstream: config.Upstream{Addr: "127.0.0.1:143", TLS: modes.TLSStartTLS, Auth: modes.AuthPassthrough},
			Folder:   "Work", OnDelete: modes.Move("Trash")}},
			"imap 127.0.0.1:143/Work, tls starttls, auth passthrough, on_delete move:Trash"},
		{config.Backend{Type: config.TypeGmail, Gmail: &config.GmailBackend{}},
			"gmail https://gmail.googleapis.com/, labels INBOX, on_delete archive, download_once false"},
		{config.Backend{Type: config.TypeGmail, Gmail: &config.GmailBackend{APIEndpoint: "http://127.0.0.1:1/",
			Labels: []string{"INBOX", "Label_1"}, OnDelete: modes.Keep, DownloadOnce: true}},
			"gmail http://127.0.0.1:1/, labels INBOX+Label_1, on_delete keep, download_once true"},
	} {
		if got := describe(config.Account{User: "a", Backend: tc.backend}); got != tc.want {
			t.Errorf("describe = %q, want %q", got, tc.want)
		}
	}
}
