package config

import "strings"

// TypeIMAP serves a folder of an upstream IMAP server (backends/imap).
const TypeIMAP = "imap"

// IMAPBackend serves a folder of an upstream IMAP server.
type IMAPBackend struct {
	// Addr is the server's host:port, e.g. imap.gmail.com:993.
	Addr string `yaml:"addr"`
	// TLS is implicit (RFC 8314, port 993), starttls or none (clear
	// text, for loopback tests only). Empty means implicit.
	TLS string `yaml:"tls"`
	// CAFile is a PEM file of roots to trust instead of the system's.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name checked in the server's certificate; empty
	// means the host of Addr.
	ServerName string `yaml:"server_name"`
	// Auth is password (Username and Password, with AUTHENTICATE PLAIN
	// or LOGIN), xoauth2 or oauthbearer (Username and the access token in
	// TokenFile), or passthrough (the POP3 client's own user name and
	// password; the account then needs no password_hash). Empty means
	// password.
	Auth string `yaml:"auth"`
	// Username is the IMAP user name for every auth but passthrough.
	Username string `yaml:"username"`
	// Password, or PasswordFile naming a file holding it, is the IMAP
	// password for auth password. ${ENV} references are expanded.
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// TokenFile holds the OAuth2 access token for xoauth2 and
	// oauthbearer. It is read at every login, so an external refresher
	// may rewrite it.
	TokenFile string `yaml:"token_file"`
	// OAuth2, when set, is the OAuth2 client whose stored and refreshed
	// tokens (popbridge auth) replace TokenFile.
	OAuth2 *OAuth2 `yaml:"oauth2"`
	// Folder is the mailbox served. Empty means INBOX.
	Folder string `yaml:"folder"`
	// OnDelete is expunge (the default), move:FOLDER, seen (set \Seen
	// and hide from POP) or keep (hide from POP only).
	OnDelete string `yaml:"on_delete"`
	// MarkReadOnRetr sets \Seen on the messages RETR sends.
	MarkReadOnRetr bool `yaml:"mark_read_on_retr"`
	// DialTimeout bounds connecting (default 15s); CommandTimeout is how
	// long the server may stay silent during a command (default 60s).
	DialTimeout    Duration `yaml:"dial_timeout"`
	CommandTimeout Duration `yaml:"command_timeout"`
}

// IMAP backend settings values.
const (
	IMAPAuthPassword    = "password"
	IMAPAuthXOAUTH2     = "xoauth2"
	IMAPAuthOAuthBearer = "oauthbearer"
	IMAPAuthPassthrough = "passthrough"
	OnDeleteExpunge     = "expunge"
	OnDeleteSeen        = "seen"
	OnDeleteMovePrefix  = "move:"
)

// Passthrough reports whether the account's backend checks the POP3
// client's own password upstream, so that password_hash is optional.
func (a Account) Passthrough() bool {
	return a.Backend.IMAP != nil && a.Backend.IMAP.Auth == IMAPAuthPassthrough ||
		a.Backend.POP3 != nil && a.Backend.POP3.Auth == POP3AuthPassthrough
}

func (b *IMAPBackend) resolve(r *resolver, key string) {
	r.path(&b.CAFile)
	r.path(&b.TokenFile)
	if b.OAuth2 != nil {
		b.OAuth2.resolve(r, key+".oauth2")
	}
	r.secret(key+".password", &b.Password, key+".password_file", &b.PasswordFile)
}

func (b *IMAPBackend) validate(p *problems, key string) {
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
	case "", IMAPAuthPassword:
		if b.Username == "" {
			p.add(key+".username", "must be set for auth password")
		}
		if b.Password == "" && b.PasswordFile == "" {
			p.add(key+".password", "must be set for auth password (or password_file)")
		}
	case IMAPAuthXOAUTH2, IMAPAuthOAuthBearer:
		if b.Username == "" {
			p.add(key+".username", "must be set for auth %s", b.Auth)
		}
		if b.TokenFile == "" && b.OAuth2 == nil {
			p.add(key+".token_file", "must be set for auth %s (or oauth2)", b.Auth)
		}
	case IMAPAuthPassthrough:
		if b.Username != "" {
			p.add(key+".username", "not used with auth passthrough (the POP3 user name is the IMAP one)")
		}
		if b.Password != "" || b.PasswordFile != "" {
			p.add(key+".password", "not used with auth passthrough (the POP3 password is the IMAP one)")
		}
	default:
		p.add(key+".auth", "unknown auth %q (want %s)", b.Auth,
			strings.Join([]string{IMAPAuthPassword, IMAPAuthXOAUTH2, IMAPAuthOAuthBearer, IMAPAuthPassthrough}, ", "))
	}
	if b.OAuth2 != nil {
		if b.TokenFile != "" {
			p.add(key+".oauth2", "set either token_file or oauth2, not both")
		}
		b.OAuth2.validate(p, key+".oauth2", or(b.Auth, "password"))
	}
	switch folder, move := strings.CutPrefix(b.OnDelete, OnDeleteMovePrefix); {
	case move && folder == "":
		p.add(key+".on_delete", "move: needs a folder, e.g. move:Trash")
	case move && folder == or(b.Folder, "INBOX"):
		p.add(key+".on_delete", "moves to the folder served")
	case move:
	case b.OnDelete == "", b.OnDelete == OnDeleteExpunge, b.OnDelete == OnDeleteSeen, b.OnDelete == OnDeleteKeep:
	default:
		p.add(key+".on_delete", "unknown policy %q (want expunge, move:FOLDER, seen or keep)", b.OnDelete)
	}
	for _, d := range []struct {
		key string
		val Duration
	}{{"dial_timeout", b.DialTimeout}, {"command_timeout", b.CommandTimeout}} {
		if v, err := d.val.Value(); err != nil {
			p.add(key+"."+d.key, "%v", err)
		} else if v < 0 {
			p.add(key+"."+d.key, "must not be negative")
		}
	}
}

// or returns s, or def when s is empty.
func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
