package modes_test

import (
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
)

func TestListString(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{modes.MaildirOnDelete.String(), "remove or keep"},
		{modes.POP3OnDelete.String(), "delete or keep"},
		{modes.IMAPOnDelete.String(), "expunge, move:FOLDER, seen or keep"},
		{modes.GmailOnDelete.String(), "archive, trash, delete, mark-read or keep"},
		{modes.TLSModes.String(), "implicit, starttls or none"},
		{modes.IMAPAuth.String(), "password, xoauth2, oauthbearer or passthrough"},
		{modes.POP3Auth.String(), "password, xoauth2 or passthrough"},
		{modes.XOAUTH2Forms.String(), "one-line or two-line"},
		{modes.Providers.String(), "google, microsoft or custom"},
		{modes.List[modes.TLS]{modes.TLSNone}.String(), "none"},
	} {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}

func TestListDefaults(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{string(modes.MaildirOnDelete.Or("")), "remove"},
		{string(modes.POP3OnDelete.Or("")), "delete"},
		{string(modes.IMAPOnDelete.Or("")), "expunge"},
		{string(modes.GmailOnDelete.Or("")), "archive"},
		{string(modes.TLSModes.Or("")), "implicit"},
		{string(modes.IMAPAuth.Or("")), "password"},
		{string(modes.POP3Auth.Or("")), "password"},
		{string(modes.XOAUTH2Forms.Or("")), "one-line"},
		{string(modes.GmailOnDelete.Or(modes.Keep)), "keep"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestListHas(t *testing.T) {
	if !modes.GmailOnDelete.Has(modes.MarkRead) || modes.GmailOnDelete.Has(modes.Expunge) || modes.GmailOnDelete.Has("") {
		t.Error("GmailOnDelete.Has: mark-read must be in, expunge and the empty word out")
	}
	if !modes.POP3Auth.Has(modes.AuthXOAUTH2) || modes.POP3Auth.Has(modes.AuthOAuthBearer) {
		t.Error("POP3Auth.Has: xoauth2 must be in, oauthbearer out")
	}
}

func TestMove(t *testing.T) {
	if folder, ok := modes.Move("Trash").MoveTarget(); !ok || folder != "Trash" {
		t.Errorf("Move(Trash).MoveTarget() = %q, %v", folder, ok)
	}
	if folder, ok := modes.OnDelete("move:").MoveTarget(); !ok || folder != "" {
		t.Errorf("move:.MoveTarget() = %q, %v", folder, ok)
	}
	if _, ok := modes.Expunge.MoveTarget(); ok {
		t.Error("expunge is a move")
	}
}

func TestAuthToken(t *testing.T) {
	for a, want := range map[modes.Auth]bool{
		modes.AuthPassword: false, modes.AuthXOAUTH2: true, modes.AuthOAuthBearer: true, modes.AuthPassthrough: false, "": false,
	} {
		if a.Token() != want {
			t.Errorf("%q.Token() = %v", a, !want)
		}
	}
}
