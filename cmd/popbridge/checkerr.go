package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"

	goimap "github.com/emersion/go-imap/v2"
	"google.golang.org/api/googleapi"

	"github.com/popbridge/popbridge/backends/oauth"
	pop3relay "github.com/popbridge/popbridge/backends/pop3"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/tlsconf"
	"github.com/popbridge/popbridge/proxy"
)

// plainFailure says in plain words why checking account a (of the
// configuration file cfgPath) failed, and what to do: no POP3 or IMAP
// reply codes, no texts meant for POP3 clients.
func plainFailure(a config.Account, cfgPath string, err error) string {
	var u *config.Upstream
	switch {
	case a.Backend.IMAP != nil:
		u = &a.Backend.IMAP.Upstream
	case a.Backend.POP3 != nil:
		u = &a.Backend.POP3.Upstream
	}
	server, addr := "the server", "addr" // and the key that names it
	switch {
	case u != nil:
		server = u.Addr
	case a.Backend.Gmail != nil:
		server, addr = "the Gmail API", "api_endpoint"
		if u, err := url.Parse(cmp.Or(a.Backend.Gmail.APIEndpoint, modes.DefaultGmailEndpoint)); err == nil && u.Host != "" {
			server = u.Host
		}
	case a.Backend.Graph != nil:
		server, addr = "Microsoft Graph", "api_endpoint"
		if u, err := url.Parse(cmp.Or(a.Backend.Graph.APIEndpoint, modes.DefaultGraphEndpoint)); err == nil && u.Host != "" {
			server = u.Host
		}
	}
	auth := fmt.Sprintf("popbridge auth %s -config %s", a.User, cfgPath)

	var (
		apiErr    *googleapi.Error
		dnsErr    *net.DNSError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
		netErr    net.Error
	)
	switch {
	case errors.Is(err, oauth.ErrNoGrant):
		return "no OAuth2 grant is stored for this account yet; run " + auth
	case errors.Is(err, oauth.ErrGrant):
		return "the OAuth2 grant has expired or was revoked; run " + auth + " again"
	case errors.As(err, &apiErr) && apiErr.Code == http.StatusForbidden &&
		(hasAPIReason(apiErr, "accessNotConfigured") || hasAPIReason(apiErr, "SERVICE_DISABLED")):
		return fmt.Sprintf("the Gmail API is not enabled in the Google Cloud project of this OAuth2 client; "+
			"enable it (APIs & Services → Library → Gmail API → Enable) and try again in a few minutes (Google said %q)", apiErr.Message)
	case errors.As(err, &apiErr) && apiErr.Code == http.StatusForbidden &&
		(hasAPIReason(apiErr, "insufficientPermissions") || hasAPIReason(apiErr, "ACCESS_TOKEN_SCOPE_INSUFFICIENT")):
		return "the OAuth2 grant does not allow reading this mailbox through the Gmail API; " +
			"leave oauth2.scopes out (or include " + oauth.GmailModifyScope + ") and run " + auth + " again"
	case errors.As(err, &apiErr) && apiErr.Code == http.StatusUnauthorized:
		return "Gmail refused the OAuth2 access token; run " + auth + " again"
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Sprintf("the host %s does not exist (DNS lookup failed); check %s", dnsErr.Name, addr)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot look up the host %s (%s); check the DNS settings of this machine", dnsErr.Name, dnsErr.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing answers at %s (connection refused); check %s and that the server runs", server, addr)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("%s cannot be reached from here (no route); check %s and the network", server, addr)
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("the certificate of %s is not signed by an authority this machine trusts; "+
			"set ca_file to the PEM file of the authority (or of the certificate itself)", server)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("the certificate of %s is not valid for the name %s (it is for %s); set server_name to one of its names",
			server, hostErr.Host, listNames(hostErr.Certificate))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Sprintf("the certificate of %s has expired or is not valid yet; the server's owner must renew it", server)
	case errors.As(err, &invalid):
		return fmt.Sprintf("the certificate of %s is not acceptable (%s)", server, invalid.Error())
	case errors.As(err, &record):
		return fmt.Sprintf("%s does not start TLS when connected (tls: implicit); "+
			"use its TLS port (usually 995 for POP3, 993 for IMAP) or set tls: starttls", server)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout(), strings.Contains(err.Error(), "i/o timeout"):
		return fmt.Sprintf("%s did not answer in time; check %s, that a firewall lets the connection through, "+
			"and the tls setting (a TLS port waits silently for tls: none or starttls)", server, addr)
	case errors.Is(err, proxy.ErrAuthFailed):
		what := "wrong user name or password"
		if u != nil && (u.Auth.Token()) {
			what = "the OAuth2 token was refused; if the grant was revoked, run " + auth
		}
		user := ""
		if u != nil && u.Username != "" {
			user = fmt.Sprintf(" of %q", u.Username)
		}
		return fmt.Sprintf("%s refused the login%s: %s%s", server, user, what, serverSaid(err))
	case errors.Is(err, proxy.ErrInUse):
		return fmt.Sprintf("the mailbox at %s is in use by another session; try again later%s", server, serverSaid(err))
	}
	return withoutReplyTexts(err.Error())
}

// hasAPIReason reports whether a Google API error carries reason.
func hasAPIReason(e *googleapi.Error, reason string) bool {
	for _, item := range e.Errors {
		if item.Reason == reason {
			return true
		}
	}
	for _, d := range e.Details {
		if m, ok := d.(map[string]any); ok && m["reason"] == reason {
			return true
		}
	}
	return false
}

// serverSaid quotes the upstream server's own words in err, if any.
func serverSaid(err error) string {
	var re *pop3relay.ResponseError
	var ie *goimap.Error
	text := ""
	switch {
	case errors.As(err, &re):
		text = re.Text
	case errors.As(err, &ie):
		text = ie.Text
	}
	if text == "" {
		return ""
	}
	return fmt.Sprintf(" (the server said %q)", text)
}

// withoutReplyTexts removes from msg the reply texts popbridge sends its
// POP3 clients, which say nothing to the owner.
func withoutReplyTexts(msg string) string {
	for _, e := range []*proxy.Error{proxy.ErrAuthFailed, proxy.ErrInUse, proxy.ErrTemporary, proxy.ErrPermanent} {
		msg = strings.ReplaceAll(msg, e.Error()+": ", "")
	}
	return replyCodeRE.ReplaceAllString(msg, "")
}

// replyCodeRE matches the response codes of the texts meant for clients.
var replyCodeRE = regexp.MustCompile(`\[(AUTH|IN-USE|LOGIN-DELAY|SYS/TEMP|SYS/PERM)\] `)

// listNames lists the names a certificate is for, in words.
func listNames(c *x509.Certificate) string {
	if c == nil {
		return "other names"
	}
	if names := tlsconf.CertNames(c); len(names) > 0 {
		return strings.Join(names, ", ")
	}
	return "no names"
}
