package config

import "github.com/popbridge/popbridge/internal/modes"

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
	OnDelete modes.OnDelete `yaml:"on_delete"`
	// MarkReadOnRetr sets \Seen on the messages RETR sends.
	MarkReadOnRetr bool `yaml:"mark_read_on_retr"`
	// DialTimeout bounds connecting (default 15s); CommandTimeout is how
	// long the server may stay silent during a command (default 60s).
	DialTimeout    Duration `yaml:"dial_timeout"`
	CommandTimeout Duration `yaml:"command_timeout"`
}

// Passthrough reports whether the account's backend checks the POP3
// client's own password upstream, so that password_hash is optional.
func (a Account) Passthrough() bool {
	return a.Backend.IMAP != nil && a.Backend.IMAP.Auth == modes.AuthPassthrough ||
		a.Backend.POP3 != nil && a.Backend.POP3.Auth == modes.AuthPassthrough
}

func (b *IMAPBackend) resolve(r *resolver, key string) {
	b.Upstream.resolve(r, key)
}

func (b *IMAPBackend) validate(p *problems, key string) {
	b.Upstream.validate(p, key, modes.IMAPAuth)
	switch folder, move := b.OnDelete.MoveTarget(); {
	case move && folder == "":
		p.add(key+".on_delete", "move: needs a folder, e.g. move:Trash")
	case move && folder == or(b.Folder, modes.DefaultIMAPFolder):
		p.add(key+".on_delete", "moves to the folder served")
	case move, b.OnDelete == "", modes.IMAPOnDelete.Has(b.OnDelete):
	default:
		p.add(key+".on_delete", "unknown policy %q (want %s)", b.OnDelete, modes.IMAPOnDelete)
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
