package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/modes"
)

func (c *cli) auth(ctx context.Context, args []string) error {
	fs := c.flags("auth", "ACCOUNT -config FILE [-flow loopback|device] [-port N]",
		"Obtain an OAuth2 refresh token for ACCOUNT, whose backend has an oauth2\n"+
			"section, and store it in the state directory (tokens/ACCOUNT.json, mode\n"+
			"0600, encrypted with token_key_file or POPBRIDGE_TOKEN_KEY if set).\n\n"+
			"The loopback flow (default for google and custom) prints a URL to open in\n"+
			"a browser; the browser is sent back to a port on 127.0.0.1. On a headless\n"+
			"server, forward that port with the printed ssh -L command, or paste the\n"+
			"URL the browser ends on here. The device flow (default for microsoft)\n"+
			"prints a code to enter at the provider's web page, on any device.\n"+
			"-port fixes the loopback port (for a fixed ssh -L forward or a firewall\n"+
			"rule); without it a free port is chosen.\n"+
			"A running server picks up the new token at its next login; no restart.")
	path := fs.String("config", "", "configuration `file` (YAML)")
	flow := fs.String("flow", "", "`loopback` or device; empty means the provider's default")
	port := fs.Int("port", 0, "loopback flow: the `port` on 127.0.0.1 the browser is sent back to; 0 picks a free one")
	account, err := parseAccountArgs(fs, args)
	if err != nil {
		return err
	}
	if *path == "" {
		return usageError("-config is required")
	}
	if *port < 0 || *port > 65535 {
		return usageError(fmt.Sprintf("-port %d: want a port number from 1 to 65535", *port))
	}
	cfg, acct, err := loadAccount(*path, account)
	if err != nil {
		return err
	}
	o, proto := app.OAuthAccount(*acct)
	if o == nil {
		return fmt.Errorf("account %s: its backend has no oauth2 section (see docs/oauth.md)", account)
	}
	oc, store, err := app.OAuthClient(o, proto, cfg.StateDir)
	if err != nil {
		return fmt.Errorf("account %s: %w", account, err)
	}
	if *flow == "" {
		*flow = oauth.DefaultFlow(o.Provider)
		if o.Provider == modes.ProviderCustom && oc.Endpoint.AuthURL == "" {
			*flow = "device"
		}
	}
	fmt.Fprintf(c.stdout, "Authorizing %s (%s, %s flow, scopes %s).\n\n", account, o.Provider, *flow, strings.Join(oc.Scopes, " "))
	var tok *oauth2.Token
	switch *flow {
	case "loopback":
		if oc.Endpoint.AuthURL == "" {
			return fmt.Errorf("account %s: the loopback flow needs auth_url", account)
		}
		opts := oauth.LoopbackOptions{Out: c.stdout, Paste: c.stdin, SSHHint: sshHint()}
		if *port != 0 {
			opts.ListenAddr = fmt.Sprintf("127.0.0.1:%d", *port)
		}
		if o.Provider == modes.ProviderGoogle {
			// A refresh token every time, even if access was granted before.
			opts.AuthParams = []oauth2.AuthCodeOption{oauth2.AccessTypeOffline, oauth2.ApprovalForce}
		}
		tok, err = oauth.Loopback(ctx, oc, opts)
	case "device":
		if *port != 0 {
			return usageError("-port is for the loopback flow; the device flow needs no port")
		}
		if o.Provider == modes.ProviderGoogle {
			fmt.Fprintln(c.stderr, "popbridge auth: warning: Google's device flow cannot grant Gmail scopes; use -flow loopback")
		}
		tok, err = oauth.Device(ctx, oc, oauth.DeviceOptions{Out: c.stdout})
	default:
		return usageError(fmt.Sprintf("unknown -flow %q (want loopback or device)", *flow))
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("account %s: interrupted; no token was saved", account)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("account %s: port %d on 127.0.0.1 is in use by another program; choose another -port, or stop that program", account, *port)
	case err != nil:
		return fmt.Errorf("account %s: %w", account, err)
	}
	if tok.RefreshToken == "" {
		fmt.Fprintln(c.stderr, "popbridge auth: warning: the provider sent no refresh token; the server can use this token only until it expires"+
			" (Microsoft: add the offline_access scope)")
	}
	enc := "not encrypted"
	if store.Key != nil {
		enc = "encrypted"
	}
	if cfg.State.Postgres() {
		if err := app.SaveSharedToken(cfg, account, store.Key, tok); err != nil {
			return fmt.Errorf("account %s: %w", account, err)
		}
		fmt.Fprintf(c.stdout, "\nToken for %s saved to the PostgreSQL state (%s).\n", account, enc)
		return nil
	}
	if err := store.Save(account, tok); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "\nToken for %s saved to %s (%s).\n", account, store.Path(account), enc)
	return nil
}

// sshHint returns "user@host" for the ssh -L line when this looks like a
// machine without a local browser (an SSH session, or Linux without a
// display), else "".
func sshHint() string {
	headless := os.Getenv("SSH_CONNECTION") != "" || os.Getenv("SSH_TTY") != "" ||
		runtime.GOOS == "linux" && os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == ""
	if !headless {
		return ""
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "THIS-HOST"
	}
	if ip := strings.Fields(os.Getenv("SSH_CONNECTION")); len(ip) == 4 {
		host = ip[2] // the address this session reached
	}
	user := os.Getenv("USER")
	if user == "" {
		user = "YOU"
	}
	return user + "@" + host
}
