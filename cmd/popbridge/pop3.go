package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	pop3relay "github.com/popbridge/popbridge/backends/pop3"
	"github.com/popbridge/popbridge/config"
)

// newPOP3Backend builds the pop3 relay backend of account a.
func newPOP3Backend(a config.Account, st *state) (*pop3relay.Backend, error) {
	c := a.Backend.POP3
	opts := pop3relay.Options{
		Addr:           c.Addr,
		TLS:            pop3relay.TLSMode(c.TLS),
		Auth:           pop3relay.Auth(c.Auth),
		Username:       c.Username,
		Password:       c.Password,
		XOAUTH2TwoLine: c.XOAUTH2Form == "two-line",
		OnDelete:       pop3relay.DeletePolicy(c.OnDelete),
		Account:        a.User,
		Store:          st.store,
		Bodies:         st.bodies,
	}
	if c.TokenFile != "" {
		opts.TokenSource = pop3relay.FileTokenSource(c.TokenFile)
	}
	if c.OAuth2 != nil {
		ts, err := oauthSource(a, st)
		if err != nil {
			return nil, err
		}
		opts.TokenSource = ts
	}
	if c.CAFile != "" || c.ServerName != "" {
		opts.TLSConfig = &tls.Config{ServerName: c.ServerName}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			opts.TLSConfig.RootCAs = x509.NewCertPool()
			if !opts.TLSConfig.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca_file %s: no PEM certificates", c.CAFile)
			}
		}
	}
	return pop3relay.New(opts)
}

// or returns s, or def when s is empty.
func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
