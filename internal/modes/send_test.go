package modes_test

import (
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
)

// TestSMTPDefault: the reading servers of Gmail and Office 365 give their
// submission servers, in any case and with or without a port; others
// give none.
func TestSMTPDefault(t *testing.T) {
	for addr, want := range map[string]modes.SMTPServer{
		"imap.gmail.com:993":         {Addr: "smtp.gmail.com:465", TLS: modes.TLSImplicit},
		"POP.Gmail.com:995":          {Addr: "smtp.gmail.com:465", TLS: modes.TLSImplicit},
		"outlook.office365.com:993":  {Addr: "smtp.office365.com:587", TLS: modes.TLSStartTLS},
		"outlook.office365.com.:995": {Addr: "smtp.office365.com:587", TLS: modes.TLSStartTLS},
	} {
		if got, ok := modes.SMTPDefault(addr); !ok || got != want {
			t.Errorf("%s: %+v %v, want %+v", addr, got, ok, want)
		}
	}
	for _, addr := range []string{"imap.example.com:993", "127.0.0.1:143", ""} {
		if got, ok := modes.SMTPDefault(addr); ok {
			t.Errorf("%s: default %+v, want none", addr, got)
		}
	}
	if modes.SMTPTLSModes.Default() != modes.TLSStartTLS || modes.SMTPAuth.Default() != modes.AuthPassword || modes.SMTPTLSModes.Has(modes.TLSNone) {
		t.Error("smtp defaults changed")
	}
}
