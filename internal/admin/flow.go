package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/internal/modes"
)

// Flow states.
const (
	flowPending = "pending"
	flowDone    = "done"
	flowFailed  = "failed"
)

// flowTTL is how long a flow waits for the owner; maxFlows bounds the
// flows kept.
const (
	flowTTL  = 15 * time.Minute
	maxFlows = 20
)

// flow is one connect or re-authorize of an account: an authorization
// code with PKCE (Device false) or a device code (Device true).
type flow struct {
	ID, Account string
	Device      bool
	// AuthURL is where the owner grants access (authorization code).
	AuthURL string
	// Redirect is the loopback redirect URL; Listening is true when a
	// listener there completes the flow by itself.
	Redirect  string
	Listening bool
	// UserCode, VerifyURI and VerifyURIComplete are the device code's.
	UserCode, VerifyURI, VerifyURIComplete string

	session  string
	created  time.Time
	state    string
	verifier string
	cfg      *oauth2.Config
	srv      *http.Server
	cancel   context.CancelFunc

	mu      sync.Mutex
	status  string
	message string
}

func (f *flow) close() {
	if f.cancel != nil {
		f.cancel()
	}
	if f.srv != nil {
		// Shutdown lets the redirect's own answer finish first.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		f.srv.Shutdown(ctx)
	}
}

// Status returns the flow's state and what to say about it.
func (f *flow) Status() (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, f.message
}

// finish ends a pending flow with tok or err: the grant is saved at
// once. A flow finishes once; later results are ignored.
func (s *Server) finish(f *flow, tok *oauth2.Token, err error) {
	f.mu.Lock()
	if f.status != flowPending {
		f.mu.Unlock()
		return
	}
	if err == nil {
		err = s.opt.Tokens.Save(f.Account, tok)
	}
	if err != nil {
		f.status, f.message = flowFailed, plainOAuthError(err)
	} else {
		f.status, f.message = flowDone, "Connected: the new grant of "+f.Account+" is saved and is used from the next login on."
	}
	f.mu.Unlock()
	s.log.Info().Str("account", f.Account).Bool("ok", err == nil).Bool("device", f.Device).Msg("admin: OAuth2 authorization finished")
	go f.close()
}

// plainOAuthError says what failed, without the provider's raw reply.
func plainOAuthError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		switch re.ErrorCode {
		case "access_denied":
			return "The authorization was denied at the provider. Start again and grant access."
		case "expired_token":
			return "The code expired before the authorization. Start again."
		case "invalid_grant":
			return "The provider refused the authorization code (it works once and only for a few minutes). Start again."
		}
		msg := "The provider refused: " + re.ErrorCode
		if re.ErrorDescription != "" {
			msg += " (" + re.ErrorDescription + ")"
		}
		if re.ErrorCode == "" {
			msg = "The provider refused the request (HTTP " + strconv.Itoa(re.Response.StatusCode) + ")."
		}
		return msg
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return "The authorization was not completed in time. Start again."
	}
	return "Not connected: " + err.Error()
}

func (s *Server) oauthCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, s.opt.HTTPClient)
}

// addFlow keeps f, dropping expired flows and, beyond maxFlows, the
// oldest.
func (s *Server) addFlow(f *flow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opt.Now()
	for id, o := range s.flows {
		if now.Sub(o.created) > flowTTL {
			o.close()
			delete(s.flows, id)
		}
	}
	for len(s.flows) >= maxFlows {
		var oldest *flow
		for _, o := range s.flows {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		oldest.close()
		delete(s.flows, oldest.ID)
	}
	s.flows[f.ID] = f
}

func (s *Server) getFlow(id string, sess *session) *flow {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flows[id]
	if f == nil || f.session != sess.id {
		return nil
	}
	return f
}

// connect starts a flow for an account: the device code for Microsoft,
// the authorization code with PKCE otherwise.
func (s *Server) connect(w http.ResponseWriter, r *http.Request, sess *session) {
	a, ok := s.accountOr404(w, r, r.PostFormValue("a"))
	if !ok {
		return
	}
	if !a.CanConnect {
		s.textPage(w, http.StatusBadRequest, "This account does not log in with OAuth2; there is nothing to connect.")
		return
	}
	base, provider, _ := s.opt.OAuth.OAuthClient(a.User)
	cfg := *base
	f := &flow{ID: newID(), Account: a.User, session: sess.id, created: s.opt.Now(), cfg: &cfg, status: flowPending}
	var err error
	if provider == modes.ProviderMicrosoft {
		err = s.startDevice(f)
	} else {
		err = s.startCode(f)
	}
	if err != nil {
		s.log.Warn().Str("account", a.User).Err(err).Msg("admin: OAuth2 authorization not started")
		s.accountPage(w, http.StatusBadGateway, sess, accountPage{accountView: a, Result: plainOAuthError(err), Failed: true})
		return
	}
	s.addFlow(f)
	s.log.Info().Str("account", a.User).Bool("device", f.Device).Msg("admin: OAuth2 authorization started")
	http.Redirect(w, r, "/flow?id="+f.ID, http.StatusSeeOther)
}

func (s *Server) startDevice(f *flow) error {
	f.Device = true
	ctx, cancel := context.WithTimeout(s.oauthCtx(s.ctx), 30*time.Second)
	da, err := f.cfg.DeviceAuth(ctx)
	cancel()
	if err != nil {
		return err
	}
	f.UserCode, f.VerifyURI, f.VerifyURIComplete = da.UserCode, da.VerificationURI, da.VerificationURIComplete
	deadline := da.Expiry
	if deadline.IsZero() {
		deadline = time.Now().Add(flowTTL)
	}
	ctx, f.cancel = context.WithDeadline(s.oauthCtx(s.ctx), deadline)
	go func() {
		tok, err := f.cfg.DeviceAccessToken(ctx, da)
		s.finish(f, tok, err)
	}()
	return nil
}

func (s *Server) startCode(f *flow) error {
	f.state, f.verifier = newID(), oauth2.GenerateVerifier()
	f.cfg.RedirectURL = "http://127.0.0.1/"
	if s.opt.LoopbackAddr != "off" {
		addr := s.opt.LoopbackAddr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("the loopback listener for the redirect: %w", err)
		}
		f.cfg.RedirectURL = "http://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/"
		f.Listening = true
		f.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.redirected(w, r, f)
		})}
		go f.srv.Serve(ln)
	}
	f.Redirect = f.cfg.RedirectURL
	f.AuthURL = f.cfg.AuthCodeURL(f.state, oauth2.AccessTypeOffline, oauth2.SetAuthURLParam("prompt", "consent"), oauth2.S256ChallengeOption(f.verifier))
	return nil
}

