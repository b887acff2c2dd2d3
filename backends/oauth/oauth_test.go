package oauth_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// syncBuffer collects a server's log while the test reads it.
type syncBuffer = dovecottest.SyncBuffer

// waitFor waits until re matches out and returns the first submatch.
func waitFor(t *testing.T, out *syncBuffer, re *regexp.Regexp) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no %v in the output:\n%s", re, out.String())
	return ""
}

var authURLRE = regexp.MustCompile(`(?m)^  (http://\S+/authorize\?\S+)$`)

func fakeConfig(t *testing.T, f *oauthtest.Server) *oauth2.Config {
	t.Helper()
	cfg, err := oauth.Config{Provider: modes.ProviderCustom, ClientID: f.ClientID, ClientSecret: f.ClientSecret,
		AuthURL: f.AuthURL, TokenURL: f.TokenURL, DeviceURL: f.DeviceURL, Scopes: []string{"mail", "offline_access"}}.OAuth2(oauth.IMAP)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type flowResult struct {
	tok *oauth2.Token
	err error
}

func startLoopback(t *testing.T, cfg *oauth2.Config, opts oauth.LoopbackOptions) (*syncBuffer, chan flowResult) {
	out := &syncBuffer{}
	opts.Out = out
	ch := make(chan flowResult, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	go func() {
		tok, err := oauth.Loopback(ctx, cfg, opts)
		ch <- flowResult{tok, err}
	}()
	return out, ch
}

// TestLoopbackBrowser plays the browser: it opens the printed URL at
// the fake, which checks PKCE later, and follows the redirect to the
// loopback listener.
func TestLoopbackBrowser(t *testing.T) {
	f := oauthtest.Start(t)
	f.ClientSecret = "shh"
	out, ch := startLoopback(t, fakeConfig(t, f), oauth.LoopbackOptions{SSHHint: "me@box"})
	u := waitFor(t, out, authURLRE)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "You may close this window") {
		t.Fatalf("browser got %d %q", resp.StatusCode, body)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("Loopback: %v\n%s", r.err, out)
	}
	if !f.ValidAccess(r.tok.AccessToken) || !f.LiveRefreshToken(r.tok.RefreshToken) {
		t.Fatalf("token not issued by the fake: %+v", r.tok)
	}
	if port := regexp.MustCompile(`redirect_uri=http%3A%2F%2F127.0.0.1%3A(\d+)%2F`).FindStringSubmatch(u); port == nil ||
		!strings.Contains(out.String(), "ssh -L "+port[1]+":127.0.0.1:"+port[1]+" me@box") {
		t.Fatalf("no ssh -L line for the redirect port:\n%s", out)
	}
	if got := f.Scopes(); !slices.Equal(got, []string{"mail", "offline_access"}) {
		t.Fatalf("scopes %q", got)
	}
}

// noRedirect is a browser on another machine: it gets the redirect but
// cannot reach the loopback listener.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func redirectOf(t *testing.T, u string) string {
	t.Helper()
	resp, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %s", resp.Status)
	}
	return resp.Header.Get("Location")
}

