package gmail_test

import (
	"path/filepath"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
)

// TestOptionsString checks that the description names the defaults New
// applies.
func TestOptionsString(t *testing.T) {
	if got, want := (gmail.Options{}).String(), "gmail https://gmail.googleapis.com/, labels INBOX, on_delete archive, download_once false"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	o := gmail.Options{Endpoint: "http://127.0.0.1:8080/", Labels: []string{"INBOX", "Label_1"}, OnDelete: modes.Keep, DownloadOnce: true}
	if got, want := o.String(), "gmail http://127.0.0.1:8080/, labels INBOX+Label_1, on_delete keep, download_once true"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestNewModes checks that New accepts every gmail delete policy of
// internal/modes, and refuses others with the list.
func TestNewModes(t *testing.T) {
	store, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	opts := func(p modes.OnDelete) gmail.Options {
		return gmail.Options{Account: "a", Store: store, OnDelete: p,
			TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t"})}
	}
	for _, p := range modes.GmailOnDelete {
		b, err := gmail.New(opts(p))
		if err != nil {
			t.Errorf("on_delete %s: %v", p, err)
			continue
		}
		b.Close()
	}
	want := `gmail: unknown delete policy "expunge" (want archive, trash, delete, mark-read or keep)`
	if _, err := gmail.New(opts(modes.Expunge)); err == nil || err.Error() != want {
		t.Errorf("New: %v, want %s", err, want)
	}
}
