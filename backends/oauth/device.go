package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// DeviceOptions tune Device. Out is required.
type DeviceOptions struct {
	// Out receives the code and the URL for the user.
	Out io.Writer
	// Sleep waits d or until ctx ends; nil means a timer. Tests replace
	// it to run the polling without waiting.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Device runs the device authorization grant (RFC 8628): it asks
// cfg.Endpoint.DeviceAuthURL for a code, prints the code and the URL to
// opts.Out, and polls the token endpoint every interval seconds (5 when
// the server names none), continuing on authorization_pending, adding 5
// seconds on slow_down, and failing clearly on access_denied and
// expired_token.
func Device(ctx context.Context, cfg *oauth2.Config, opts DeviceOptions) (*oauth2.Token, error) {
	if cfg.Endpoint.DeviceAuthURL == "" {
		return nil, errors.New("oauth: no device authorization URL (set device_url)")
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("oauth: device authorization request: %w", err)
	}
	w := opts.Out
	fmt.Fprintf(w, "On any device with a browser, open\n\n  %s\n\nand enter the code\n\n  %s\n\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" && da.VerificationURIComplete != da.VerificationURI {
		fmt.Fprintf(w, "(or open %s, which carries the code)\n\n", da.VerificationURIComplete)
	}
	if !da.Expiry.IsZero() {
		fmt.Fprintf(w, "The code expires at %s. Waiting for the authorization...\n", da.Expiry.Local().Format("15:04:05"))
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, da.Expiry)
		defer cancel()
	} else {
		fmt.Fprintln(w, "Waiting for the authorization...")
	}

	interval := time.Duration(da.Interval) * time.Second
	if interval <= 0 {
		interval = 5 * time.Second // RFC 8628 §3.2
	}
	form := url.Values{
		"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {da.DeviceCode},
		"client_id":   {cfg.ClientID},
	}
	if cfg.ClientSecret != "" {
		form.Set("client_secret", cfg.ClientSecret)
	}
	for {
		if err := sleep(ctx, interval); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, errors.New("oauth: the device code expired before the authorization; run popbridge auth again")
			}
			return nil, err
		}
		tok, code, err := postToken(ctx, cfg.Endpoint.TokenURL, form)
		switch code {
		case "":
			if err != nil {
				return nil, err
			}
			return tok, nil
		case "authorization_pending":
		case "slow_down":
			interval += 5 * time.Second // RFC 8628 §3.5
		case "access_denied":
			return nil, errors.New("oauth: the user denied the authorization")
		case "expired_token":
			return nil, errors.New("oauth: the device code expired before the authorization; run popbridge auth again")
		default:
			return nil, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// postToken posts form to a token endpoint. A refusal returns its error
// code (RFC 6749 §5.2) with an *oauth2.RetrieveError.
func postToken(ctx context.Context, tokenURL string, form url.Values) (*oauth2.Token, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	client := http.DefaultClient
	if c, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok && c != nil {
		client = c
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("oauth: token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, "", fmt.Errorf("oauth: token request: %w", err)
	}
	var tj struct {
		AccessToken  string `json:"access_token"`
		TokenType    string `json:"token_type"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int64  `json:"expires_in"`
		Error        string `json:"error"`
		Description  string `json:"error_description"`
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if ct == "application/x-www-form-urlencoded" || ct == "text/plain" {
		v, _ := url.ParseQuery(string(body))
		tj.AccessToken, tj.TokenType, tj.RefreshToken = v.Get("access_token"), v.Get("token_type"), v.Get("refresh_token")
		tj.Error, tj.Description = v.Get("error"), v.Get("error_description")
		fmt.Sscan(v.Get("expires_in"), &tj.ExpiresIn)
	} else if err := json.Unmarshal(body, &tj); err != nil && resp.StatusCode/100 == 2 {
		return nil, "", fmt.Errorf("oauth: token response: %w", err)
	}
	if resp.StatusCode/100 != 2 || tj.Error != "" {
		re := &oauth2.RetrieveError{Response: resp, Body: body, ErrorCode: tj.Error, ErrorDescription: tj.Description}
		code := tj.Error
		if code == "" {
			code = "http_" + resp.Status
		}
		return nil, code, re
	}
	if tj.AccessToken == "" {
		return nil, "", errors.New("oauth: token response without access_token")
	}
	tok := &oauth2.Token{AccessToken: tj.AccessToken, TokenType: tj.TokenType, RefreshToken: tj.RefreshToken}
	if tj.ExpiresIn > 0 {
		tok.Expiry = time.Now().Add(time.Duration(tj.ExpiresIn) * time.Second)
		tok.ExpiresIn = tj.ExpiresIn
	}
	return tok, "", nil
}
