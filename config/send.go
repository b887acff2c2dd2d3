package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/popbridge/popbridge/internal/modes"
)

// Send is an account's send section: where the mail its clients submit
// over SMTP (listen.submission, listen.submissions) goes. Without one,
// the account sends as DefaultSend says.
type Send struct {
	// Type is smtp (an upstream submission server) or gmail (the Gmail
	// API, with the gmail backend's oauth2 grant).
	Type modes.Send `yaml:"type"`
	// Addr is the submission server's host:port, e.g.
	// smtp.gmail.com:465. Empty: the provider's server when the backend
	// reads from Gmail or Office 365 (modes.SMTPDefaults).
	Addr string `yaml:"addr"`
	// TLS is starttls (port 587) or implicit (port 465). Empty: the
	// provider's, else implicit on port 465 and starttls otherwise.
	TLS        modes.TLS `yaml:"tls"`
	CAFile     string    `yaml:"ca_file"`
	ServerName string    `yaml:"server_name"`
	// Auth is password, xoauth2 or oauthbearer. When auth, username,
	// password, password_file and token_file are all empty, the
	// backend's credentials are used (its password, or its token_file or
	// oauth2 grant).
	Auth         modes.Auth `yaml:"auth"`
	Username     string     `yaml:"username"`
	Password     string     `yaml:"password"`
	PasswordFile string     `yaml:"password_file"`
	// TokenFile holds an access token for xoauth2 and oauthbearer;
	// empty: the backend's token_file or oauth2 grant.
	TokenFile string `yaml:"token_file"`
	// From lists the envelope senders (MAIL FROM) the account may use.
	// Empty: the upstream username (smtp), or the account's user name
	// when it is an address (gmail).
	From []string `yaml:"from"`
	// MaxPerMinute is the most messages the account may send in a
	// minute (a burst of that many, then evenly); over it the client gets
	// 451 and retries. 0 means no limit.
	MaxPerMinute int `yaml:"max_per_minute"`
	// DialTimeout and CommandTimeout bound connecting (default 30s) and
	// each reply of the submission server (default 5m).
	DialTimeout    Duration `yaml:"dial_timeout"`
	CommandTimeout Duration `yaml:"command_timeout"`
	// SentFolder, for an imap backend whose server keeps no copy of sent
	// mail, is the folder popbridge appends each message sent to (with
	// the backend's connection and login). Empty: none.
	SentFolder string `yaml:"sent_folder"`
}

func (s *Send) resolve(r *resolver, key string) {
	r.path(&s.CAFile)
	r.path(&s.TokenFile)
	r.secret(key+".password", &s.Password, key+".password_file", &s.PasswordFile)
}

// ownCredentials reports whether the send section names credentials of
// its own rather than the backend's.
func (s *Send) ownCredentials() bool {
	return s.Auth != "" || s.Username != "" || s.Password != "" || s.PasswordFile != "" || s.TokenFile != ""
}

// backendUpstream returns the upstream settings of an imap or pop3
// backend, or nil.
func (a Account) backendUpstream() *Upstream {
	switch {
	case a.Backend.IMAP != nil:
		return &a.Backend.IMAP.Upstream
	case a.Backend.POP3 != nil:
		return &a.Backend.POP3.Upstream
	}
	return nil
}

// DefaultSend returns how account a sends: its send section with the
// defaults filled in from the backend, or the default derived from the
// backend when it has none (a gmail backend sends with the Gmail API; an
// imap or pop3 backend reading from Gmail or Office 365 sends to that
// provider's submission server with the same credentials). When the
// account cannot send, it returns nil and the reason, in plain words.
func (a Account) DefaultSend() (*Send, string) {
	if a.Send != nil {
		s := *a.Send
		s.fill(a)
		return &s, ""
	}
	switch {
	case a.Backend.Gmail != nil:
		s := &Send{Type: modes.SendGmail}
		s.fill(a)
		return s, ""
	case a.Backend.Graph != nil:
		if !a.Backend.Graph.sendScope() {
			return nil, "no send section, and the graph backend's oauth2.scopes lack Mail.Send: add it and run popbridge auth again, or add a send section (see docs/graph.md)"
		}
		s := &Send{Type: modes.SendGraph}
		s.fill(a)
		return s, ""
	case a.backendUpstream() != nil:
		u := a.backendUpstream()
		if _, ok := modes.SMTPDefault(u.Addr); !ok {
			return nil, fmt.Sprintf("no send section, and popbridge knows no submission server for %s: add one (see docs/smtp.md)", u.Addr)
		}
		if u.Auth == modes.AuthPassthrough {
			return nil, "no send section, and auth passthrough leaves popbridge no credentials to send with: add one (see docs/smtp.md)"
		}
		s := &Send{Type: modes.SendSMTP}
		s.fill(a)
		return s, ""
	}
	return nil, fmt.Sprintf("no send section (a %s backend has no default): add one to send mail (see docs/smtp.md)", a.Backend.Type)
}

