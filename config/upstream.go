package config

import (
	"strings"

	"github.com/popbridge/popbridge/internal/modes"
)

// Upstream is how a backend reaches an upstream mail server (imap,
// pop3): its address, TLS, and the credentials to send. It is inlined in
// those backends' settings.
type Upstream struct {
	// Addr is the server's host:port, e.g. imap.gmail.com:993.
	Addr string `yaml:"addr"`
	// TLS is implicit (RFC 8314: port 993 or 995), starttls (STARTTLS or
	// STLS) or none (clear text, for loopback tests only). Empty means
	// implicit.
	TLS modes.TLS `yaml:"tls"`
	// CAFile is a PEM file of roots to trust instead of the system's.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name checked in the server's certificate; empty
	// means the host of Addr.
	ServerName string `yaml:"server_name"`
	// Auth is password (Username and Password), an OAuth2 mechanism
	// (xoauth2, and for imap oauthbearer: Username and a token from
	// OAuth2 or TokenFile), or passthrough (the POP3 client's own user
	// name and password; the account then needs no password_hash).
	// Empty means password.
	Auth modes.Auth `yaml:"auth"`
	// Username is the upstream user name for every auth but passthrough.
	Username string `yaml:"username"`
	// Password, or PasswordFile naming a file holding it, is the upstream
	// password for auth password. ${ENV} references are expanded.
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// TokenFile holds an OAuth2 access token. It is read at every login,
	// so an external refresher may rewrite it.
	TokenFile string `yaml:"token_file"`
	// OAuth2, when set, is the OAuth2 client whose stored and refreshed
	// tokens (popbridge auth) replace TokenFile.
	OAuth2 *OAuth2 `yaml:"oauth2"`
}

func (u *Upstream) resolve(r *resolver, key string) {
	r.path(&u.CAFile)
	r.path(&u.TokenFile)
	if u.OAuth2 != nil {
		u.OAuth2.resolve(r, key+".oauth2")
	}
	r.secret(key+".password", &u.Password, key+".password_file", &u.PasswordFile)
}

// validate checks the address, the TLS mode and the credentials; auths
// lists the credentials the backend can send.
func (u *Upstream) validate(p *problems, key string, auths modes.List[modes.Auth]) {
	if u.Addr == "" {
		p.add(key+".addr", "must be set (host:port)")
	} else {
		checkAddr(p, key+".addr", u.Addr)
	}
	if u.TLS != "" && !modes.TLSModes.Has(u.TLS) {
		p.add(key+".tls", "unknown mode %q (want %s)", u.TLS, modes.TLSModes)
	}
	switch {
	case !auths.Has(auths.Or(u.Auth)):
		words := make([]string, len(auths))
		for i, a := range auths {
			words[i] = string(a)
		}
		p.add(key+".auth", "unknown auth %q (want %s)", u.Auth, strings.Join(words, ", "))
	case auths.Or(u.Auth) == modes.AuthPassword:
		if u.Username == "" {
			p.add(key+".username", "must be set for auth password")
		}
		if u.Password == "" && u.PasswordFile == "" {
			p.add(key+".password", "must be set for auth password (or password_file)")
		}
	case u.Auth.Token():
		if u.Username == "" {
			p.add(key+".username", "must be set for auth %s", u.Auth)
		}
		if u.TokenFile == "" && u.OAuth2 == nil {
			p.add(key+".token_file", "must be set for auth %s (or oauth2)", u.Auth)
		}
	case u.Auth == modes.AuthPassthrough:
		if u.Username != "" {
			p.add(key+".username", "not used with auth passthrough (the POP3 user name goes upstream)")
		}
		if u.Password != "" || u.PasswordFile != "" {
			p.add(key+".password", "not used with auth passthrough (the POP3 password goes upstream)")
		}
	}
	if u.OAuth2 != nil {
		if u.TokenFile != "" {
			p.add(key+".oauth2", "set either token_file or oauth2, not both")
		}
		u.OAuth2.validate(p, key+".oauth2", auths.Or(u.Auth))
	}
}
