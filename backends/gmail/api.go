package gmail

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/api/googleapi"

	"github.com/popbridge/popbridge/proxy"
)

// Replies for faults the owner must fix.
var (
	errTokenRejected = &proxy.Error{Code: proxy.CodeSysPerm, Text: "Gmail rejected the OAuth2 token; the owner must run popbridge auth"}
	errScope         = &proxy.Error{Code: proxy.CodeSysPerm, Text: "The OAuth2 grant does not allow this Gmail operation; see the on_delete and scopes settings"}
	errDailyLimit    = &proxy.Error{Code: proxy.CodeSysTemp, Text: "Gmail's daily API limit is reached, try again later"}
)

// call runs one API request, f, through the Backend's gate: the quota
// bucket (units), the concurrency bound, a timeout per attempt, and
// retries with backoff. method names it for logs and metrics. Errors
// are classified for the proxy; a googleapi.Error stays in the chain.
func (b *Backend) call(ctx context.Context, method string, units int, f func(context.Context) error) error {
	if _, ok := ctx.Deadline(); !ok {
		// A session's RETR carries no deadline; bound the retries.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 3*b.opts.CallTimeout)
		defer cancel()
	}
	for attempt := 1; ; attempt++ {
		err := b.attempt(ctx, method, units, f)
		if err == nil {
			return nil
		}
		wait, retry := b.retryAfter(err, attempt)
		if !retry || ctx.Err() != nil {
			return b.classify(method, err)
		}
		if attempt >= b.opts.MaxAttempts {
			return b.classify(method, fmt.Errorf("giving up after %d attempts: %w", attempt, err))
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
			return b.classify(method, fmt.Errorf("no time left to retry in %v: %w", wait, err))
		}
		b.backoffs.Add(1)
		if b.opts.OnBackoff != nil {
			b.opts.OnBackoff(method)
		}
		b.log.Debug().Str("method", method).Int("attempt", attempt).Int64("wait_ms", wait.Milliseconds()).Err(err).Msg("gmail: retrying")
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return b.classify(method, fmt.Errorf("%w (waiting to retry after %v)", ctx.Err(), err))
		}
	}
}

// attempt sends f once, when the quota and the concurrency bound allow.
func (b *Backend) attempt(ctx context.Context, method string, units int, f func(context.Context) error) error {
	if err := b.quota.WaitN(ctx, units); err != nil {
		return fmt.Errorf("waiting for quota: %w", err)
	}
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for a request slot: %w", ctx.Err())
	}
	actx, cancel := context.WithTimeout(ctx, b.opts.CallTimeout)
	err := f(actx)
	cancel()
	<-b.sem
	b.calls.Add(1)
	b.units.Add(int64(units))
	if b.opts.OnCall != nil {
		b.opts.OnCall(method, units)
	}
	return err
}

// retryAfter says whether err is worth another attempt, and after how
// long: rate limits (429; 403 rateLimitExceeded or userRateLimitExceeded),
// server errors (5xx) and network faults, with Retry-After when given,
// else exponential backoff with jitter.
func (b *Backend) retryAfter(err error, attempt int) (time.Duration, bool) {
	var ge *googleapi.Error
	switch {
	case errors.As(err, &ge):
		switch {
		case ge.Code == http.StatusTooManyRequests, ge.Code >= 500:
		case ge.Code == http.StatusForbidden && (hasReason(ge, "rateLimitExceeded") || hasReason(ge, "userRateLimitExceeded")):
		default:
			return 0, false
		}
		if d, ok := parseRetryAfter(ge.Header.Get("Retry-After"), time.Now()); ok {
			if d > maxBackoff {
				return 0, false
			}
			// A little jitter, so that sessions do not return at once.
			return d + rand.N(b.opts.BackoffBase/4+1), true
		}
	case isNetError(err):
	default:
		return 0, false
	}
	d := b.opts.BackoffBase << min(attempt-1, 10)
	d = min(d, maxBackoff)
	return d/2 + rand.N(d/2+1), true
}

// isNetError reports whether err is a connection fault worth a retry.
// Every *url.Error is a net.Error, so a failure of the token source (a
// *proxy.Error inside one) is told apart first.
func isNetError(err error) bool {
	var pe *proxy.Error
	if errors.As(err, &pe) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func hasReason(ge *googleapi.Error, reason string) bool {
	for _, e := range ge.Errors {
		if e.Reason == reason {
			return true
		}
	}
	return false
}

// notFound reports whether err is the API's 404.
func notFound(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == http.StatusNotFound
}

// classify wraps err for the proxy: a *proxy.Error already in the chain
// (the token source's) wins; a rejected token or a missing scope is
// permanent; everything else is temporary.
func (b *Backend) classify(op string, err error) error {
	var pe *proxy.Error
	if errors.As(err, &pe) {
		return fmt.Errorf("gmail: %s: %w", op, err)
	}
	sentinel := proxy.ErrTemporary
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch {
		case ge.Code == http.StatusUnauthorized:
			sentinel = errTokenRejected
		case ge.Code == http.StatusForbidden && (hasReason(ge, "insufficientPermissions") || hasReason(ge, "forbidden")):
			sentinel = errScope
		case ge.Code == http.StatusForbidden && hasReason(ge, "dailyLimitExceeded"):
			sentinel = errDailyLimit
		case ge.Code == http.StatusBadRequest:
			sentinel = proxy.ErrPermanent
		}
	}
	return fmt.Errorf("gmail: %s: %w: %w", op, sentinel, err)
}

// rawChars maps the characters of a format=raw message to the base64url
// alphabet without padding: Google's text is base64url, padded or not
// (it does not document which), and the standard alphabet is tolerated
// too. 0 drops a character (padding, line breaks, NUL); the others map
// to themselves, for the base64 decoder to reject if they are not in
// the alphabet.
var rawChars = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	t['+'], t['/'] = '-', '_'
	t['='], t['\r'], t['\n'], t[0] = 0, 0, 0, 0
	return t
}()

// decodeAll decodes the message of a format=raw reply whole.
func decodeAll(raw string) ([]byte, error) {
	// strings.Map copies only when a character changes.
	raw = strings.Map(func(r rune) rune {
		if r >= 0x80 {
			return r // invalid: the decoder says so
		}
		if c := rawChars[r]; c != 0 {
			return rune(c)
		}
		return -1
	}, strings.TrimRight(raw, "="))
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("decode raw message: %w", err)
	}
	return b, nil
}