// fill fills in the defaults of s for account a.
func (s *Send) fill(a Account) {
	s.Type = modes.SendTypes.Or(s.Type)
	if s.Type == modes.SendGmail || s.Type == modes.SendGraph {
		if g := a.Backend.Graph; s.Type == modes.SendGraph && len(s.From) == 0 && g != nil && strings.Contains(g.Mailbox, "@") {
			s.From = []string{g.Mailbox} // a shared mailbox sends as itself
		}
		if len(s.From) == 0 && strings.Contains(a.User, "@") {
			s.From = []string{a.User}
		}
		return
	}
	u := a.backendUpstream()
	if s.Addr == "" && u != nil {
		if d, ok := modes.SMTPDefault(u.Addr); ok {
			s.Addr = d.Addr
			if s.TLS == "" {
				s.TLS = d.TLS
			}
		}
	}
	if s.TLS == "" {
		s.TLS = modes.TLSStartTLS
		if strings.HasSuffix(s.Addr, ":465") {
			s.TLS = modes.TLSImplicit
		}
	}
	if !s.ownCredentials() && u != nil && u.Auth != modes.AuthPassthrough {
		s.Auth, s.Username, s.Password, s.TokenFile = u.Auth, u.Username, u.Password, u.TokenFile
	}
	s.Auth = modes.SMTPAuth.Or(s.Auth)
	if len(s.From) == 0 && s.Username != "" {
		s.From = []string{s.Username}
	}
}

// BackendGrant reports whether account a's backend has an oauth2
// section, whose grant the send section's xoauth2 and oauthbearer use.
func (a Account) BackendGrant() bool {
	u := a.backendUpstream()
	return u != nil && u.OAuth2 != nil || a.Backend.Gmail != nil && a.Backend.Gmail.OAuth2 != nil
}

