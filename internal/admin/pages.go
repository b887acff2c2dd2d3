package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/popbridge/popbridge/cache"
)

// accountView is one account with what the page may do with it.
type accountView struct {
	Account
	CanTest, CanForget, CanConnect bool
	Running                        bool // a sync runs now
}

func (s *Server) accounts(ctx context.Context) []accountView {
	if s.opt.Accounts == nil {
		return nil
	}
	var out []accountView
	for _, a := range s.opt.Accounts.Accounts(ctx) {
		out = append(out, s.view(a))
	}
	return out
}

func (s *Server) view(a Account) accountView {
	v := accountView{Account: a, CanTest: s.opt.Tester != nil, CanForget: s.opt.Forgetter != nil}
	if s.opt.OAuth != nil && s.opt.Tokens != nil {
		_, _, v.CanConnect = s.opt.OAuth.OAuthClient(a.User)
	}
	v.Running = a.Sync != nil && a.Sync.Running
	return v
}

// find returns the account named user; ok is false if there is none.
func (s *Server) find(ctx context.Context, user string) (accountView, bool) {
	for _, a := range s.accounts(ctx) {
		if a.User == user {
			return a, true
		}
	}
	return accountView{}, false
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session) {
	s.render(w, http.StatusOK, "overview", page{Title: "Accounts", CSRF: sess.csrf, Data: s.accounts(r.Context())})
}

// progressJSON is one account's sync progress for app.js.
type progressJSON struct {
	User    string `json:"user"`
	Running bool   `json:"running"`
	Done    int    `json:"done"`
	Total   int    `json:"total"`
}

// progress serves the sync progress of every account as JSON, for the
// script that moves the progress bars.
func (s *Server) progress(w http.ResponseWriter, r *http.Request, _ *session) {
	out := []progressJSON{}
	for _, a := range s.accounts(r.Context()) {
		p := progressJSON{User: a.User}
		if a.Sync != nil {
			p.Running, p.Done, p.Total = a.Sync.Running, a.Sync.Done, a.Sync.Total
		}
		out = append(out, p)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

type accountPage struct {
	accountView
	Logs   []string
	Result string // of a test
	Failed bool
}

func (s *Server) accountOr404(w http.ResponseWriter, r *http.Request, user string) (accountView, bool) {
	a, ok := s.find(r.Context(), user)
	if !ok {
		s.textPage(w, http.StatusNotFound, "There is no account with that name. Go back to the overview.")
	}
	return a, ok
}

func (s *Server) accountPage(w http.ResponseWriter, status int, sess *session, p accountPage) {
	if s.opt.Logs != nil {
		p.Logs = s.opt.Logs.Lines(p.User)
	}
	s.render(w, status, "account", page{Title: p.User, CSRF: sess.csrf, Data: p})
}

func (s *Server) account(w http.ResponseWriter, r *http.Request, sess *session) {
	a, ok := s.accountOr404(w, r, r.URL.Query().Get("a"))
	if !ok {
		return
	}
	s.accountPage(w, http.StatusOK, sess, accountPage{accountView: a})
}

// testTimeout bounds one account test.
const testTimeout = time.Minute

func (s *Server) test(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.opt.Tester == nil {
		s.textPage(w, http.StatusNotFound, "Testing accounts is not available here.")
		return
	}
	a, ok := s.accountOr404(w, r, r.PostFormValue("a"))
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), testTimeout)
	defer cancel()
	text, err := s.opt.Tester.Test(ctx, a.User)
	p := accountPage{accountView: a, Result: text}
	if err != nil {
		p.Result, p.Failed = err.Error(), true
	}
	s.log.Info().Str("account", a.User).Bool("ok", err == nil).Msg("admin: account tested")
	s.accountPage(w, http.StatusOK, sess, p)
}

func (s *Server) forgetConfirm(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.opt.Forgetter == nil {
		s.textPage(w, http.StatusNotFound, "Forgetting the cache is not available here.")
		return
	}
	a, ok := s.accountOr404(w, r, r.URL.Query().Get("a"))
	if !ok {
		return
	}
	s.render(w, http.StatusOK, "forget", page{Title: "Forget the cache of " + a.User, CSRF: sess.csrf, Data: a})
}

func (s *Server) forget(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.opt.Forgetter == nil {
		s.textPage(w, http.StatusNotFound, "Forgetting the cache is not available here.")
		return
	}
	a, ok := s.accountOr404(w, r, r.PostFormValue("a"))
	if !ok {
		return
	}
	err := s.opt.Forgetter.Forget(r.Context(), a.User)
	p := accountPage{accountView: a, Result: "The cache of " + a.User + " is forgotten: it is learnt again at the next login or sync."}
	status := http.StatusOK
	switch {
	case errors.Is(err, cache.ErrInUse):
		p.Result, p.Failed, status = "Not forgotten: a mail client has a POP3 session open on this account. Close it (or wait until it ends) and try again.", true, http.StatusConflict
	case errors.Is(err, cache.ErrNoAccount):
		p.Result = "The cache holds nothing for " + a.User + "; there was nothing to forget."
	case err != nil:
		p.Result, p.Failed, status = "Not forgotten: "+err.Error(), true, http.StatusInternalServerError
	}
	s.log.Info().Str("account", a.User).Bool("ok", !p.Failed).Msg("admin: cache forgotten")
	if a2, ok := s.find(r.Context(), a.User); ok {
		p.accountView = a2
	}
	s.accountPage(w, status, sess, p)
}
