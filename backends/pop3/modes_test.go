package pop3_test

import (
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/pop3"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
)

// TestOptionsString checks that the description names the defaults New
// applies and no credentials.
func TestOptionsString(t *testing.T) {
	o := pop3.Options{Addr: "pop.example.com:995", Username: "alice", Password: "s3cret"}
	if got, want := o.String(), "pop3 pop.example.com:995, tls implicit, auth password"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	o = pop3.Options{Addr: "127.0.0.1:110", TLS: modes.TLSNone, Auth: modes.AuthPassthrough, Password: "s3cret"}
	if got, want := o.String(), "pop3 127.0.0.1:110, tls none, auth passthrough"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if strings.Contains(o.String(), "s3cret") {
		t.Error("String() shows the password")
	}
}

// TestNewModes checks that New accepts every word of the pop3 lists in
// internal/modes, and refuses others with the list.
func TestNewModes(t *testing.T) {
	store, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	base := func() pop3.Options {
		return pop3.Options{Addr: "127.0.0.1:110", Username: "u", Password: "p",
			TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t"}), Store: store}
	}
	for _, m := range modes.TLSModes {
		o := base()
		o.TLS = m
		if _, err := pop3.New(o); err != nil {
			t.Errorf("tls %s: %v", m, err)
		}
	}
	for _, a := range modes.POP3Auth {
		o := base()
		o.Auth = a
		if _, err := pop3.New(o); err != nil {
			t.Errorf("auth %s: %v", a, err)
		}
	}
	for _, p := range modes.POP3OnDelete {
		o := base()
		o.OnDelete = p
		if _, err := pop3.New(o); err != nil {
			t.Errorf("on_delete %s: %v", p, err)
		}
	}
	for _, tc := range []struct {
		set  func(*pop3.Options)
		want string
	}{
		{func(o *pop3.Options) { o.TLS = "tls" }, `pop3: unknown tls mode "tls" (want implicit, starttls or none)`},
		{func(o *pop3.Options) { o.Auth = modes.AuthOAuthBearer }, `pop3: unknown auth "oauthbearer" (want password, xoauth2 or passthrough)`},
		{func(o *pop3.Options) { o.OnDelete = modes.Expunge }, `pop3: unknown delete policy "expunge" (want delete or keep)`},
		{func(o *pop3.Options) { o.OnDelete, o.Store = modes.Keep, nil }, `pop3: on_delete keep needs a cache store`},
	} {
		o := base()
		tc.set(&o)
		if _, err := pop3.New(o); err == nil || err.Error() != tc.want {
			t.Errorf("New: %v, want %s", err, tc.want)
		}
	}
}
