package oauth_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/proxy"
)

// countingSource hands out at-1, at-2, ... and records what it is told.
type countingSource struct {
	n       int
	fail    map[int]error // the n-th Token call fails with this
	events  []string
	refusal error
}

func (s *countingSource) Token() (*oauth2.Token, error) {
	s.n++
	if err := s.fail[s.n]; err != nil {
		s.events = append(s.events, "token failed")
		return nil, err
	}
	tok := fmt.Sprintf("at-%d", s.n)
	s.events = append(s.events, "token "+tok)
	return &oauth2.Token{AccessToken: tok}, nil
}

// rejecter is a countingSource that is an oauth.Rejecter.
type rejecter struct{ countingSource }

func (s *rejecter) Invalidate(tok string) { s.events = append(s.events, "invalidate "+tok) }
func (s *rejecter) Refused(tok string) error {
	s.events = append(s.events, "refused "+tok)
	return s.refusal
}

func TestWithToken(t *testing.T) {
	upstreamNo := fmt.Errorf("upstream: %w", proxy.ErrAuthFailed)
	down := errors.New("connection refused")
	grant := fmt.Errorf("oauth: account a: the upstream rejects the new access token too: %w", oauth.ErrGrant)
	noGrant := fmt.Errorf("no grant: %w", proxy.ErrPermanent)
	for _, tc := range []struct {
		name     string
		rejecter bool
		fail     map[int]error
		accept   string // the token the upstream takes; "" none
		errOn    error  // a failure that is not a rejection, on every try
		events   string
		check    func(t *testing.T, err error)
	}{
		{name: "accepted", rejecter: true, accept: "at-1", events: "token at-1; try at-1",
			check: func(t *testing.T, err error) { isNil(t, err) }},
		{name: "retried once", rejecter: true, accept: "at-2",
			events: "token at-1; try at-1; invalidate at-1; token at-2; try at-2",
			check:  func(t *testing.T, err error) { isNil(t, err) }},
		{name: "refused", rejecter: true,
			events: "token at-1; try at-1; invalidate at-1; token at-2; try at-2; refused at-2",
			check: func(t *testing.T, err error) {
				var re *oauth.RefusedError
				if !errors.As(err, &re) || re.Err != grant || re.Last != upstreamNo {
					t.Fatalf("err %#v, want a RefusedError with Refused's error and the last try's", err)
				}
				if !errors.Is(err, oauth.ErrGrant) || errors.Is(err, proxy.ErrAuthFailed) {
					t.Errorf("err %v: want ErrGrant and not ErrAuthFailed in its chain", err)
				}
				if !strings.Contains(err.Error(), "rejects the new access token") || !strings.Contains(err.Error(), "upstream:") {
					t.Errorf("message %q lacks the refusal or the upstream's error", err)
				}
			}},
		{name: "no rejecter", accept: "",
			events: "token at-1; try at-1",
			check: func(t *testing.T, err error) {
				if err != upstreamNo {
					t.Errorf("err %v, want the try's own", err)
				}
			}},
		{name: "other failure", rejecter: true, errOn: down,
			events: "token at-1; try at-1",
			check: func(t *testing.T, err error) {
				if err != down {
					t.Errorf("err %v, want the try's own", err)
				}
			}},
		{name: "no token", rejecter: true, fail: map[int]error{1: noGrant},
			events: "token failed",
			check:  func(t *testing.T, err error) { isTokenError(t, err, noGrant) }},
		{name: "no new token", rejecter: true, fail: map[int]error{2: noGrant},
			events: "token at-1; try at-1; invalidate at-1; token failed",
			check:  func(t *testing.T, err error) { isTokenError(t, err, noGrant) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &rejecter{countingSource{fail: tc.fail, refusal: grant}}
			var src oauth2.TokenSource = &r.countingSource
			if tc.rejecter {
				src = r
			}
			err := oauth.WithToken(src, func(tok *oauth2.Token) (bool, error) {
				r.events = append(r.events, "try "+tok.AccessToken)
				switch {
				case tc.errOn != nil:
					return false, tc.errOn
				case tok.AccessToken == tc.accept:
					return false, nil
				}
				return true, upstreamNo
			})
			if got := strings.Join(r.events, "; "); got != tc.events {
				t.Errorf("events:\n got %s\nwant %s", got, tc.events)
			}
			tc.check(t, err)
		})
	}
}

func isNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("err %v, want nil", err)
	}
}

func isTokenError(t *testing.T, err, want error) {
	t.Helper()
	var te *oauth.TokenError
	if !errors.As(err, &te) || te.Err != want || !errors.Is(err, proxy.ErrPermanent) || err.Error() != want.Error() {
		t.Errorf("err %#v, want a TokenError wrapping the source's %v", err, want)
	}
}
