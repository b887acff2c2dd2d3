package config

import "github.com/popbridge/popbridge/internal/modes"

// TypePOP3 relays an upstream POP3 server (backends/pop3).
const TypePOP3 = "pop3"

// POP3Backend relays an upstream POP3 server.
type POP3Backend struct {
	// Upstream is the server and the credentials; auth may be
	// password (USER/PASS, or AUTH PLAIN), xoauth2 or passthrough.
	Upstream `yaml:",inline"`
	// XOAUTH2Form is one-line (AUTH XOAUTH2 <response>, Gmail) or
	// two-line (AUTH XOAUTH2, then the response after "+ ", Outlook).
	// Empty means one-line.
	XOAUTH2Form modes.XOAUTH2Form `yaml:"xoauth2_form"`
	// OnDelete is delete (DELE upstream at QUIT) or keep (hide from POP
	// only, remembered in the cache). Empty means delete.
	OnDelete modes.OnDelete `yaml:"on_delete"`
}

func (b *POP3Backend) resolve(r *resolver, key string) {
	b.Upstream.resolve(r, key)
}

func (b *POP3Backend) validate(p *problems, key string, c *Config) {
	b.Upstream.validate(p, key, modes.POP3Auth)
	if b.XOAUTH2Form != "" && !modes.XOAUTH2Forms.Has(b.XOAUTH2Form) {
		p.add(key+".xoauth2_form", "unknown form %q (want %s)", b.XOAUTH2Form, modes.XOAUTH2Forms)
	}
	if b.OnDelete != "" && !modes.POP3OnDelete.Has(b.OnDelete) {
		p.add(key+".on_delete", "unknown policy %q (want %s)", b.OnDelete, modes.POP3OnDelete)
	}
}
