package config

import (
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/popbridge/popbridge/internal/modes"
)

// OAuth2 is the OAuth2 client of a gmail backend, or of an imap or pop3
// backend with auth xoauth2 or oauthbearer. "popbridge auth ACCOUNT" obtains the account's
// refresh token with it and stores it under state_dir/tokens; the
// server then refreshes access tokens as needed. It replaces token_file.
type OAuth2 struct {
	// Provider is google, microsoft or custom.
	Provider modes.Provider `yaml:"provider"`
	// ClientID is the OAuth2 client's id.
	ClientID string `yaml:"client_id"`
	// ClientSecret, or ClientSecretFile naming a file holding it, is the
	// client's secret. Google desktop clients have one (not really
	// secret); Microsoft public clients have none. ${ENV} references are
	// expanded.
	ClientSecret     string `yaml:"client_secret"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// Tenant is the Microsoft tenant: common, organizations, consumers
	// or a tenant id. Empty means common.
	Tenant string `yaml:"tenant"`
	// AuthURL, TokenURL and DeviceURL are the endpoints; custom needs
	// auth_url (loopback flow) or device_url (device flow), and
	// token_url. For google and microsoft they override the defaults.
	AuthURL   string `yaml:"auth_url"`
	TokenURL  string `yaml:"token_url"`
	DeviceURL string `yaml:"device_url"`
	// Scopes overrides the scopes that follow from provider and backend
	// type (Gmail IMAP and POP: https://mail.google.com/; Gmail API:
	// gmail.modify; Outlook: the IMAP or POP AccessAsUser.All scope plus
	// offline_access).
	Scopes []string `yaml:"scopes"`
	// TokenKeyFile names a file holding the key (32 bytes, hex or
	// base64) that encrypts the stored token. Empty means the key in the
	// environment variable POPBRIDGE_TOKEN_KEY, if set, else no
	// encryption.
	TokenKeyFile string `yaml:"token_key_file"`
}

// UnmarshalYAML decodes strictly: an unknown key is an error.
func (o *OAuth2) UnmarshalYAML(n *yaml.Node) error {
	type plain OAuth2
	if n.Kind != yaml.MappingNode {
		return typeErrorf("line %d: oauth2 must be a mapping", n.Line)
	}
	known := yamlKeys(reflect.TypeFor[OAuth2]())
	var errs []string
	for _, kv := range pairs(n) {
		if !known[kv[0].Value] {
			errs = append(errs, "line "+strconv.Itoa(kv[0].Line)+": unknown key \""+kv[0].Value+"\" in oauth2")
		}
	}
	if err := n.Decode((*plain)(o)); err != nil {
		return err
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

func (o *OAuth2) resolve(r *resolver, key string) {
	r.path(&o.TokenKeyFile)
	r.secret(key+".client_secret", &o.ClientSecret, key+".client_secret_file", &o.ClientSecretFile)
}

// validate checks o; auth is the backend's auth setting, "" for a
// backend (gmail) that always uses OAuth2.
func (o *OAuth2) validate(p *problems, key string, auth modes.Auth) {
	if auth != "" && !auth.Token() {
		p.add(key, "needs auth xoauth2 or oauthbearer")
	}
	if o.ClientID == "" {
		p.add(key+".client_id", "must be set")
	}
	checkURL := func(k, v string) {
		if v == "" {
			return
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			p.add(key+"."+k, "must be an http(s) URL")
		}
	}
	checkURL("auth_url", o.AuthURL)
	checkURL("token_url", o.TokenURL)
	checkURL("device_url", o.DeviceURL)
	switch {
	case o.Provider == modes.ProviderCustom:
		if o.TokenURL == "" {
			p.add(key+".token_url", "must be set for provider custom")
		}
		if o.AuthURL == "" && o.DeviceURL == "" {
			p.add(key+".auth_url", "set auth_url, device_url or both for provider custom")
		}
		if len(o.Scopes) == 0 {
			p.add(key+".scopes", "must be set for provider custom")
		}
	case o.Provider == "":
		p.add(key+".provider", "must be set (%s)", modes.Providers)
	case !modes.Providers.Has(o.Provider):
		p.add(key+".provider", "unknown provider %q (want %s)", o.Provider, modes.Providers)
	}
	if o.Tenant != "" && o.Provider != modes.ProviderMicrosoft {
		p.add(key+".tenant", "only for provider microsoft")
	}
	for _, s := range o.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\"\\") {
			p.add(key+".scopes", "scope %q must be one non-empty word", s)
		}
	}
}
