// Package oauth obtains, stores and refreshes OAuth2 tokens for the
// backends that log in with XOAUTH2 or OAUTHBEARER (imap, pop3) and for
// the Gmail API backend.
//
// The interactive flows (Loopback, Device) run once per account, from
// "popbridge auth"; the refresh token they return is kept by a Store, one
// file per account, optionally encrypted. A Source then gives the
// backends fresh access tokens, refreshing once for all the sessions of
// an account and persisting every token the server returns.
package oauth

import (
	"fmt"
	"strings"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/internal/modes"
)

// Protocols that scopes depend on.
const (
	IMAP  = "imap"
	POP3  = "pop3"
	Gmail = "gmail" // the Gmail REST API
)

// Protocols of Microsoft Graph (backends/graph).
const (
	Graph       = "graph"        // the signed-in user's mailbox
	GraphShared = "graph-shared" // another user's or a shared mailbox
)

// GmailModifyScope reads, labels and trashes Gmail messages, but cannot
// delete them for good.
const GmailModifyScope = "https://www.googleapis.com/auth/gmail.modify"

// Config describes an OAuth2 client. The zero URLs of Google and
// Microsoft take the provider's endpoints; Custom needs AuthURL and
// TokenURL (and DeviceURL for the device flow).
type Config struct {
	// Provider is one of modes.Providers.
	Provider     modes.Provider
	ClientID     string
	ClientSecret string // empty for public clients
	// Tenant is the Microsoft tenant: common, organizations, consumers
	// or a tenant id. Empty means modes.DefaultMicrosoftTenant.
	Tenant string
	// AuthURL, TokenURL and DeviceURL override the provider's endpoints.
	AuthURL, TokenURL, DeviceURL string
	// Scopes overrides DefaultScopes(Provider, protocol).
	Scopes []string
}

// DefaultScopes returns the scopes that let protocol (IMAP, POP3, the
// Gmail API or Graph) log in at provider: https://mail.google.com/ for
// Google's IMAP and POP, gmail.modify for the Gmail API, the Outlook
// resource scope plus offline_access for Microsoft's IMAP and POP,
// modes.GraphScopes for Graph, none for Custom.
func DefaultScopes(provider modes.Provider, protocol string) []string {
	switch provider {
	case modes.ProviderGoogle:
		if protocol == Gmail {
			return []string{GmailModifyScope}
		}
		return []string{"https://mail.google.com/"}
	case modes.ProviderMicrosoft:
		switch protocol {
		case Graph:
			return append([]string(nil), modes.GraphScopes...)
		case GraphShared:
			return append([]string(nil), modes.GraphSharedScopes...)
		}
		if protocol == POP3 {
			return []string{"https://outlook.office.com/POP.AccessAsUser.All", "offline_access"}
		}
		return []string{"https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"}
	}
	return nil
}

// OAuth2 returns the x/oauth2 configuration of c for protocol. The
// RedirectURL is left for the loopback flow to fill in.
func (c Config) OAuth2(protocol string) (*oauth2.Config, error) {
	var ep oauth2.Endpoint
	switch c.Provider {
	case modes.ProviderGoogle:
		ep = oauth2.Endpoint{
			AuthURL:       "https://accounts.google.com/o/oauth2/auth",
			TokenURL:      "https://oauth2.googleapis.com/token",
			DeviceAuthURL: "https://oauth2.googleapis.com/device/code",
		}
	case modes.ProviderMicrosoft:
		t := c.Tenant
		if t == "" {
			t = modes.DefaultMicrosoftTenant
		}
		base := "https://login.microsoftonline.com/" + t + "/oauth2/v2.0/"
		ep = oauth2.Endpoint{AuthURL: base + "authorize", TokenURL: base + "token", DeviceAuthURL: base + "devicecode"}
	case modes.ProviderCustom:
	default:
		return nil, fmt.Errorf("oauth: unknown provider %q (want %s)", c.Provider, modes.Providers)
	}
	if c.AuthURL != "" {
		ep.AuthURL = c.AuthURL
	}
	if c.TokenURL != "" {
		ep.TokenURL = c.TokenURL
	}
	if c.DeviceURL != "" {
		ep.DeviceAuthURL = c.DeviceURL
	}
	if ep.TokenURL == "" {
		return nil, fmt.Errorf("oauth: provider %s needs token_url", c.Provider)
	}
	// Public clients (no secret) must not send an empty Basic password;
	// confidential ones send the secret in the form too, which every
	// provider here accepts.
	ep.AuthStyle = oauth2.AuthStyleInParams
	scopes := c.Scopes
	if len(scopes) == 0 {
		scopes = DefaultScopes(c.Provider, protocol)
	}
	return &oauth2.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		Endpoint:     ep,
		Scopes:       append([]string(nil), scopes...),
	}, nil
}

// DefaultFlow is the interactive flow "popbridge auth" uses for provider
// when none is chosen: the device flow for Microsoft (it suits headless
// servers), the loopback flow otherwise (Google's device flow cannot
// grant Gmail scopes).
func DefaultFlow(provider modes.Provider) string {
	if strings.EqualFold(string(provider), string(modes.ProviderMicrosoft)) {
		return "device"
	}
	return "loopback"
}
