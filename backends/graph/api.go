package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/popbridge/popbridge/proxy"
)

// preferImmutable asks for immutable ids; it must be on every request.
const preferImmutable = `IdType="ImmutableId"`

// Replies for faults the owner must fix.
var (
	errTokenRejected = &proxy.Error{Code: proxy.CodeSysPerm, Text: "Microsoft Graph rejected the OAuth2 token; the owner must run popbridge auth"}
	errAccess        = &proxy.Error{Code: proxy.CodeSysPerm, Text: "Microsoft Graph denied access; grant Mail.ReadWrite (Mail.ReadWrite.Shared for another mailbox) and check the mailbox permission"}
	errMailbox       = &proxy.Error{Code: proxy.CodeSysPerm, Text: "Microsoft Graph does not know this mailbox or it has no Exchange Online mailbox; check the mailbox setting"}
)

// apiError is a Graph error answer (GRAPH.md §8).
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter string
	RequestID  string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s (request-id %s)", e.Status, e.Code, e.Message, e.RequestID)
}

// is reports whether err is an apiError with status (0 = any) and, if
// code is not empty, that code (case-insensitive: Graph's casing varies).
func is(err error, status int, code string) bool {
	var ae *apiError
	return errors.As(err, &ae) && (status == 0 || ae.Status == status) && (code == "" || strings.EqualFold(ae.Code, code))
}

// deltaGone reports a delta or skip token Graph no longer has.
func deltaGone(err error) bool {
	return is(err, http.StatusGone, "") || is(err, 0, "syncStateNotFound") || is(err, 0, "resyncRequired") || is(err, 0, "InvalidSyncStateData")
}

func notFound(err error) bool { return is(err, http.StatusNotFound, "") }

// readError turns a non-2xx answer into an apiError.
func readError(resp *http.Response) error {
	e := &apiError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), RequestID: resp.Header.Get("request-id")}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(data, &body) == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	return e
}

// abs resolves a path relative to the API root, or checks that a link
// Graph gave (nextLink, deltaLink) stays on the endpoint's host, so that
// the bearer token never goes elsewhere.
func (b *Backend) abs(pathOrLink string) (string, error) {
	if strings.HasPrefix(pathOrLink, "http://") || strings.HasPrefix(pathOrLink, "https://") {
		u, err := url.Parse(pathOrLink)
		if err != nil || u.Scheme != b.base.Scheme || u.Host != b.base.Host {
			return "", fmt.Errorf("graph: link %s: %w", redact(pathOrLink), errBadLink)
		}
		return pathOrLink, nil
	}
	return b.base.String() + pathOrLink, nil
}

// redact hides the delta and skip tokens of a URL for logs.
func redact(u string) string {
	for _, k := range []string{"deltatoken=", "skiptoken="} {
		if i := strings.Index(strings.ToLower(u), k); i >= 0 {
			j := i + len(k)
			end := strings.IndexByte(u[j:], '&')
			if end < 0 {
				end = len(u) - j
			}
			u = u[:j] + proxy.Redacted + u[j+end:]
		}
	}
	return u
}

// send sends one request through the gate, with retries, and returns
// the 2xx response, whose body the caller closes. weight is the request
// slots it takes (a $batch takes them all). The attempt's timeout holds
// until the response header arrives; the body stays readable until
// outer ends.
func (b *Backend) send(ctx context.Context, name, method, target string, body []byte, contentType, prefer string, weight int) (*http.Response, error) {
	u, err := b.abs(target)
	if err != nil {
		return nil, err
	}
	outer := ctx
	if _, ok := ctx.Deadline(); !ok {
		// A session's RETR carries no deadline; bound the retries.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 3*b.opts.CallTimeout)
		defer cancel()
	}
	for attempt := 1; ; attempt++ {
		resp, err := b.attempt(ctx, outer, name, method, u, body, contentType, prefer, weight)
		if err == nil {
			return resp, nil
		}
		wait, retry := b.retryAfter(err, attempt)
		if !retry || ctx.Err() != nil {
			return nil, b.classify(name, err)
		}
		if attempt >= b.opts.MaxAttempts {
			return nil, b.classify(name, fmt.Errorf("giving up after %d attempts: %w", attempt, err))
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
			return nil, b.classify(name, fmt.Errorf("no time left to retry in %v: %w", wait, err))
		}
		b.backoffs.Add(1)
		b.log.Debug().Str("call", name).Int("attempt", attempt).Int64("wait_ms", wait.Milliseconds()).Err(err).Msg("graph: retrying")
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, b.classify(name, fmt.Errorf("%w (waiting to retry after %v)", ctx.Err(), err))
		}
	}
}

// acquire takes weight request slots of the mailbox, then of the
// AppLimit; the returned release gives them back.
func (b *Backend) acquire(ctx context.Context, weight int) (func(), error) {
	n, err := b.mailbox.acquire(ctx, weight)
	if err != nil {
		return nil, err
	}
	m := 0
	if b.opts.AppLimit != nil {
		if m, err = b.opts.AppLimit.acquire(ctx, weight); err != nil {
			b.mailbox.release(n)
			return nil, err
		}
	}
	return func() {
		if m > 0 {
			b.opts.AppLimit.release(m)
		}
		b.mailbox.release(n)
	}, nil
}

