package oauth

import "golang.org/x/oauth2"

// WithToken runs try with an access token of src, the one way the
// backends use a token an upstream may reject. try reports whether the
// upstream rejected the token, and its own error. When it did and src is
// a Rejecter, the token is dropped (Invalidate) and try runs once more
// with a new one; if that is rejected too, the grant is given up
// (Refused). WithToken returns:
//
//   - a *TokenError when src gives no token (then try does not run);
//   - a *RefusedError when the new token is rejected too;
//   - otherwise what the last try returned, nil on success (also a
//     rejection when src is not a Rejecter: nothing can be retried).
func WithToken(src oauth2.TokenSource, try func(tok *oauth2.Token) (rejected bool, err error)) error {
	rej, _ := src.(Rejecter)
	for attempt := 1; ; attempt++ {
		tok, err := src.Token()
		if err != nil {
			return &TokenError{Err: err}
		}
		rejected, err := try(tok)
		if !rejected || rej == nil {
			return err
		}
		if attempt == 2 {
			return &RefusedError{Err: rej.Refused(tok.AccessToken), Last: err}
		}
		rej.Invalidate(tok.AccessToken)
	}
}

// TokenError is WithToken's error when the token source gave no token.
// Its Err is the source's error: with a *proxy.Error in it (SYS/PERM: run
// popbridge auth) the backend answers with that.
type TokenError struct{ Err error }

func (e *TokenError) Error() string { return e.Err.Error() }
func (e *TokenError) Unwrap() error { return e.Err }

// RefusedError is WithToken's error when the upstream rejected a new
// token too: Err is what Rejecter.Refused returned (it wraps ErrGrant),
// Last the last try's own error (nil when try had none), for the log
// only. It unwraps to Err alone, so that it does not read as a wrong
// password (a backend's rejection often wraps proxy.ErrAuthFailed).
type RefusedError struct{ Err, Last error }

func (e *RefusedError) Error() string {
	if e.Last == nil {
		return e.Err.Error()
	}
	return e.Err.Error() + " (" + e.Last.Error() + ")"
}

func (e *RefusedError) Unwrap() error { return e.Err }
