package app

import (
	pop3relay "github.com/popbridge/popbridge/backends/pop3"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/modes"
)

// newPOP3Backend builds the pop3 relay backend of account a.
func newPOP3Backend(a config.Account, st *state) (*pop3relay.Backend, error) {
	c := a.Backend.POP3
	opts := pop3relay.Options{
		Addr:           c.Addr,
		TLS:            c.TLS,
		Auth:           c.Auth,
		Username:       c.Username,
		Password:       c.Password,
		XOAUTH2TwoLine: c.XOAUTH2Form == modes.XOAUTH2TwoLine,
		OnDelete:       c.OnDelete,
		Account:        a.User,
		Store:          st.store,
		Bodies:         st.bodies,
		Logger:         st.log,
	}
	var err error
	if opts.TokenSource, opts.TLSConfig, err = upstream(a, c.Upstream, st); err != nil {
		return nil, err
	}
	return pop3relay.New(opts)
}
