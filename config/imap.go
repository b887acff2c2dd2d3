package config

import "strings"

// TypeIMAP serves a folder of an upstream IMAP server (backends/imap).
const TypeIMAP = "imap"

// IMAPBackend serves a folder of an upstream IMAP server.
type IMAPBackend struct {
	// Upstream is the server and the credentials; auth may be
	// password, xoauth2, oauthbearer or passthrough.
	Upstream `yaml:",inline"`
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
	IMAPAuthPassword    = AuthPassword
	IMAPAuthXOAUTH2     = AuthXOAUTH2
	IMAPAuthOAuthBearer = AuthOAuthBearer
	IMAPAuthPassthrough = AuthPassthrough
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
	b.Upstream.resolve(r, key)
}

func (b *IMAPBackend) validate(p *problems, key string) {
	b.Upstream.validate(p, key, AuthXOAUTH2, AuthOAuthBearer)
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
