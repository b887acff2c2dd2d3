package oauth

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// LoopbackOptions tune Loopback. Every field is optional except Out.
type LoopbackOptions struct {
	// Out receives the instructions for the user (the URL to open).
	Out io.Writer
	// Paste, if set, is read line by line for the final redirected URL
	// (http://127.0.0.1:PORT/?code=...&state=...) pasted by a user whose
	// browser runs on another machine. Whichever comes first wins: the
	// browser's request to the loopback listener or a pasted URL.
	Paste io.Reader
	// SSHHint, if set (e.g. "user@host"), makes Loopback print the ssh
	// command that forwards the loopback port from the user's machine.
	SSHHint string
	// ListenAddr is where the redirect listener binds. Empty means
	// 127.0.0.1:0, a free port on the IPv4 loopback (RFC 8252 §7.3,
	// §8.3).
	ListenAddr string
	// AuthParams are extra authorization request parameters.
	AuthParams []oauth2.AuthCodeOption
}

// Loopback runs the authorization code flow with PKCE (RFC 7636, S256)
// and a loopback redirect (RFC 8252 §7.3): it listens on a free loopback
// port, prints the authorization URL to opts.Out, waits for the code
// (from the redirect or from a pasted URL), checks state and exchanges
// the code. cfg.RedirectURL is set to the listener's URL on a copy.
// HTTP requests use the client in ctx (oauth2.HTTPClient), if any.
func Loopback(ctx context.Context, cfg *oauth2.Config, opts LoopbackOptions) (*oauth2.Token, error) {
	addr := opts.ListenAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("oauth: loopback listener: %w", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	c := *cfg
	c.RedirectURL = "http://127.0.0.1:" + strconv.Itoa(port) + "/"

	state := randomString(24)
	verifier := oauth2.GenerateVerifier()
	params := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}, opts.AuthParams...)
	authURL := c.AuthCodeURL(state, params...)

	type result struct {
		code string
		err  error
	}
	results := make(chan result, 2)
	deliver := func(r result) {
		select {
		case results <- r:
		default:
		}
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			code, err := codeFromQuery(r.URL.Query(), state)
			if errors.Is(err, errNoCode) {
				http.NotFound(w, r) // e.g. /favicon.ico
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, "<p>popbridge: %s</p>", html.EscapeString(err.Error()))
			} else {
				fmt.Fprint(w, "<p>popbridge received the authorization. You may close this window.</p>")
			}
			// The page reaches the browser before the flow may end and
			// shut the server down.
			http.NewResponseController(w).Flush()
			deliver(result{code, err})
		}),
	}
	go srv.Serve(ln)
	defer func() {
		// Let a handler still answering finish, then close the rest.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()

	w := opts.Out
	fmt.Fprintf(w, "Open this URL in a browser and grant access:\n\n  %s\n\n", authURL)
	if opts.SSHHint != "" {
		fmt.Fprintf(w, "The browser must reach 127.0.0.1:%d on this machine. If it runs on another\n"+
			"machine, first run this there, in another terminal:\n\n  ssh -L %d:127.0.0.1:%d %s\n\n", port, port, port, opts.SSHHint)
	}
	if opts.Paste != nil {
		fmt.Fprintf(w, "Or, if the browser ends on an error page at http://127.0.0.1:%d/?code=...,\n"+
			"copy that page's full URL from the address bar and paste it here, then press Enter.\n\n", port)
		go func() {
			sc := bufio.NewScanner(opts.Paste)
			sc.Buffer(make([]byte, 0, 4096), 64<<10)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if line == "" {
					continue
				}
				u, err := url.Parse(line)
				if err != nil {
					fmt.Fprintf(w, "That is not a URL (%v); paste the full address, or wait for the browser.\n", err)
					continue
				}
				code, err := codeFromQuery(u.Query(), state)
				if errors.Is(err, errNoCode) {
					fmt.Fprintln(w, "That URL has no code= parameter; paste the address of the page the browser was sent to.")
					continue
				}
				deliver(result{code, err})
				return
			}
		}()
	}
	fmt.Fprintln(w, "Waiting for the authorization...")

	var r result
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r = <-results:
	}
	if r.err != nil {
		return nil, r.err
	}
	tok, err := c.Exchange(ctx, r.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("oauth: exchanging the authorization code: %w", err)
	}
	return tok, nil
}

var errNoCode = errors.New("no code in the redirect")

// codeFromQuery returns the code of a redirect's query after checking
// its state (RFC 6749 §4.1.2, §10.12).
func codeFromQuery(q url.Values, state string) (string, error) {
	if e := q.Get("error"); e != "" {
		msg := "the authorization server refused: " + e
		if d := q.Get("error_description"); d != "" {
			msg += " (" + d + ")"
		}
		return "", errors.New("oauth: " + msg)
	}
	code := q.Get("code")
	if code == "" {
		return "", errNoCode
	}
	if q.Get("state") != state {
		return "", errors.New("oauth: the redirect's state does not match this request (a stale or forged URL)")
	}
	return code, nil
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