// TestLoopbackPaste feeds the redirected URL on the paste reader, after
// a line that is not a redirect.
func TestLoopbackPaste(t *testing.T) {
	f := oauthtest.Start(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	out, ch := startLoopback(t, fakeConfig(t, f), oauth.LoopbackOptions{Paste: pr})
	loc := redirectOf(t, waitFor(t, out, authURLRE))
	io.WriteString(pw, "\nhttp://example.org/nothing\n"+loc+"\n")
	r := <-ch
	if r.err != nil {
		t.Fatalf("Loopback: %v\n%s", r.err, out)
	}
	if !f.ValidAccess(r.tok.AccessToken) || r.tok.RefreshToken == "" {
		t.Fatalf("token %+v", r.tok)
	}
	if !strings.Contains(out.String(), "no code= parameter") {
		t.Fatalf("the bad paste got no hint:\n%s", out)
	}
}

// TestLoopbackBadState refuses a pasted URL whose state is not ours.
func TestLoopbackBadState(t *testing.T) {
	f := oauthtest.Start(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	out, ch := startLoopback(t, fakeConfig(t, f), oauth.LoopbackOptions{Paste: pr})
	loc := redirectOf(t, waitFor(t, out, authURLRE))
	loc = regexp.MustCompile(`state=[^&]*`).ReplaceAllString(loc, "state=forged")
	io.WriteString(pw, loc+"\n")
	if r := <-ch; r.err == nil || !strings.Contains(r.err.Error(), "state does not match") {
		t.Fatalf("forged state: %v", r.err)
	}
}

// TestPKCEChecked: a code exchanged with another verifier is refused by
// the fake, which shows that the fake checks PKCE.
func TestPKCEChecked(t *testing.T) {
	f := oauthtest.Start(t)
	cfg := fakeConfig(t, f)
	cfg.RedirectURL = "http://127.0.0.1:1/"
	loc := redirectOf(t, cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	code := regexp.MustCompile(`code=([^&]+)`).FindStringSubmatch(loc)[1]
	_, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("wrong verifier: %v", err)
	}
}

func TestDevice(t *testing.T) {
	f := oauthtest.Start(t)
	f.DevicePending, f.DeviceSlowDown, f.DeviceInterval = 2, 1, 3
	var sleeps []time.Duration
	out := &syncBuffer{}
	tok, err := oauth.Device(context.Background(), fakeConfig(t, f), oauth.DeviceOptions{Out: out,
		Sleep: func(_ context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }})
	if err != nil {
		t.Fatalf("Device: %v\n%s", err, out)
	}
	if !f.ValidAccess(tok.AccessToken) || tok.RefreshToken == "" {
		t.Fatalf("token %+v", tok)
	}
	if want := []string{"authorization_pending", "authorization_pending", "slow_down", "token"}; !slices.Equal(f.Polls(), want) {
		t.Fatalf("polls %q, want %q", f.Polls(), want)
	}
	if want := []time.Duration{3 * time.Second, 3 * time.Second, 3 * time.Second, 8 * time.Second}; !slices.Equal(sleeps, want) {
		t.Fatalf("sleeps %v, want %v", sleeps, want)
	}
	if s := out.String(); !strings.Contains(s, "ABCD-EFGH") || !strings.Contains(s, f.URL+"/devicelogin") {
		t.Fatalf("instructions lack the code or URL:\n%s", s)
	}

	f.DeviceDeny = true
	_, err = oauth.Device(context.Background(), fakeConfig(t, f), oauth.DeviceOptions{Out: io.Discard,
		Sleep: func(context.Context, time.Duration) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("access_denied: %v", err)
	}
}

func TestScopes(t *testing.T) {
	for _, c := range []struct {
		provider modes.Provider
		proto    string
		want     []string
	}{
		{modes.ProviderGoogle, oauth.IMAP, []string{"https://mail.google.com/"}},
		{modes.ProviderGoogle, oauth.POP3, []string{"https://mail.google.com/"}},
		{modes.ProviderMicrosoft, oauth.IMAP, []string{"https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"}},
		{modes.ProviderMicrosoft, oauth.POP3, []string{"https://outlook.office.com/POP.AccessAsUser.All", "offline_access"}},
	} {
		cfg, err := oauth.Config{Provider: c.provider, ClientID: "x"}.OAuth2(c.proto)
		if err != nil || !slices.Equal(cfg.Scopes, c.want) {
			t.Errorf("%s %s: %q %v", c.provider, c.proto, cfg.Scopes, err)
		}
	}
	cfg, _ := oauth.Config{Provider: modes.ProviderMicrosoft, Tenant: "organizations"}.OAuth2(oauth.IMAP)
	if cfg.Endpoint.DeviceAuthURL != "https://login.microsoftonline.com/organizations/oauth2/v2.0/devicecode" {
		t.Errorf("tenant: %s", cfg.Endpoint.DeviceAuthURL)
	}
	if _, err := (oauth.Config{Provider: modes.ProviderCustom}).OAuth2(oauth.IMAP); err == nil {
		t.Error("custom without token_url accepted")
	}
}

func testKey(b byte) *[32]byte {
	var k [32]byte
	for i := range k {
		k[i] = b
	}
	return &k
}

func TestStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tokens")
	s := &oauth.Store{Dir: dir}
	if _, err := s.Load("ann@example.org"); !errors.Is(err, oauth.ErrNoToken) {
		t.Fatalf("empty store: %v", err)
	}
	tok := &oauth2.Token{AccessToken: "at-1", RefreshToken: "rt-1", TokenType: "Bearer", Expiry: time.Now().Add(time.Hour).Round(0)}
	if err := s.Save("ann@example.org", tok); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.Path("ann@example.org"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi.Mode(), err)
	}
	// Replace: the new token wins and no temporary file is left over.
	tok2 := *tok
	tok2.AccessToken, tok2.RefreshToken = "at-2", "rt-2"
	if err := s.Save("ann@example.org", &tok2); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("ann@example.org")
	if err != nil || got.AccessToken != "at-2" || got.RefreshToken != "rt-2" || !got.Expiry.Equal(tok.Expiry) {
		t.Fatalf("Load after replace: %+v %v", got, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files left in the store: %v", ents)
	}
	if s.Path("../x/y") == filepath.Join(dir, "..", "x", "y.json") {
		t.Fatal("account name escapes the store")
	}

	// Encrypted: round trip, nothing readable on disk, wrong or missing
	// key refused clearly; a plain file is still read with a key.
	enc := &oauth.Store{Dir: dir, Key: testKey(1)}
	if got, err := enc.Load("ann@example.org"); err != nil || got.RefreshToken != "rt-2" {
		t.Fatalf("plain file with a key: %v", err)
	}
	if err := enc.Save("ann@example.org", tok); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(enc.Path("ann@example.org"))
	if bytes.Contains(data, []byte("rt-1")) || bytes.Contains(data, []byte("at-1")) {
		t.Fatalf("encrypted file shows the token:\n%s", data)
	}
	if got, err := enc.Load("ann@example.org"); err != nil || got.RefreshToken != "rt-1" || got.AccessToken != "at-1" {
		t.Fatalf("encrypted round trip: %+v %v", got, err)
	}
	for _, k := range []*[32]byte{testKey(2), nil} {
		_, err := (&oauth.Store{Dir: dir, Key: k}).Load("ann@example.org")
		if !errors.Is(err, oauth.ErrWrongKey) || !strings.Contains(err.Error(), oauth.KeyEnv) {
			t.Fatalf("key %v: %v", k != nil, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	b64 := "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
	for _, s := range []string{hex, b64, " " + b64 + "\n"} {
		k, err := oauth.ParseKey(s)
		if err != nil || k[0] != 0xab || k[31] != 0xab {
			t.Errorf("ParseKey(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "short", strings.Repeat("ab", 31)} {
		if _, err := oauth.ParseKey(s); err == nil {
			t.Errorf("ParseKey(%q) accepted", s)
		}
	}
	t.Setenv(oauth.KeyEnv, hex)
	if k, err := oauth.LoadKey(""); err != nil || k == nil {
		t.Fatalf("LoadKey from env: %v", err)
	}
}

// seed stores a token whose access token has expired, with a live
// refresh token at the fake.
func seed(t *testing.T, f *oauthtest.Server, s *oauth.Store, account string) {
	t.Helper()
	f.AddRefreshToken("rt-seed")
	if err := s.Save(account, &oauth2.Token{AccessToken: "at-old", RefreshToken: "rt-seed", Expiry: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
}

func TestSourceRefresh(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		f := oauthtest.Start(t)
		f.Rotate = rotate
		s := &oauth.Store{Dir: t.TempDir(), Key: testKey(7)}
		seed(t, f, s, "ann")
		src := oauth.NewSource(context.Background(), "ann", fakeConfig(t, f), s, nil)
		tok, err := src.Token()
		if err != nil || !f.ValidAccess(tok.AccessToken) {
			t.Fatalf("rotate %v: Token: %+v %v", rotate, tok, err)
		}
		stored, err := s.Load("ann")
		if err != nil || stored.AccessToken != tok.AccessToken {
			t.Fatalf("rotate %v: refreshed token not saved: %v", rotate, err)
		}
		if rotate && (stored.RefreshToken == "rt-seed" || !f.LiveRefreshToken(stored.RefreshToken)) {
			t.Fatalf("rotated refresh token not saved: %q", stored.RefreshToken)
		}
		if !rotate && stored.RefreshToken != "rt-seed" {
			t.Fatalf("refresh token lost when the reply has none: %q", stored.RefreshToken)
		}
		// The cached token serves without another refresh.
		if _, err := src.Token(); err != nil || f.Refreshes() != 1 {
			t.Fatalf("second Token: %d refreshes, %v", f.Refreshes(), err)
		}
	}
}

func TestSourceInvalidGrant(t *testing.T) {
	f := oauthtest.Start(t)
	s := &oauth.Store{Dir: t.TempDir()}
	seed(t, f, s, "ann")
	f.RevokeAll()
	var logBuf syncBuffer
	log := zerolog.New(&logBuf)
	src := oauth.NewSource(context.Background(), "ann", fakeConfig(t, f), s, &log)
	_, err := src.Token()
	var pe *proxy.Error
	if !errors.As(err, &pe) || pe.Code != proxy.CodeSysPerm || !strings.Contains(pe.Text, "popbridge auth") {
		t.Fatalf("invalid_grant: %v", err)
	}
	if l := logBuf.String(); !strings.Contains(l, `"account":"ann"`) || !strings.Contains(l, "invalid_grant") || strings.Contains(l, "rt-seed") {
		t.Fatalf("log: %s", l)
	}
	// The owner runs popbridge auth: the new stored token is picked up.
	seed(t, f, s, "ann")
	if _, err := src.Token(); err != nil {
		t.Fatalf("after re-auth: %v", err)
	}
	// No token at all.
	_, err = oauth.NewSource(context.Background(), "ben", fakeConfig(t, f), s, nil).Token()
	if !errors.As(err, &pe) || pe.Code != proxy.CodeSysPerm {
		t.Fatalf("no token: %v", err)
	}
}

// TestSourceConcurrent: 20 sessions asking at expiry cause one refresh.
func TestSourceConcurrent(t *testing.T) {
	f := oauthtest.Start(t)
	f.Rotate = true
	s := &oauth.Store{Dir: t.TempDir()}
	seed(t, f, s, "ann")
	src := oauth.NewSource(context.Background(), "ann", fakeConfig(t, f), s, nil)
	var wg sync.WaitGroup
	toks := make([]string, 20)
	errs := make([]error, 20)
	start := make(chan struct{})
	for i := range 20 {
		wg.Go(func() {
			<-start
			tok, err := src.Token()
			errs[i] = err
			if err == nil {
				toks[i] = tok.AccessToken
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range 20 {
		if errs[i] != nil || toks[i] != toks[0] {
			t.Fatalf("session %d: %q %v (first %q)", i, toks[i], errs[i], toks[0])
		}
	}
	if n := f.Refreshes(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
}

func TestFileTokenSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("  ya29.first \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := oauth.FileTokenSource(path)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "ya29.first" || tok.TokenType != "Bearer" {
		t.Fatalf("Token() = %+v, %v", tok, err)
	}
	// Re-read at every call.
	if err := os.WriteFile(path, []byte("ya29.second"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := ts.Token(); err != nil || tok.AccessToken != "ya29.second" {
		t.Fatalf("after rewrite: %+v, %v", tok, err)
	}
	if err := os.WriteFile(path, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(); err == nil {
		t.Fatal("empty token file accepted")
	}
	if _, err := oauth.FileTokenSource(path + ".missing").Token(); err == nil {
		t.Fatal("missing token file accepted")
	}
}

// TestSourceNewGrant: a token written to the store while the Source
// holds a valid one in memory (popbridge auth run while the server
// runs) is used at the next Token call, without a refresh.
func TestSourceNewGrant(t *testing.T) {
	f := oauthtest.Start(t)
	s := &oauth.Store{Dir: t.TempDir()}
	at := saveGrant(t, f, s, "ann")
	src := oauth.NewSource(context.Background(), "ann", fakeConfig(t, f), s, nil)
	if tok, err := src.Token(); err != nil || tok.AccessToken != at {
		t.Fatalf("first Token: %v", err)
	}
	at2, rt2, exp2 := f.Issue()
	if err := s.Save("ann", &oauth2.Token{AccessToken: at2, RefreshToken: rt2, Expiry: exp2}); err != nil {
		t.Fatal(err)
	}
	if tok, err := src.Token(); err != nil || tok.AccessToken != at2 {
		t.Fatalf("after a new grant was stored: got the old token (%v)", err)
	}
	if n := f.Refreshes(); n != 0 {
		t.Fatalf("%d refreshes", n)
	}
	t.Logf("oauth: a grant stored while the source holds a valid token is used at the next call")
}

// TestSourceInvalidate: 20 sessions rejected with the same access token
// cause one refresh; the store no longer holds the rejected token (a
// restart would not pick it up); a token no longer current is ignored.
func TestSourceInvalidate(t *testing.T) {
	f := oauthtest.Start(t)
	f.Rotate = true
	s := &oauth.Store{Dir: t.TempDir(), Key: testKey(3)}
	at := saveGrant(t, f, s, "ann")
	var logBuf syncBuffer
	log := zerolog.New(&logBuf)
	src := oauth.NewSource(context.Background(), "ann", fakeConfig(t, f), s, &log)
	if tok, err := src.Token(); err != nil || tok.AccessToken != at {
		t.Fatalf("Token: %v", err)
	}
	f.RevokeAccess()
	var wg sync.WaitGroup
	toks := make([]string, 20)
	for i := range toks {
		wg.Go(func() {
			src.Invalidate(at)
			if tok, err := src.Token(); err == nil {
				toks[i] = tok.AccessToken
			}
		})
	}
	wg.Wait()
	for i, tok := range toks {
		if tok != toks[0] || !f.ValidAccess(tok) {
			t.Fatalf("session %d got %q (first %q)", i, tok, toks[0])
		}
	}
	if n := f.Refreshes(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	stored, err := s.Load("ann")
	if err != nil || stored.AccessToken != toks[0] || !f.LiveRefreshToken(stored.RefreshToken) {
		t.Fatalf("store after the refresh: %v", err)
	}
	// A late session reporting the old token changes nothing.
	src.Invalidate(at)
	if tok, err := src.Token(); err != nil || tok.AccessToken != toks[0] || f.Refreshes() != 1 {
		t.Fatalf("a stale Invalidate dropped the current token")
	}
	// Refused: the store no longer holds the token, status says re-auth,
	// the error is the grant's.
	err = src.Refused(toks[0])
	var pe *proxy.Error
	if !errors.Is(err, oauth.ErrGrant) || !errors.As(err, &pe) || pe.Code != proxy.CodeSysPerm {
		t.Fatalf("Refused: %v", err)
	}
	if _, reauth, _ := src.Status(); !reauth {
		t.Fatal("Refused: status does not say re-auth")
	}
	if stored, _ := s.Load("ann"); stored.AccessToken != "" || !f.LiveRefreshToken(stored.RefreshToken) {
		t.Fatalf("after Refused the store holds access %q", stored.AccessToken)
	}
	if l := logBuf.String(); !strings.Contains(l, "run popbridge auth ann") || strings.Contains(l, at) || strings.Contains(l, toks[0]) {
		t.Fatalf("log: %s", l)
	}
	t.Logf("oauth: 20 sessions rejected with one access token caused 1 refresh; the store drops the rejected token")
}

// readOnlyDir makes dir refuse new files (chmod, or chattr +i as root)
// until the test ends; it skips the test when neither works.
func readOnlyDir(t *testing.T, dir string) {
	t.Helper()
	probe := func() bool {
		f, err := os.CreateTemp(dir, "probe")
		if err == nil {
			f.Close()
			os.Remove(f.Name())
		}
		return err != nil
	}
	os.Chmod(dir, 0o500)
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if probe() {
		return
	}
	if exec.Command("chattr", "+i", dir).Run() == nil {
		t.Cleanup(func() { exec.Command("chattr", "-i", dir).Run() })
		if probe() {
			return
		}
	}
	t.Skip("cannot make a directory read-only here")
}

// TestSourceInvalidateReadOnlyStore: when the rejected token cannot be
// dropped from the store, it is still never taken from there again.
func TestSourceInvalidateReadOnlyStore(t *testing.T) {
	f := oauthtest.Start(t)
	s := &oauth.Store{Dir: t.TempDir()}
	at := saveGrant(t, f, s, "ann")
	src := oauth.NewSource(context.Background(), "ann", fakeConfig(t, f), s, nil)
	if _, err := src.Token(); err != nil {
		t.Fatal(err)
	}
	readOnlyDir(t, s.Dir)
	src.Invalidate(at)
	if stored, _ := s.Load("ann"); stored.AccessToken != at {
		t.Fatal("the store was written to")
	}
	tok, err := src.Token()
	if err != nil || tok.AccessToken == at || f.Refreshes() != 1 {
		t.Fatalf("after Invalidate with a read-only store: same token %v, %d refreshes, %v", tok != nil && tok.AccessToken == at, f.Refreshes(), err)
	}
}

// TestTransport: a 401 is retried once with a new token, also for a
// body that can be sent again; a body that cannot is not retried (the
// caller sees the 401); a second 401 gives the grant error.
func TestTransport(t *testing.T) {
	f := oauthtest.Start(t)
	var bodies []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		if !f.ValidAccess(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer api.Close()
	s := &oauth.Store{Dir: t.TempDir()}
	saveGrant(t, f, s, "ann")
	src := oauth.NewSource(context.Background(), "ann", fakeConfig(t, f), s, nil)
	hc := &http.Client{Transport: &oauth.Transport{Source: src}}

	f.RevokeAccess()
	resp, err := hc.Post(api.URL, "text/plain", strings.NewReader("replayable"))
	if err != nil || resp.StatusCode != 200 || !slices.Equal(bodies, []string{"replayable", "replayable"}) || f.Refreshes() != 1 {
		t.Fatalf("POST after a revoked token: %v %v, bodies %q, %d refreshes", resp, err, bodies, f.Refreshes())
	}
	resp.Body.Close()

	f.RevokeAccess()
	bodies = nil
	resp, err = hc.Post(api.URL, "text/plain", io.MultiReader(strings.NewReader("once")))
	if err != nil || resp.StatusCode != http.StatusUnauthorized || len(bodies) != 1 {
		t.Fatalf("POST of a body that cannot be sent again: %v %v, bodies %q", resp, err, bodies)
	}
	resp.Body.Close()

	f.RejectAccess(true)
	_, err = hc.Get(api.URL)
	if !errors.Is(err, oauth.ErrGrant) {
		t.Fatalf("GET with every token rejected: %v", err)
	}
	if _, reauth, _ := src.Status(); !reauth {
		t.Fatal("status does not say re-auth")
	}
}

// saveGrant stores a grant just issued by f for account in s, as
// popbridge auth does, and returns its access token.
func saveGrant(t *testing.T, f *oauthtest.Server, s *oauth.Store, account string) string {
	t.Helper()
	at, rt, exp := f.Issue()
	if err := s.Save(account, &oauth2.Token{AccessToken: at, RefreshToken: rt, Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	return at
}
