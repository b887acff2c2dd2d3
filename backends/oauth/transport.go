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
	var resp *http.Response
	body, attempt := req.Body, 0
	err := WithToken(t.Source, func(tok *oauth2.Token) (bool, error) {
		attempt++
		if tok.AccessToken == "" {
			return false, errors.New("oauth: the token source gave an empty access token")
		}
		var err error
		resp, err = t.send(req, body, tok)
		body = nil // the base RoundTripper closed it
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			return false, err
		}
		if attempt == 1 {
			if _, ok := t.Source.(Rejecter); !ok || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
				return false, nil // cannot retry: the caller sees the 401
			}
			if req.GetBody != nil {
				if body, err = req.GetBody(); err != nil {
					return false, nil
				}
			}
		}
		discard(resp)
		resp = nil
		return true, nil
	})
	if body != nil {
		body.Close() // a RoundTripper closes the body, also on errors
	}
	var rerr *RefusedError
	if errors.As(err, &rerr) {
		return nil, rerr.Err
	}
	var terr *TokenError
	if errors.As(err, &terr) {
		return nil, terr.Err
	}
	return resp, err
}

// send sends a copy of req with body and tok.
func (t *Transport) send(req *http.Request, body io.ReadCloser, tok *oauth2.Token) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Body = body
	tok.SetAuthHeader(r)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

func discard(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
