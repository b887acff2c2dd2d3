package app

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/modes"
)

// TokenDir is the directory of the OAuth2 token store in the state
// directory: one file per account.
const TokenDir = "tokens"

// OAuthAccount returns the OAuth2 settings of account a and the protocol
// its scopes follow, or nil if its backend has no oauth2 section.
//
// A Microsoft account whose send section sends with the grant (xoauth2
// or oauthbearer without a token_file) gets the scope SMTP.Send beside
// the default ones, so that one popbridge auth covers reading and
// sending. Accounts without a send section keep the scopes they had.
// A graph account that sends through Graph (its default) gets Mail.Send
// (Mail.Send.Shared for another mailbox).
func OAuthAccount(a config.Account) (*config.OAuth2, string) {
	o, proto := oauthAccount(a)
	if o == nil || o.Provider != modes.ProviderMicrosoft || len(o.Scopes) > 0 || proto == oauth.Gmail {
		return o, proto
	}
	if s, _ := a.DefaultSend(); s != nil && s.Type == modes.SendGraph && (proto == oauth.Graph || proto == oauth.GraphShared) {
		// Sending through Graph (the default of a graph backend) needs
		// Mail.Send, or Mail.Send.Shared for another mailbox.
		with := *o
		scope := modes.GraphSendScope
		if proto == oauth.GraphShared {
			scope = modes.GraphSendSharedScope
		}
		with.Scopes = append(oauth.DefaultScopes(o.Provider, proto), scope)
		return &with, proto
	}
	if s, _ := a.DefaultSend(); a.Send != nil && s.Type == modes.SendSMTP && s.Auth.Token() && s.TokenFile == "" {
		with := *o
		with.Scopes = append(oauth.DefaultScopes(o.Provider, proto), SMTPSendScope)
		return &with, proto
	}
	return o, proto
}

// SMTPSendScope lets an Outlook or Exchange Online token send over SMTP.
const SMTPSendScope = "https://outlook.office.com/SMTP.Send"

func oauthAccount(a config.Account) (*config.OAuth2, string) {
	switch {
	case a.Backend.IMAP != nil && a.Backend.IMAP.OAuth2 != nil:
		return a.Backend.IMAP.OAuth2, oauth.IMAP
	case a.Backend.POP3 != nil && a.Backend.POP3.OAuth2 != nil:
		return a.Backend.POP3.OAuth2, oauth.POP3
	case a.Backend.Gmail != nil && a.Backend.Gmail.OAuth2 != nil:
		return a.Backend.Gmail.OAuth2, oauth.Gmail
	case a.Backend.Graph != nil && a.Backend.Graph.OAuth2 != nil:
		if m := a.Backend.Graph.Mailbox; m != "" && !strings.EqualFold(m, "me") {
			return a.Backend.Graph.OAuth2, oauth.GraphShared
		}
		return a.Backend.Graph.OAuth2, oauth.Graph
	}
	return nil, ""
}

// OAuthClient returns the OAuth2 client of o for protocol and the token
// store under stateDir, with the key of token_key_file or
// POPBRIDGE_TOKEN_KEY.
func OAuthClient(o *config.OAuth2, protocol, stateDir string) (*oauth2.Config, *oauth.Store, error) {
	cfg, err := oauth.Config{
		Provider: o.Provider, ClientID: o.ClientID, ClientSecret: o.ClientSecret, Tenant: o.Tenant,
		AuthURL: o.AuthURL, TokenURL: o.TokenURL, DeviceURL: o.DeviceURL, Scopes: o.Scopes,
	}.OAuth2(protocol)
	if err != nil {
		return nil, nil, err
	}
	key, err := oauth.LoadKey(o.TokenKeyFile)
	if err != nil {
		return nil, nil, err
	}
	return cfg, &oauth.Store{Dir: filepath.Join(stateDir, TokenDir), Key: key}, nil
}

// oauthSource returns the refreshing token source of account a for its
// backend, or nil if the backend has no oauth2 section. The backend and
// the sender of an account built from the same settings share one
// source, so that one refresh serves both.
func oauthSource(a config.Account, st *state) (oauth2.TokenSource, error) {
	orig, _ := oauthAccount(a)
	if orig == nil {
		return nil, nil
	}
	if src := st.sources[orig]; src != nil {
		return src, nil
	}
	o, proto := OAuthAccount(a)
	cfg, store, err := OAuthClient(o, proto, st.tokenHome())
	if err != nil {
		return nil, fmt.Errorf("oauth2: %w", err)
	}
	if st.tokenDB == nil {
		warnOpen(st, a, store.Path(a.User))
	}
	warnOpen(st, a, o.TokenKeyFile)
	src := oauth.NewSource(context.Background(), a.User, cfg, st.tokenStore(store), st.log)
	st.metrics.tokenSource(a, src)
	st.inval.watch(src)
	if st.sources == nil {
		st.sources = map[*config.OAuth2]*oauth.Source{}
	}
	st.sources[orig] = src
	return src, nil
}

// warnOpen logs a warning when file, which holds a secret of account a,
// is open to other users; the message says which chmod fixes it.
func warnOpen(st *state, a config.Account, file string) {
	if st.log == nil || file == "" {
		return
	}
	if err := oauth.CheckPrivate(file); err != nil {
		st.log.Warn().Str("account", a.User).Str("file", file).Msg(err.Error())
	}
}
