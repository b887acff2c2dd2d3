package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Admin configures the owner's web page served on listen.admin.
type Admin struct {
	// PasswordHash is the bcrypt hash of the admin password (popbridge
	// hash-password). It may be a ${ENV_VAR} reference, or
	// PasswordHashFile may name a file holding it.
	PasswordHash     string `yaml:"password_hash"`
	PasswordHashFile string `yaml:"password_hash_file"`
	// Hosts are more names the page may be opened with (the Host of the
	// browser's address): a name ("nas.lan") matches on any port, a
	// name:port or addr:port only there. localhost, 127.0.0.1:PORT and
	// [::1]:PORT (and the bound address:PORT) are always allowed.
	Hosts []string `yaml:"hosts"`
	// TLS serves the page over HTTPS with the certificate of the tls
	// section.
	TLS bool `yaml:"tls"`
	// Cleartext says from where the page may be used over plain HTTP, in
	// cleartext_auth's form; the zero value allows loopback only.
	Cleartext CleartextAuth `yaml:"cleartext"`
}

// resolveAdmin binds a listen.admin given as a port only ("8080" or
// ":8080") to loopback, and reads the password hash.
func (r *resolver) resolveAdmin(c *Config) {
	if a := c.Listen.Admin; a != "" {
		if _, err := strconv.Atoi(a); err == nil {
			c.Listen.Admin = "127.0.0.1:" + a
		} else if strings.HasPrefix(a, ":") {
			c.Listen.Admin = "127.0.0.1" + a
		}
	}
	if c.Admin != nil {
		r.secret("admin.password_hash", &c.Admin.PasswordHash, "admin.password_hash_file", &c.Admin.PasswordHashFile)
	}
}

// AdminLoopback reports whether listen.admin is bound to a loopback
// address (always so for a port only).
func (c *Config) AdminLoopback() bool {
	host, _, err := net.SplitHostPort(c.Listen.Admin)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func (c *Config) validateAdmin(p *problems) {
	l := c.Listen.Admin
	checkAddr(p, "listen.admin", l)
	if l != "" && !strings.HasSuffix(l, ":0") && (l == c.Listen.POP3 || l == c.Listen.POP3S || l == c.Listen.HTTP) {
		p.add("listen.admin", "same address as another listener")
	}
	a := c.Admin
	if a == nil {
		if l != "" {
			p.add("listen.admin", "needs an admin password: run popbridge hash-password and put the hash in admin.password_hash")
		}
		return
	}
	if l == "" {
		p.add("admin", "set, but listen.admin is not (the page is off)")
	}
	hashKey := "admin.password_hash"
	if a.PasswordHashFile != "" {
		hashKey += "_file"
	}
	if a.PasswordHash == "" {
		p.add(hashKey, "must be set: run popbridge hash-password and put the hash here")
	} else if _, err := bcrypt.Cost([]byte(a.PasswordHash)); err != nil {
		p.add(hashKey, "not a valid bcrypt hash (make one with popbridge hash-password)")
	}
	for i, h := range a.Hosts {
		name := h
		if n, port, err := net.SplitHostPort(h); err == nil {
			if v, err := strconv.Atoi(port); err != nil || v <= 0 || v > 65535 {
				p.add(fmt.Sprintf("admin.hosts[%d]", i), "invalid port in %q", h)
				continue
			}
			name = n
		}
		if !validCertName(strings.Trim(name, "[]")) || strings.HasPrefix(name, "*") {
			p.add(fmt.Sprintf("admin.hosts[%d]", i), "invalid name %q (want a host name such as nas.lan, an IP address, or either with :port)", h)
		}
	}
	if a.TLS && c.TLS == nil {
		p.add("admin.tls", "needs the tls section (the page uses its certificate)")
	}
	ca := a.Cleartext
	switch {
	case ca.Mode != "" && ca.Networks != nil:
		p.add("admin.cleartext", "set a mode or a list of networks, not both")
	case ca.Mode == "" && ca.Networks != nil && len(ca.Networks) == 0:
		p.add("admin.cleartext", "list at least one network, or use never")
	case ca.Mode == CleartextNever && !a.TLS:
		p.add("admin.cleartext", "never needs admin.tls: true, or nobody could use the page")
	case ca.Mode != "" && ca.Mode != CleartextNever && ca.Mode != CleartextLoopback && ca.Mode != CleartextAlways:
		p.add("admin.cleartext", "unknown mode %q (want never, loopback, always or a list of networks)", ca.Mode)
	}
	for i, s := range ca.Networks {
		if _, err := parsePrefix(s); err != nil {
			p.add(fmt.Sprintf("admin.cleartext[%d]", i), "%v", err)
		}
	}
}
