package config

import "strings"

// TypePOP3 relays an upstream POP3 server (backends/pop3).
const TypePOP3 = "pop3"

// POP3Backend relays an upstream POP3 server.
type POP3Backend struct {
	// Addr is the upstream host:port, e.g. pop.gmail.com:995.
	Addr string `yaml:"addr"`
	// TLS is implicit (RFC 8314, port 995), starttls (STLS, RFC 2595) or
	// none (clear text, for loopback tests only). Empty means implicit.
	TLS string `yaml:"tls"`
	// CAFile is a PEM file of roots to trust instead of the system's.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name checked in the upstream certificate; empty
	// means the host of Addr.
	ServerName string `yaml:"server_name"`
	// Auth is password (Username and Password with USER/PASS, or AUTH
	// PLAIN), xoauth2 (Username and the token in TokenFile) or
	// passthrough (the POP3 client's own user name and password). Empty
	// means password.
	Auth string `yaml:"auth"`
	// Username is the upstream user name for password and xoauth2.
	Username string `yaml:"username"`
	// Password, or PasswordFile naming a file holding it, is the upstream
	// password for auth password. ${ENV} references are expanded.
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// TokenFile holds the OAuth2 access token for xoauth2. It is read at
	// every login, so an external refresher may rewrite it.
	TokenFile string `yaml:"token_file"`
	// OAuth2, when set, is the OAuth2 client whose stored and refreshed
	// tokens (popbridge auth) replace TokenFile.
	OAuth2 *OAuth2 `yaml:"oauth2"`
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
	POP3AuthPassword    = "password"
	POP3AuthXOAUTH2     = "xoauth2"
	POP3AuthPassthrough = "passthrough"
	OnDeleteDelete      = "delete"
)

func (b *POP3Backend) resolve(r *resolver, key string) {
	r.path(&b.CAFile)
	r.path(&b.TokenFile)
	if b.OAuth2 != nil {
		b.OAuth2.resolve(r, key+".oauth2")
	}
	r.secret(key+".password", &b.Password, key+".password_file", &b.PasswordFile)
}

func (b *POP3Backend) validate(p *problems, key string, c *Config) {
	if b.Addr == "" {
		p.add(key+".addr", "must be set (host:port)")
	} else {
		checkAddr(p, key+".addr", b.Addr)
	}
	switch b.TLS {
	case "", "implicit", "starttls", "none":
	default:
		p.add(key+".tls", "unknown mode %q (want implicit, starttls or none)", b.TLS)
	}
	switch b.Auth {
	case "", POP3AuthPassword:
		if b.Username == "" {
			p.add(key+".username", "must be set for auth password")
		}
		if b.Password == "" && b.PasswordFile == "" {
			p.add(key+".password", "must be set for auth password (or password_file)")
		}
	case POP3AuthXOAUTH2:
		if b.Username == "" {
			p.add(key+".username", "must be set for auth xoauth2")
		}
		if b.TokenFile == "" && b.OAuth2 == nil {
			p.add(key+".token_file", "must be set for auth xoauth2 (or oauth2)")
		}
	case POP3AuthPassthrough:
		// The POP3 client's own user name and password go upstream.
	default:
		p.add(key+".auth", "unknown auth %q (want %s)", b.Auth,
			strings.Join([]string{POP3AuthPassword, POP3AuthXOAUTH2, POP3AuthPassthrough}, ", "))
	}
	if b.OAuth2 != nil {
		if b.TokenFile != "" {
			p.add(key+".oauth2", "set either token_file or oauth2, not both")
		}
		b.OAuth2.validate(p, key+".oauth2", or(b.Auth, "password"))
	}
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
