package oauth

import (
	"errors"
	"io"
	"net/http"

	"golang.org/x/oauth2"
)

// Transport is an http.RoundTripper that authorizes each request with
// an access token of Source. When Source is a Rejecter and the server
// answers 401, the token is dropped (Invalidate) and the request sent
// once more with a new one; a second 401 gives up on the grant
// (Refused), and RoundTrip returns that error. Unlike oauth2.NewClient,
// it keeps no token of its own, so a dropped token is never reused.
type Transport struct {
	Source oauth2.TokenSource
	Base   http.RoundTripper // nil means http.DefaultTransport
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, tok, err := t.send(req, req.Body)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	r, ok := t.Source.(Rejecter)
	if !ok || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
		return resp, nil // cannot retry: the caller sees the 401
	}
	var body io.ReadCloser
	if req.GetBody != nil {
		if body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	discard(resp)
	r.Invalidate(tok)
	resp, tok, err = t.send(req, body)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	discard(resp)
	return nil, r.Refused(tok)
}

// send sends a copy of req with body and an access token; it returns
// the token used.
func (t *Transport) send(req *http.Request, body io.ReadCloser) (*http.Response, string, error) {
	tok, err := t.Source.Token()
	if err == nil && tok.AccessToken == "" {
		err = errors.New("oauth: the token source gave an empty access token")
	}
	if err != nil {
		if body != nil {
			body.Close() // a RoundTripper closes the body, also on errors
		}
		return nil, "", err
	}
	r := req.Clone(req.Context())
	r.Body = body
	tok.SetAuthHeader(r)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	return resp, tok.AccessToken, err
}

func discard(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