// validateSend checks account a's send section, key its path.
func (a Account) validateSend(p *problems, key string) {
	if a.Send == nil {
		return
	}
	raw := a.Send
	if raw.Type != "" && !modes.SendTypes.Has(raw.Type) {
		p.add(key+".type", "unknown type %q (want %s)", raw.Type, modes.SendTypes)
		return
	}
	s, _ := a.DefaultSend()
	for i, f := range raw.From {
		if !strings.Contains(f, "@") {
			p.add(fmt.Sprintf("%s.from[%d]", key, i), "%q is not an address (want e.g. alice@example.com)", f)
		}
	}
	for _, d := range []struct {
		key string
		val Duration
	}{{"dial_timeout", raw.DialTimeout}, {"command_timeout", raw.CommandTimeout}} {
		if v, err := d.val.Value(); err != nil {
			p.add(key+"."+d.key, "%v", err)
		} else if v < 0 {
			p.add(key+"."+d.key, "must not be negative")
		}
	}
	if raw.SentFolder != "" {
		switch {
		case a.Backend.IMAP == nil:
			p.add(key+".sent_folder", "only for imap backends (popbridge appends the copy over the backend's IMAP connection); this account's backend is %s: remove it", a.Backend.Type)
		case strings.TrimSpace(raw.SentFolder) == "":
			p.add(key+".sent_folder", "is blank: name the folder (e.g. Sent) or remove the setting")
		}
	}
	if raw.MaxPerMinute < 0 {
		p.add(key+".max_per_minute", "must not be negative (0 means no limit)")
	}
	if s.Type == modes.SendGraph {
		a.validateGraphSend(p, key, s)
		return
	}
	if s.Type == modes.SendGmail {
		if a.Backend.Gmail == nil {
			p.add(key+".type", "gmail sends with the oauth2 grant of a gmail backend; this account's backend is %s: use type smtp", a.Backend.Type)
		}
		for k, set := range map[string]bool{"addr": raw.Addr != "", "tls": raw.TLS != "", "ca_file": raw.CAFile != "", "server_name": raw.ServerName != "",
			"auth": raw.Auth != "", "username": raw.Username != "", "password": raw.Password != "" || raw.PasswordFile != "", "token_file": raw.TokenFile != ""} {
			if set {
				p.add(key+"."+k, "not used with type gmail (only with type smtp)")
			}
		}
		if len(s.From) == 0 {
			p.add(key+".from", "must be set for type gmail when the user name is not an address: the addresses this account sends as")
		}
		return
	}
	if len(raw.From) == 0 && s.Username != "" && !strings.Contains(s.Username, "@") {
		p.add(key+".from", "must be set: the addresses this account sends as (the username %s is not an address)", s.Username)
	}
	if s.Addr == "" {
		p.add(key+".addr", "must be set (host:port of the submission server, e.g. smtp.example.com:587)")
	} else {
		checkAddr(p, key+".addr", s.Addr)
	}
	if raw.TLS != "" && !modes.SMTPTLSModes.Has(raw.TLS) {
		p.add(key+".tls", "unknown mode %q (want %s; submission is never sent in clear text)", raw.TLS, modes.SMTPTLSModes)
	}
	switch {
	case !modes.SMTPAuth.Has(s.Auth):
		p.add(key+".auth", "unknown auth %q (want %s)", s.Auth, modes.SMTPAuth)
	case s.Auth == modes.AuthPassword:
		if s.Username == "" {
			p.add(key+".username", "must be set for auth password")
		}
		if s.Password == "" && raw.PasswordFile == "" && !p.skip[key+".password_file"] {
			p.add(key+".password", "must be set for auth password (or password_file)")
		}
	case s.Auth.Token():
		if s.Username == "" {
			p.add(key+".username", "must be set for auth %s (the mailbox address)", s.Auth)
		}
		if s.TokenFile == "" && !a.BackendGrant() {
			p.add(key+".token_file", "must be set for auth %s, or the backend must have an oauth2 section whose grant is used", s.Auth)
		}
	}
}

// validateGraphSend checks a send section of type graph (s with the
// defaults filled in).
func (a Account) validateGraphSend(p *problems, key string, s *Send) {
	raw := a.Send
	if a.Backend.Graph == nil {
		p.add(key+".type", "graph sends with the oauth2 grant of a graph backend; this account's backend is %s: use type smtp", a.Backend.Type)
	} else if !a.Backend.Graph.sendScope() {
		p.add(key+".type", "graph sends with the scope Mail.Send (Mail.Send.Shared for another mailbox), which the backend's oauth2.scopes lack: add it and run popbridge auth again, or leave scopes out")
	}
	for k, set := range map[string]bool{"addr": raw.Addr != "", "tls": raw.TLS != "", "ca_file": raw.CAFile != "", "server_name": raw.ServerName != "",
		"auth": raw.Auth != "", "username": raw.Username != "", "password": raw.Password != "" || raw.PasswordFile != "", "token_file": raw.TokenFile != "",
		"sent_folder": raw.SentFolder != ""} {
		if set {
			p.add(key+"."+k, "not used with type graph (only with type smtp)")
		}
	}
	if len(s.From) == 0 {
		p.add(key+".from", "must be set for type graph when the user name is not an address: the addresses this account sends as")
	}
}

// sendScope reports whether the backend's grant may send: scopes left
// out (popbridge then asks for Mail.Send), or scopes that include
// Mail.Send or Mail.Send.Shared.
func (b *GraphBackend) sendScope() bool {
	o := b.OAuth2
	if o == nil || o.Provider != modes.ProviderMicrosoft || len(o.Scopes) == 0 {
		return true
	}
	return slices.ContainsFunc(o.Scopes, func(s string) bool {
		s = strings.TrimPrefix(strings.ToLower(s), "https://graph.microsoft.com/")
		return s == "mail.send" || s == "mail.send.shared"
	})
}
