package app

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/modes"
)

// TestDescribeGraph checks the description of a graph backend in
// popbridge check and sync, with the defaults of empty settings.
func TestDescribeGraph(t *testing.T) {
	for _, tc := range []struct {
		b    *config.GraphBackend
		want string
	}{
		{&config.GraphBackend{}, "graph https://graph.microsoft.com/v1.0, mailbox me, folder inbox, on_delete deleteditems, download_once false"},
		{&config.GraphBackend{APIEndpoint: "http://127.0.0.1:1/v1.0", Mailbox: "shared@example.com", Folder: "Inbox/Lists",
			OnDelete: modes.Move("Inbox/Done"), DownloadOnce: true, OAuth2: &config.OAuth2{ClientSecret: "s3cret"}},
			"graph http://127.0.0.1:1/v1.0, mailbox shared@example.com, folder Inbox/Lists, on_delete move:Inbox/Done, download_once true"},
	} {
		if got := describe(config.Account{User: "a", Backend: config.Backend{Type: config.TypeGraph, Graph: tc.b}}); got != tc.want {
			t.Errorf("describe = %q, want %q", got, tc.want)
		}
	}
}

// TestGraphOAuth checks that a graph account's oauth2 section asks for
// the Graph scopes by default, at the tenant's endpoints: Mail.Send (or
// Mail.Send.Shared) too, since it sends through Graph unless its send
// section says otherwise.
func TestGraphOAuth(t *testing.T) {
	a := config.Account{User: "g", Backend: config.Backend{Type: config.TypeGraph, Graph: &config.GraphBackend{
		OAuth2: &config.OAuth2{Provider: modes.ProviderMicrosoft, Tenant: "consumers", ClientID: "id"}}}}
	o, proto := OAuthAccount(a)
	if o == nil || proto != oauth.Graph {
		t.Fatalf("OAuthAccount = %v, %q", o, proto)
	}
	cfg, _, err := OAuthClient(o, proto, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Scopes, " "); got != "offline_access https://graph.microsoft.com/Mail.ReadWrite https://graph.microsoft.com/Mail.Send" {
		t.Errorf("scopes %q", got)
	}
	a.Backend.Graph.Mailbox = "shared@example.com"
	o, proto = OAuthAccount(a)
	if shared, _, err := OAuthClient(o, proto, t.TempDir()); err != nil || strings.Join(shared.Scopes, " ") != "offline_access https://graph.microsoft.com/Mail.ReadWrite.Shared https://graph.microsoft.com/Mail.Send.Shared" {
		t.Errorf("scopes for a shared mailbox: %v %v", shared, err)
	}
	a.Send = &config.Send{Type: modes.SendSMTP, Addr: "smtp.office365.com:587", Username: "g@example.com", Password: "pw"}
	if o, proto = OAuthAccount(a); o == nil || len(o.Scopes) != 0 || proto != oauth.GraphShared {
		t.Errorf("sending with smtp: scopes %v (want the defaults, without Mail.Send)", o)
	}
	a.Send = nil
	a.Backend.Graph.OAuth2.Scopes = []string{"offline_access", "Mail.ReadWrite"}
	if o, _ = OAuthAccount(a); !slices.Equal(o.Scopes, []string{"offline_access", "Mail.ReadWrite"}) {
		t.Errorf("own scopes: %v", o.Scopes)
	}
	if cfg.Endpoint.DeviceAuthURL != "https://login.microsoftonline.com/consumers/oauth2/v2.0/devicecode" ||
		cfg.Endpoint.AuthURL != "https://login.microsoftonline.com/consumers/oauth2/v2.0/authorize" {
		t.Errorf("endpoints %+v", cfg.Endpoint)
	}
}

// TestGraphCallMetrics checks popbridge_graph_calls_total: by configured
// account and call, absent until the first call, a no-op without
// listen.http.
func TestGraphCallMetrics(t *testing.T) {
	m := newMetrics(&config.Config{}, nil)
	m.register(config.Account{User: "gwen", Backend: config.Backend{Type: config.TypeGraph}})
	m.setAccounts([]string{"gwen"})
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	if strings.Contains(scrape(), "popbridge_graph_calls_total") {
		t.Error("graph series before the first call")
	}
	m.GraphCall("gwen", "delta")
	m.GraphCall("gwen", "delta")
	m.GraphCall("gwen", "value")
	m.GraphCall("mallory", "delta") // not configured: never a label
	var off *metrics
	off.GraphCall("gwen", "delta")
	body := scrape()
	for series, want := range map[string]float64{`popbridge_graph_calls_total{account="gwen",call="delta"}`: 2,
		`popbridge_graph_calls_total{account="gwen",call="value"}`: 1} {
		if got, ok := metricValue(body, series); !ok || got != want {
			t.Errorf("%s = %v (%v), want %v", series, got, ok, want)
		}
	}
	if strings.Contains(body, "mallory") {
		t.Error("an account that is not configured became a label")
	}
}

// TestDescribeGraphSend: popbridge check says a graph account sends
// through Graph by default, from its user name, with the size limit; and
// that it cannot send when its own scopes lack Mail.Send.
func TestDescribeGraphSend(t *testing.T) {
	a := config.Account{User: "g@contoso.com", Backend: config.Backend{Type: config.TypeGraph, Graph: &config.GraphBackend{
		OAuth2: &config.OAuth2{Provider: modes.ProviderMicrosoft, Tenant: "organizations", ClientID: "id"}}}}
	if got, want := DescribeSend(a), "Microsoft Graph sendMail (copy in Sent Items, at most 2900000 bytes), from g@contoso.com"; got != want {
		t.Errorf("DescribeSend = %q, want %q", got, want)
	}
	a.Backend.Graph.OAuth2.Scopes = []string{"offline_access", "Mail.ReadWrite"}
	if got := DescribeSend(a); !strings.HasPrefix(got, "cannot send: ") || !strings.Contains(got, "Mail.Send") {
		t.Errorf("DescribeSend with scopes lacking Mail.Send = %q", got)
	}
}
