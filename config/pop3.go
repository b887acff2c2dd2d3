package config

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
	XOAUTH2Form string `yaml:"xoauth2_form"`
	// OnDelete is delete (DELE upstream at QUIT) or keep (hide from POP
	// only, remembered in the cache). Empty means delete.
	OnDelete string `yaml:"on_delete"`
}

// POP3 backend settings values.
const (
	POP3AuthPassword    = AuthPassword
	POP3AuthXOAUTH2     = AuthXOAUTH2
	POP3AuthPassthrough = AuthPassthrough
	OnDeleteDelete      = "delete"
)

func (b *POP3Backend) resolve(r *resolver, key string) {
	b.Upstream.resolve(r, key)
}

func (b *POP3Backend) validate(p *problems, key string, c *Config) {
	b.Upstream.validate(p, key, AuthXOAUTH2)
	switch b.XOAUTH2Form {
	case "", "one-line", "two-line":
	default:
		p.add(key+".xoauth2_form", "unknown form %q (want one-line or two-line)", b.XOAUTH2Form)
	}
	switch b.OnDelete {
	case "", OnDeleteDelete, OnDeleteKeep:
	default:
		p.add(key+".on_delete", "unknown policy %q (want delete or keep)", b.OnDelete)
	}
}
