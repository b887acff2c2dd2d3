package maildir_test

import (
	"testing"

	"github.com/popbridge/popbridge/backends/maildir"
	"github.com/popbridge/popbridge/internal/modes"
)

// TestOptionsString checks that the description names the default New
// applies.
func TestOptionsString(t *testing.T) {
	for _, tc := range []struct {
		opts maildir.Options
		want string
	}{
		{maildir.Options{Path: "/var/mail/alice"}, "maildir /var/mail/alice, on_delete remove"},
		{maildir.Options{Path: "/m", OnDelete: modes.Keep}, "maildir /m, on_delete keep"},
	} {
		if got := tc.opts.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

// TestNewModes checks that New accepts the maildir delete policies of
// internal/modes (keep needs a store), and refuses others with the list.
func TestNewModes(t *testing.T) {
	if _, err := maildir.New(maildir.Options{Path: "/m", OnDelete: modes.Remove}); err != nil {
		t.Errorf("remove: %v", err)
	}
	if _, err := maildir.New(maildir.Options{Path: "/m", OnDelete: modes.Keep}); err == nil {
		t.Error("keep without a store: no error")
	}
	want := `maildir: unknown delete policy "archive" (want remove or keep)`
	if _, err := maildir.New(maildir.Options{Path: "/m", OnDelete: modes.Archive}); err == nil || err.Error() != want {
		t.Errorf("New: %v, want %s", err, want)
	}
	if len(modes.MaildirOnDelete) != 2 {
		t.Errorf("MaildirOnDelete = %v: add the new policy to this test", modes.MaildirOnDelete)
	}
}
