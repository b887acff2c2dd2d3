package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/internal/modes"
)

// problems collects validation errors, each prefixed with its key path.
type problems struct {
	errs []error
	skip map[string]bool // keys already reported by Load
}

func (p *problems) add(key, format string, args ...any) {
	if p.skip[key] {
		return
	}
	p.errs = append(p.errs, &Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks the configuration and reports every problem it finds,
// each a *Problem ("key.path: problem"), joined with errors.Join. It
// does no I/O: certificate files, for instance, are read when the server
// starts.
func (c *Config) Validate() error {
	p := &problems{skip: c.failed}
	c.validateListen(p)
	c.validateCleartext(p)
	if c.Log.Level != "" && !slices.Contains([]string{"trace", "debug", "info", "warn", "error"}, c.Log.Level) {
		p.add("log.level", "unknown level %q (want trace, debug, info, warn or error)", c.Log.Level)
	}
	if c.Log.Format != "" && !slices.Contains([]string{"auto", "console", "json"}, c.Log.Format) {
		p.add("log.format", "unknown format %q (want auto, console or json)", c.Log.Format)
	}
	c.Limits.validate(p)
	c.Cache.validate(p)
	c.State.validate(p)
	c.validateAccounts(p)
	c.validateAdmin(p)
	return errors.Join(p.errs...)
}

func (c *Config) validateListen(p *problems) {
	if c.Listen.POP3 == "" && c.Listen.POP3S == "" {
		p.add("listen", "set pop3, pop3s or both")
	}
	checkAddr(p, "listen.pop3", c.Listen.POP3)
	checkAddr(p, "listen.pop3s", c.Listen.POP3S)
	checkAddr(p, "listen.http", c.Listen.HTTP)
	if c.Listen.HTTP != "" && (c.Listen.HTTP == c.Listen.POP3 || c.Listen.HTTP == c.Listen.POP3S) {
		p.add("listen.http", "same address as a POP3 listener")
	}
	if c.HTTP.StatusToken != "" && c.Listen.HTTP == "" {
		key := "http.status_token"
		if c.HTTP.StatusTokenFile != "" {
			key += "_file"
		}
		p.add(key, "set, but listen.http is not")
	}
	if c.Listen.POP3S != "" && c.TLS == nil {
		p.add("listen.pop3s", "needs tls")
	}
	if c.Listen.POP3 != "" && c.Listen.POP3 == c.Listen.POP3S {
		p.add("listen.pop3s", "same address as listen.pop3")
	}
	c.validateSubmission(p)
	c.validateProxyProtocol(p)
	if c.TLS != nil {
		c.TLS.validate(p)
	}
}

func (t *TLS) validate(p *problems) {
	if p.skip["tls.self_signed"] {
		return // not true or false: which keys it needs cannot be told
	}
	if t.SelfSigned {
		if t.CertFile != "" || t.KeyFile != "" {
			p.add("tls.self_signed", "excludes cert_file and key_file (the certificate is created in state_dir)")
		}
	} else {
		if t.CertFile == "" {
			p.add("tls.cert_file", "must be set (or self_signed: true)")
		}
		if t.KeyFile == "" {
			p.add("tls.key_file", "must be set (or self_signed: true)")
		}
		if len(t.Names) > 0 {
			p.add("tls.names", "only with self_signed (a certificate file already names its hosts)")
		}
	}
	for i, n := range t.Names {
		if !validCertName(n) {
			p.add(fmt.Sprintf("tls.names[%d]", i), "invalid name %q (want a host name such as nas.lan or an IP address)", n)
		}
	}
	if _, ok := tlsVersions[t.MinVersion]; !ok && t.MinVersion != "" {
		p.add("tls.min_version", "unknown version %q (want 1.0, 1.1, 1.2 or 1.3)", t.MinVersion)
	}
}

// validCertName reports whether s can be a DNS name or IP address in a
// certificate: an IP address, or dot-separated labels of letters,
// digits, hyphens and underscores, the first of which may be "*".
func validCertName(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for i, label := range strings.Split(s, ".") {
		if label == "*" && i == 0 {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

func checkAddr(p *problems, key, addr string) {
	if addr == "" {
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(key, "invalid address %q (want host:port, e.g. 127.0.0.1:1110)", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add(key, "invalid port %q", port)
	}
}

func (c *Config) validateCleartext(p *problems) {
	ca := c.CleartextAuth
	switch {
	case ca.Mode != "" && ca.Networks != nil:
		p.add("cleartext_auth", "set a mode or a list of networks, not both")
	case ca.Mode == "" && ca.Networks != nil && len(ca.Networks) == 0:
		p.add("cleartext_auth", "list at least one network, or use never")
	case ca.Mode == CleartextNever && c.TLS == nil:
		p.add("cleartext_auth", "never needs tls, or no client could log in")
	case ca.Mode != "" && ca.Mode != CleartextNever && ca.Mode != CleartextLoopback && ca.Mode != CleartextAlways:
		p.add("cleartext_auth", "unknown mode %q (want never, loopback, always or a list of networks)", ca.Mode)
	}
	for i, s := range ca.Networks {
		if _, err := parsePrefix(s); err != nil {
			p.add(fmt.Sprintf("cleartext_auth[%d]", i), "%v", err)
		}
	}
}

func (l *Limits) validate(p *problems) {
	for _, d := range []struct {
		key string
		val Duration
	}{
		{"idle_timeout", l.IdleTimeout},
		{"auth_idle_timeout", l.AuthIdleTimeout},
		{"write_timeout", l.WriteTimeout},
		{"backend_timeout", l.BackendTimeout},
		{"auth_failure_delay", l.AuthFailureDelay},
		{"max_auth_failure_delay", l.MaxAuthFailureDelay},
	} {
		if _, err := d.val.Value(); err != nil {
			p.add("limits."+d.key, "%v", err)
		}
	}
	for i, s := range l.TrustedNetworks {
		if _, err := parsePrefix(s); err != nil {
			p.add(fmt.Sprintf("limits.trusted_networks[%d]", i), "%v", err)
		}
	}
}

func (c *Cache) validate(p *problems) {
	body, berr := c.BodyBytes.Value()
	if berr != nil {
		p.add("cache.body_bytes", "%v", berr)
	}
	if c.BodyBytes == "" {
		body, _ = ByteSize(DefaultBodyBytes).Value()
	}
	item, ierr := c.MaxMessageBytes.Value()
	switch {
	case ierr != nil:
		p.add("cache.max_message_bytes", "%v", ierr)
	case c.MaxMessageBytes != "" && item == 0:
		p.add("cache.max_message_bytes", "must be more than 0 (to turn the body cache off, set body_bytes: 0)")
	case berr == nil && body > 0 && item > body:
		p.add("cache.max_message_bytes", "%s is more than cache.body_bytes (%s), so no such message could be kept", c.MaxMessageBytes, c.bodyBytesText())
	}
}

// bodyBytesText is body_bytes as written, or its default.
func (c *Cache) bodyBytesText() string {
	if c.BodyBytes == "" {
		return "default " + DefaultBodyBytes
	}
	return string(c.BodyBytes)
}

func (c *Config) validateAccounts(p *problems) {
	if len(c.Accounts) == 0 {
		p.add("accounts", "list at least one account")
	}
	users := map[string]int{}
	maildirs := map[string]int{}
	for i, a := range c.Accounts {
		key := fmt.Sprintf("accounts[%d]", i)
		switch {
		case a.User == "":
			p.add(key+".user", "must be set")
		case !validUser(a.User):
			p.add(key+".user", "must be UTF-8 without spaces or control characters")
		}
		if j, dup := users[a.User]; dup && a.User != "" {
			p.add(key+".user", "duplicate of accounts[%d].user %q", j, a.User)
		} else {
			users[a.User] = i
		}

		hashKey := key + ".password_hash"
		if a.PasswordHashFile != "" {
			hashKey = key + ".password_hash_file"
		}
		if a.PasswordHash == "" {
			if !a.Passthrough() {
				p.add(hashKey, "must be set (make one with popbridge hash-password)")
			}
		} else if _, err := bcrypt.Cost([]byte(a.PasswordHash)); err != nil {
			p.add(hashKey, "not a valid bcrypt hash (make one with popbridge hash-password)")
		}

		c.validateBackend(p, key+".backend", a.Backend)
		a.validateSend(p, key+".send")
		if m := a.Backend.Maildir; m != nil && m.Path != "" {
			path := filepath.Clean(m.Path)
			if j, dup := maildirs[path]; dup {
				p.add(key+".backend.path", "same Maildir as accounts[%d]; each Maildir may belong to one account only", j)
			} else {
				maildirs[path] = i
			}
		}
	}
}

func (c *Config) validateBackend(p *problems, key string, b Backend) {
	switch b.Type {
	case "":
		p.add(key+".type", "must be set (one of %s)", strings.Join(backendTypes, ", "))
	case TypeMaildir:
		m := b.Maildir
		if m == nil {
			p.add(key, "maildir settings missing")
			return
		}
		if m.Path == "" {
			p.add(key+".path", "must be set")
		}
		if m.OnDelete != "" && !modes.MaildirOnDelete.Has(m.OnDelete) {
			p.add(key+".on_delete", "unknown policy %q (want %s)", m.OnDelete, modes.MaildirOnDelete)
		}
	case TypePOP3:
		if b.POP3 == nil {
			p.add(key, "pop3 settings missing")
			return
		}
		b.POP3.validate(p, key, c)
	case TypeIMAP:
		if b.IMAP == nil {
			p.add(key, "imap settings missing")
			return
		}
		b.IMAP.validate(p, key)
	case TypeGmail:
		if b.Gmail == nil {
			p.add(key, "gmail settings missing")
			return
		}
		b.Gmail.validate(p, key)
	case TypeGraph:
		if b.Graph == nil {
			p.add(key, "graph settings missing")
			return
		}
		b.Graph.validate(p, key)
	default:
		p.add(key+".type", "unknown type %q (want one of %s)", b.Type, strings.Join(backendTypes, ", "))
	}
}

// validUser reports whether s can be sent as a POP3 USER argument: UTF-8
// without spaces or control characters.
func validUser(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// validateSubmission checks the SMTP submission listeners.
func (c *Config) validateSubmission(p *problems) {
	taken := map[string]string{c.Listen.POP3: "listen.pop3", c.Listen.POP3S: "listen.pop3s", c.Listen.HTTP: "listen.http"}
	for _, l := range []struct{ key, addr string }{{"listen.submission", c.Listen.Submission}, {"listen.submissions", c.Listen.Submissions}} {
		if l.addr == "" {
			continue
		}
		checkAddr(p, l.key, l.addr)
		if c.TLS == nil {
			p.add(l.key, "needs tls (a server certificate: SMTP clients log in only over TLS, except where cleartext_auth allows)")
		}
		if strings.HasSuffix(l.addr, ":0") {
			continue // any free port: never the same
		}
		if other, dup := taken[l.addr]; dup {
			p.add(l.key, "same address as %s", other)
		}
		taken[l.addr] = l.key
	}
}