// attempt sends the request once. On success the slots are released when
// the body is closed (a streamed $value is in flight until then).
func (b *Backend) attempt(ctx, outer context.Context, name, method, u string, body []byte, contentType, prefer string, weight int) (*http.Response, error) {
	release, err := b.acquire(ctx, weight)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, b.opts.CallTimeout)
	sctx, scancel := context.WithCancel(outer)
	stop := context.AfterFunc(actx, scancel) // until the header arrives
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(sctx, method, u, rd)
	if err != nil {
		cancel()
		scancel()
		release()
		return nil, err
	}
	p := preferImmutable
	if prefer != "" {
		p += ", " + prefer
	}
	req.Header.Set("Prefer", p)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	start := time.Now()
	resp, err := b.hc.Do(req)
	if !stop() {
		err = errors.Join(err, actx.Err())
	}
	cancel()
	b.calls.Add(1)
	if b.opts.OnCall != nil {
		b.opts.OnCall(name)
	}
	ev := b.log.Trace().Str("call", name).Str("method", method).Str("url", redact(u)).Int64("took_ms", time.Since(start).Milliseconds())
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		ev.Err(err).Msg("graph: request")
		scancel()
		release()
		return nil, err
	}
	ev.Int("status", resp.StatusCode).Str("request_id", resp.Header.Get("request-id")).Msg("graph: request")
	if resp.StatusCode/100 != 2 {
		err := readError(resp)
		resp.Body.Close()
		scancel()
		release()
		return nil, err
	}
	resp.Body = &slotBody{ReadCloser: resp.Body, done: func() { scancel(); release() }}
	return resp, nil
}

// slotBody releases the request's slots once, when closed.
type slotBody struct {
	io.ReadCloser
	done   func()
	closed bool
}

func (s *slotBody) Close() error {
	err := s.ReadCloser.Close()
	if !s.closed {
		s.closed = true
		s.done()
	}
	return err
}

// retryAfter says whether err is worth another attempt, and after how
// long: 429, 503, 504 (and other 5xx) and network faults, after
// Retry-After plus jitter when given, else exponential backoff with
// jitter.
func (b *Backend) retryAfter(err error, attempt int) (time.Duration, bool) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		if ae.Status != http.StatusTooManyRequests && ae.Status < 500 {
			return 0, false
		}
		if d, ok := parseRetryAfter(ae.RetryAfter, time.Now()); ok {
			if d > maxBackoff {
				return 0, false
			}
			return d + rand.N(b.opts.BackoffBase/4+1), true
		}
	case isNetError(err):
	default:
		return 0, false
	}
	return b.backoff(attempt), true
}

// backoff is the jittered exponential wait before attempt+1.
func (b *Backend) backoff(attempt int) time.Duration {
	d := min(b.opts.BackoffBase<<min(attempt-1, 10), maxBackoff)
	return d/2 + rand.N(d/2+1)
}

// parseRetryAfter reads Retry-After: seconds, possibly fractional
// ("2.128"), or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 && s < 1e6 {
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// isNetError reports a connection fault worth a retry; a token source
// failure (a *proxy.Error) is not one.
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

// classify wraps err for the proxy: a *proxy.Error already in the chain
// (the token source's) wins; a rejected token, a denied permission or an
// unknown mailbox are permanent; everything else is temporary.
func (b *Backend) classify(op string, err error) error {
	var pe *proxy.Error
	if errors.As(err, &pe) {
		return fmt.Errorf("graph: %s: %w", op, err)
	}
	sentinel := proxy.ErrTemporary
	var ae *apiError
	if errors.As(err, &ae) {
		switch {
		case ae.Status == http.StatusUnauthorized:
			sentinel = errTokenRejected
		case ae.Status == http.StatusForbidden:
			sentinel = errAccess
		case strings.EqualFold(ae.Code, "ErrorInvalidUser"), strings.EqualFold(ae.Code, "MailboxNotEnabledForRESTAPI"):
			sentinel = errMailbox
		case ae.Status == http.StatusBadRequest:
			sentinel = proxy.ErrPermanent
		}
	}
	return fmt.Errorf("graph: %s: %w: %w", op, sentinel, err)
}

// getJSON GETs path (or a link) and decodes the JSON answer into out.
func (b *Backend) getJSON(ctx context.Context, name, target string, out any, prefer ...string) error {
	resp, err := b.send(ctx, name, http.MethodGet, target, nil, "", strings.Join(prefer, ", "), 1)
	if err != nil {
		return err
	}
	body := newStallReader(resp.Body, b.opts.CallTimeout)
	defer body.Close()
	if err := json.NewDecoder(body).Decode(out); err != nil {
		return b.classify(name, fmt.Errorf("decode the answer: %w", err))
	}
	return nil
}
