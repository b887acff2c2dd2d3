package modes

import (
	"net"
	"strings"
	"time"
)

// Send says how an account's outgoing mail (SMTP submission) leaves
// popbridge: the type of an account's send section.
type Send string

const (
	// SendSMTP relays to an upstream submission server (backends/smtp).
	SendSMTP Send = "smtp"
	// SendGmail sends with the Gmail API's users.messages.send.
	SendGmail Send = "gmail"
	// SendGraph sends with Microsoft Graph's sendMail (MIME mode).
	SendGraph Send = "graph"
)

// SendTypes are the send types.
var SendTypes = List[Send]{SendSMTP, SendGmail, SendGraph}

// The smtp send type.
var (
	// SMTPTLSModes are the TLS modes of an upstream submission server:
	// starttls (port 587) or implicit (port 465). There is no clear text.
	SMTPTLSModes = List[TLS]{TLSStartTLS, TLSImplicit}
	// SMTPAuth are the credentials the smtp send type can send.
	SMTPAuth = List[Auth]{AuthPassword, AuthXOAUTH2, AuthOAuthBearer}
)

// Defaults of the smtp send settings.
const (
	DefaultSMTPDialTimeout    = 30 * time.Second
	DefaultSMTPCommandTimeout = 5 * time.Minute
)

// SMTPServer is a provider's submission server.
type SMTPServer struct {
	Addr string
	TLS  TLS
}

// SMTPDefaults maps the host of a reading server (imap or pop3 backend)
// to its provider's submission server: an account reading from one of
// these hosts sends there by default, with the same credentials.
var SMTPDefaults = map[string]SMTPServer{
	"imap.gmail.com":        {"smtp.gmail.com:465", TLSImplicit},
	"pop.gmail.com":         {"smtp.gmail.com:465", TLSImplicit},
	"outlook.office365.com": {"smtp.office365.com:587", TLSStartTLS},
}

// SMTPDefault returns the submission server of the provider whose
// reading server is at addr (host:port), if popbridge knows it.
func SMTPDefault(addr string) (SMTPServer, bool) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	s, ok := SMTPDefaults[strings.ToLower(strings.TrimSuffix(host, "."))]
	return s, ok
}