// errState is a redirect for another attempt: it leaves the flow
// pending, so that a stray or forged request cannot end it.
var errState = errors.New("that URL's state does not match this authorization (a stale or foreign URL); paste the URL of this attempt")

// codeFrom returns the code of a redirect's query after checking its
// state; "" without error when the query has no code at all.
func codeFrom(q url.Values, state string) (string, error) {
	if e := q.Get("error"); e != "" {
		return "", &oauth2.RetrieveError{ErrorCode: e, ErrorDescription: q.Get("error_description")}
	}
	code := q.Get("code")
	if code == "" {
		return "", nil
	}
	if q.Get("state") != state {
		return "", errState
	}
	return code, nil
}

// exchange completes an authorization code flow with code.
func (s *Server) exchange(f *flow, code string) {
	ctx, cancel := context.WithTimeout(s.oauthCtx(s.ctx), 30*time.Second)
	defer cancel()
	tok, err := f.cfg.Exchange(ctx, code, oauth2.VerifierOption(f.verifier))
	s.finish(f, tok, err)
}

// redirected is the loopback listener's handler: the browser on the
// server itself comes back here from the provider.
func (s *Server) redirected(w http.ResponseWriter, r *http.Request, f *flow) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	code, err := codeFrom(r.URL.Query(), f.state)
	if err == nil && code == "" {
		http.NotFound(w, r) // e.g. /favicon.ico
		return
	}
	if errors.Is(err, errState) {
		http.Error(w, "popbridge: "+err.Error(), http.StatusBadRequest)
		return
	}
	if st, _ := f.Status(); st == flowPending {
		if err != nil {
			s.finish(f, nil, err)
		} else {
			s.exchange(f, code)
		}
	}
	_, msg := f.Status()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, "<!doctype html><title>popbridge</title><p>popbridge: %s</p><p>Go back to the admin page.</p>", html.EscapeString(msg))
}

type flowView struct {
	*flow
	Status, Message string
}

func (s *Server) flowPage(w http.ResponseWriter, r *http.Request, sess *session) {
	f := s.getFlow(r.URL.Query().Get("id"), sess)
	if f == nil {
		s.textPage(w, http.StatusNotFound, "This authorization is over or unknown. Start again from the account's page.")
		return
	}
	s.renderFlow(w, http.StatusOK, sess, f)
}

func (s *Server) renderFlow(w http.ResponseWriter, status int, sess *session, f *flow) {
	st, msg := f.Status()
	p := page{Title: "Connect " + f.Account, CSRF: sess.csrf, Data: flowView{flow: f, Status: st, Message: msg}}
	if f.Device && st == flowPending {
		p.Refresh = 3 // the page follows the polling without a script
	}
	s.render(w, status, "flow", p)
}

// flowStatus serves a flow's state as JSON for app.js.
func (s *Server) flowStatus(w http.ResponseWriter, r *http.Request, sess *session) {
	f := s.getFlow(r.URL.Query().Get("id"), sess)
	if f == nil {
		http.NotFound(w, r)
		return
	}
	st, _ := f.Status()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"status": st})
}

// paste completes an authorization code flow with the final URL the
// owner copied from a browser on another machine.
func (s *Server) paste(w http.ResponseWriter, r *http.Request, sess *session) {
	f := s.getFlow(r.PostFormValue("id"), sess)
	if f == nil || f.Device {
		s.textPage(w, http.StatusNotFound, "This authorization is over or unknown. Start again from the account's page.")
		return
	}
	if st, _ := f.Status(); st != flowPending {
		s.renderFlow(w, http.StatusOK, sess, f)
		return
	}
	u, err := url.Parse(strings.TrimSpace(r.PostFormValue("url")))
	var code string
	if err == nil {
		code, err = codeFrom(u.Query(), f.state)
	}
	if (err == nil && code == "") || errors.Is(err, errState) {
		f.mu.Lock()
		f.message = "That URL has no code= in it. Paste the full address of the page the browser was sent to (it starts with " + f.Redirect + "?)."
		if err != nil {
			f.message = "Not connected: " + err.Error() + "."
		}
		f.mu.Unlock()
		s.renderFlow(w, http.StatusBadRequest, sess, f)
		return
	}
	if err != nil {
		s.finish(f, nil, err)
	} else {
		s.exchange(f, code)
	}
	status := http.StatusOK
	if st, _ := f.Status(); st != flowDone {
		status = http.StatusBadRequest
	}
	s.renderFlow(w, status, sess, f)
}
