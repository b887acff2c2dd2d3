package oauthtest

import (
	"fmt"
	"html"
	"net/http"
)

// deviceLogin is the device flow's verification page (verification_uri):
// a form for the user code. Posting the code of the current device
// request approves it: the next poll gets the token, whatever
// DevicePending still counted. Set DevicePending high to make a device
// flow wait for this approval, as a user would.
func (s *Server) deviceLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if r.Method != http.MethodPost {
		fmt.Fprint(w, `<!doctype html><title>fake device login</title><form method="post"><label>Code <input id="user_code" name="user_code"></label><button id="approve">Approve</button></form>`)
		return
	}
	s.mu.Lock()
	ok := s.devCode != "" && r.PostFormValue("user_code") == "ABCD-EFGH"
	if ok {
		s.DevicePending = 0
	}
	s.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `<!doctype html><p id="result">fake: no device request with the code %s</p>`, html.EscapeString(r.PostFormValue("user_code")))
		return
	}
	fmt.Fprint(w, `<!doctype html><p id="result">Approved. You may close this window.</p>`)
}
