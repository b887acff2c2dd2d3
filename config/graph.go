package config

import (
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/popbridge/popbridge/internal/modes"
)

// TypeGraph serves an Outlook.com or Microsoft 365 mail folder through
// Microsoft Graph (backends/graph).
const TypeGraph = "graph"

// GraphBackend serves one mail folder of a Microsoft mailbox through
// Microsoft Graph, for tenants that disable POP and IMAP.
type GraphBackend struct {
	// OAuth2 is the OAuth2 client (provider microsoft with tenant
	// consumers for Outlook.com, organizations or a tenant id for work
	// accounts; or custom); required. Its default scopes are
	// offline_access and Mail.ReadWrite (Mail.ReadWrite.Shared when
	// Mailbox is another mailbox).
	OAuth2 *OAuth2 `yaml:"oauth2"`
	// Mailbox is empty (or "me") for the signed-in user, else the address
	// of a shared or delegated mailbox.
	Mailbox string `yaml:"mailbox"`
	// Folder is a well-known folder name (inbox, archive, ...) or a path
	// of display names ("Inbox/Lists"). Empty means inbox.
	Folder string `yaml:"folder"`
	// Window limits what a session offers, as for gmail; the zero value
	// offers all.
	Window GmailWindow `yaml:"window"`
	// OnDelete is what DELE does at QUIT: deleteditems (move to Deleted
	// Items; the default), archive, delete (permanent), mark-read, keep
	// or move:FOLDER.
	OnDelete modes.OnDelete `yaml:"on_delete"`
	// DownloadOnce hides the messages a session retrieved with RETR once
	// it ends with QUIT.
	DownloadOnce bool `yaml:"download_once"`
	// MarkReadOnRetr marks the messages a session retrieved as read once
	// it ends with QUIT.
	MarkReadOnRetr bool `yaml:"mark_read_on_retr"`
	// ExactSizes fetches every new message once ($value) before offering
	// it, so that LIST is exact. False lists Graph's size estimate until a
	// RETR learns the exact size. Nil means true.
	ExactSizes *bool `yaml:"exact_sizes"`
	// APIEndpoint is the API root, for national clouds, gateways and
	// tests. Empty means https://graph.microsoft.com/v1.0.
	APIEndpoint string `yaml:"api_endpoint"`
	// MaxConcurrent bounds the requests in flight (default and most 4,
	// Graph's per-mailbox limit).
	MaxConcurrent int `yaml:"max_concurrent"`
	// CallTimeout bounds one API request (default 30s).
	CallTimeout Duration `yaml:"call_timeout"`
	// LoginWait bounds the time a login waits for the sizes of new
	// messages (default 8s).
	LoginWait Duration `yaml:"login_wait"`
}

// Exact reports the value of ExactSizes, true when unset.
func (b *GraphBackend) Exact() bool { return b.ExactSizes == nil || *b.ExactSizes }

func (b *GraphBackend) resolve(r *resolver, key string) {
	if b.OAuth2 != nil {
		b.OAuth2.resolve(r, key+".oauth2")
	}
}

// reTenant matches a tenant id (a GUID) or a tenant's domain name.
var reTenant = regexp.MustCompile(`^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)$`)

func (b *GraphBackend) validate(p *problems, key string) {
	if b.OAuth2 == nil {
		p.add(key+".oauth2", "must be set (Microsoft Graph needs an OAuth2 client; see docs/graph.md)")
	} else {
		o := b.OAuth2
		o.validate(p, key+".oauth2", "")
		if o.Provider == modes.ProviderGoogle {
			p.add(key+".oauth2.provider", "google cannot grant Microsoft Graph access (want microsoft or custom)")
		}
		if o.Provider == modes.ProviderMicrosoft && o.Tenant != "" && !slices.Contains(modes.GraphTenants, o.Tenant) && !reTenant.MatchString(o.Tenant) {
			p.add(key+".oauth2.tenant", "%q is not a tenant: want consumers (Outlook.com), organizations (work or school), "+
				"or your tenant's id (a GUID) or domain", o.Tenant)
		}
		b.validateScopes(p, key+".oauth2.scopes")
	}
	if m := b.Mailbox; m != "" && !strings.EqualFold(m, "me") && (!strings.Contains(m, "@") || strings.ContainsAny(m, " \t/")) {
		p.add(key+".mailbox", "%q must be empty (the signed-in user) or a mailbox's address, e.g. shared@example.com", m)
	}
	if f := b.Folder; f != "" && slices.Contains(strings.Split(strings.Trim(f, "/"), "/"), "") {
		p.add(key+".folder", "%q has an empty part (want a well-known name such as inbox, or a path such as Inbox/Lists)", f)
	}
	if err := b.Window.check(); err != nil {
		p.add(key+".window", "%v", err)
	}
	if b.OnDelete != "" && !modes.GraphOnDeleteOK(b.OnDelete) {
		p.add(key+".on_delete", "unknown policy %q (want %s)", b.OnDelete, modes.GraphOnDelete)
	}
	if b.APIEndpoint != "" {
		u, err := url.Parse(b.APIEndpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			p.add(key+".api_endpoint", "must be an http(s) base URL, e.g. %s", modes.DefaultGraphEndpoint)
		}
	}
	if b.MaxConcurrent < 0 || b.MaxConcurrent > modes.DefaultGraphMaxConcurrent {
		p.add(key+".max_concurrent", "must be between 1 and %d, Graph's limit per mailbox (0 means %d)",
			modes.DefaultGraphMaxConcurrent, modes.DefaultGraphMaxConcurrent)
	}
	if v, err := b.CallTimeout.Value(); err != nil {
		p.add(key+".call_timeout", "%v", err)
	} else if v < 0 {
		p.add(key+".call_timeout", "must not be negative")
	}
	if v, err := b.LoginWait.Value(); err != nil {
		p.add(key+".login_wait", "%v", err)
	} else if v < 0 {
		p.add(key+".login_wait", "must not be negative (0 means %v)", modes.DefaultGraphLoginWait)
	}
}

// validateScopes checks scopes a file sets for provider microsoft: they
// must be Graph scopes and allow what on_delete does.
func (b *GraphBackend) validateScopes(p *problems, key string) {
	o := b.OAuth2
	if o.Provider != modes.ProviderMicrosoft || len(o.Scopes) == 0 {
		return
	}
	// has reports whether perm, or its .Shared form, is a scope.
	has := func(perm string) bool {
		return slices.ContainsFunc(o.Scopes, func(s string) bool {
			s = strings.TrimSuffix(strings.TrimPrefix(strings.ToLower(s), "https://graph.microsoft.com/"), ".shared")
			return s == strings.ToLower(perm)
		})
	}
	for _, s := range o.Scopes {
		if strings.HasPrefix(strings.ToLower(s), "https://outlook.office") {
			p.add(key, "%s is for IMAP or POP, not Graph (a token serves one resource); use Mail.ReadWrite and offline_access, or leave scopes out", s)
			return
		}
	}
	readOnly := b.OnDelete == modes.Keep && !b.MarkReadOnRetr
	switch {
	case has("Mail.ReadWrite"):
	case readOnly && has("Mail.Read"):
	case readOnly:
		p.add(key, "must include Mail.Read or Mail.ReadWrite (or leave scopes out for the defaults)")
	default:
		p.add(key, "must include Mail.ReadWrite: on_delete %s changes the mailbox (or leave scopes out for the defaults)",
			modes.GraphOnDelete.Or(b.OnDelete))
	}
	if !has("offline_access") {
		p.add(key, "must include offline_access, or Microsoft sends no refresh token and the account stops working within the hour")
	}
}
