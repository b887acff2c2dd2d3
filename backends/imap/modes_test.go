package imap_test

import (
	"strings"
	"testing"

	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/internal/modes"
)

// TestOptionsString checks that the description names the defaults New
// applies and no credentials.
func TestOptionsString(t *testing.T) {
	o := imapb.Options{Addr: "imap.example.com:993", Username: "alice", Password: "s3cret"}
	if got, want := o.String(), "imap imap.example.com:993/INBOX, tls implicit, auth password, on_delete expunge"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	o = imapb.Options{Addr: "127.0.0.1:143", TLS: modes.TLSStartTLS, Auth: modes.AuthXOAUTH2, Folder: "Work",
		OnDelete: modes.Move("Trash"), Password: "s3cret"}
	if got, want := o.String(), "imap 127.0.0.1:143/Work, tls starttls, auth xoauth2, on_delete move:Trash"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if strings.Contains(o.String(), "s3cret") {
		t.Error("String() shows the password")
	}
}

// TestNewModes checks that New accepts every word of the imap lists in
// internal/modes, and refuses others with the list.
func TestNewModes(t *testing.T) {
	base := func() imapb.Options {
		return imapb.Options{Addr: "127.0.0.1:143", Username: "u", Password: "p", TokenSource: tokens("t"),
			Store: openStore(t, t.TempDir())}
	}
	for _, m := range modes.TLSModes {
		o := base()
		o.TLS = m
		if _, err := imapb.New(o); err != nil {
			t.Errorf("tls %s: %v", m, err)
		}
	}
	for _, a := range modes.IMAPAuth {
		o := base()
		o.Auth = a
		if _, err := imapb.New(o); err != nil {
			t.Errorf("auth %s: %v", a, err)
		}
	}
	for _, p := range modes.IMAPOnDelete {
		o := base()
		o.OnDelete = p
		if _, err := imapb.New(o); err != nil {
			t.Errorf("on_delete %s: %v", p, err)
		}
	}
	for _, tc := range []struct {
		set  func(*imapb.Options)
		want string
	}{
		{func(o *imapb.Options) { o.TLS = "tls" }, `imap: unknown tls mode "tls" (want implicit, starttls or none)`},
		{func(o *imapb.Options) { o.Auth = "plain" }, `imap: unknown auth "plain" (want password, xoauth2, oauthbearer or passthrough)`},
		{func(o *imapb.Options) { o.OnDelete = "remove" }, `imap: unknown delete policy "remove" (want expunge, move:FOLDER, seen or keep)`},
		{func(o *imapb.Options) { o.OnDelete = "move:" }, `imap: delete policy move: needs a folder (move:FOLDER)`},
		{func(o *imapb.Options) { o.OnDelete = modes.Move("INBOX") }, `imap: delete policy "move:INBOX" moves to the folder served`},
		{func(o *imapb.Options) { o.OnDelete, o.Store = modes.Seen, nil }, `imap: on_delete seen needs a cache store`},
	} {
		o := base()
		tc.set(&o)
		if _, err := imapb.New(o); err == nil || err.Error() != tc.want {
			t.Errorf("New: %v, want %s", err, tc.want)
		}
	}
}
