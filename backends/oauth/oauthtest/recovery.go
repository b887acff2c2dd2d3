package oauthtest

import (
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
)

// GrantText is the reply text of a grant the owner must renew.
const GrantText = "-ERR [SYS/PERM] OAuth2 grant expired or revoked; the owner must run popbridge auth"

// CheckRecovery runs the token recovery cases against a backend whose
// upstream checks access tokens with f.ValidAccess: account's token is
// in store, src is the backend's token source, and login logs in to
// popbridge, returning the reply to PASS (and ending the session). The
// cases are logged with the prefix tag ("oauth: imap XOAUTH2").
func CheckRecovery(t *testing.T, tag string, f *Server, store *oauth.Store, account string, src *oauth.Source, login func() string) {
	t.Helper()
	grant := func() string {
		t.Helper()
		at, rt, exp := f.Issue()
		if err := store.Save(account, &oauth2.Token{AccessToken: at, RefreshToken: rt, TokenType: "Bearer", Expiry: exp}); err != nil {
			t.Fatal(err)
		}
		return at
	}
	ok := func(what string) {
		t.Helper()
		if r := login(); !strings.HasPrefix(r, "+OK") {
			t.Fatalf("%s: %s: PASS %q, want +OK", tag, what, r)
		}
		if _, reauth, err := src.Status(); reauth || err != nil {
			t.Fatalf("%s: %s: token status reauth %v, %v", tag, what, reauth, err)
		}
	}
	refused := func(what string) {
		t.Helper()
		if r := login(); r != GrantText {
			t.Fatalf("%s: %s: PASS %q, want %q", tag, what, r, GrantText)
		}
		if _, reauth, _ := src.Status(); !reauth {
			t.Fatalf("%s: %s: token status does not say re-auth", tag, what)
		}
	}
	stored := func() *oauth2.Token {
		t.Helper()
		tok, err := store.Load(account)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	first := grant()
	ok("a fresh grant")
	n := f.Refreshes()

	// The provider drops the access token; the refresh token stays good.
	f.RevokeAccess()
	ok("access token revoked, refresh token valid")
	if got := f.Refreshes() - n; got != 1 {
		t.Fatalf("%s: %d refreshes after the access token was revoked, want 1", tag, got)
	}
	if tok := stored(); tok.AccessToken == first || !f.ValidAccess(tok.AccessToken) {
		t.Fatalf("%s: the store still holds the rejected access token", tag)
	}
	t.Logf("%s: access token revoked upstream, refresh token valid: dropped, one refresh, login retried: +OK", tag)

	// popbridge auth runs while the backend is live, the token in
	// memory still valid: the new grant is used at the next login as is.
	old := stored().AccessToken
	oldChecks := f.Checked(old)
	next := grant()
	n = f.Refreshes()
	ok("new grant written to the store while live")
	if f.Refreshes() != n || f.Checked(next) == 0 {
		t.Fatalf("%s: the new grant's access token was not used as stored (%d refreshes, checked %d times)", tag, f.Refreshes()-n, f.Checked(next))
	}
	if c := f.Checked(old) - oldChecks; c != 0 {
		t.Fatalf("%s: the replaced access token was still sent (%d times)", tag, c)
	}
	t.Logf("%s: a new grant written to the token store while live is used at the next login, no refresh", tag)

	// The refresh token is revoked too: the owner must act.
	f.RevokeAll()
	f.RevokeAccess()
	refused("access and refresh tokens revoked")
	t.Logf("%s: access and refresh tokens revoked: %q, status re-auth", tag, GrantText)
	grant()
	ok("re-authorized after the refusal")

	// Refreshes work but the upstream rejects every token (the account's
	// access was withdrawn): one refresh, then re-auth needed.
	f.RejectAccess(true)
	n = f.Refreshes()
	refused("every access token rejected")
	if got := f.Refreshes() - n; got != 1 {
		t.Fatalf("%s: %d refreshes while every token is rejected, want 1", tag, got)
	}
	f.RejectAccess(false)
	ok("tokens accepted again")
	t.Logf("%s: fresh tokens rejected too: one refresh, then %q and status re-auth; accepted again at the next login", tag, GrantText)
}
