package app

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"golang.org/x/oauth2"

	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/config"
)

// newIMAPBackend builds the imap backend of account a.
func newIMAPBackend(a config.Account, st *state) (*imapb.Backend, error) {
	c := a.Backend.IMAP
	dial, err := c.DialTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("dial_timeout: %w", err)
	}
	command, err := c.CommandTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("command_timeout: %w", err)
	}
	opts := imapb.Options{
		Addr:           c.Addr,
		TLS:            c.TLS,
		Auth:           c.Auth,
		Username:       c.Username,
		Password:       c.Password,
		Folder:         c.Folder,
		OnDelete:       c.OnDelete,
		MarkReadOnRetr: c.MarkReadOnRetr,
		Store:          st.store,
		Bodies:         st.bodies,
		Account:        a.User,
		DialTimeout:    dial,
		CommandTimeout: command,
		Logger:         st.log,
	}
	if opts.TokenSource, opts.TLSConfig, err = upstream(a, c.Upstream, st); err != nil {
		return nil, err
	}
	b, err := imapb.New(opts)
	if err == nil {
		st.metrics.syncSource(a, b)
	}
	return b, err
}

// upstream returns the token source (nil for password logins) and the
// TLS settings of account a's upstream server u.
func upstream(a config.Account, u config.Upstream, st *state) (oauth2.TokenSource, *tls.Config, error) {
	var ts oauth2.TokenSource
	if u.TokenFile != "" {
		warnOpen(st, a, u.TokenFile)
		ts = oauth.FileTokenSource(u.TokenFile)
	}
	if u.OAuth2 != nil {
		var err error
		if ts, err = oauthSource(a, st); err != nil {
			return nil, nil, err
		}
	}
	conf, err := clientTLS(u.CAFile, u.ServerName)
	if err != nil {
		return nil, nil, err
	}
	return ts, conf, nil
}

// clientTLS returns the TLS settings for an upstream server: nil for the
// system roots and the address's host, else the roots in caFile and the
// name serverName.
func clientTLS(caFile, serverName string) (*tls.Config, error) {
	if caFile == "" && serverName == "" {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates", caFile)
		}
	}
	return cfg, nil
}
