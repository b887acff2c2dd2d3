package modes

import "time"

// The maildir backend.
var (
	// MaildirOnDelete are the maildir delete policies.
	MaildirOnDelete = List[OnDelete]{Remove, Keep}
)

// The pop3 relay backend.
var (
	// POP3Auth are the credentials the pop3 backend can send.
	POP3Auth = List[Auth]{AuthPassword, AuthXOAUTH2, AuthPassthrough}
	// POP3OnDelete are the pop3 delete policies.
	POP3OnDelete = List[OnDelete]{Delete, Keep}
	// XOAUTH2Forms are the ways AUTH XOAUTH2 can be sent to a POP3 server.
	XOAUTH2Forms = List[XOAUTH2Form]{XOAUTH2OneLine, XOAUTH2TwoLine}
)

// XOAUTH2Form says how AUTH XOAUTH2 is sent to a POP3 server.
type XOAUTH2Form string

const (
	// XOAUTH2OneLine sends AUTH XOAUTH2 and the response on one line
	// (Gmail).
	XOAUTH2OneLine XOAUTH2Form = "one-line"
	// XOAUTH2TwoLine sends AUTH XOAUTH2, then the response after "+ "
	// (Outlook).
	XOAUTH2TwoLine XOAUTH2Form = "two-line"
)

// The imap backend.
var (
	// IMAPAuth are the credentials the imap backend can send.
	IMAPAuth = List[Auth]{AuthPassword, AuthXOAUTH2, AuthOAuthBearer, AuthPassthrough}
	// IMAPOnDelete are the imap delete policies; Move(FOLDER) stands for
	// every folder.
	IMAPOnDelete = List[OnDelete]{Expunge, Move("FOLDER"), Seen, Keep}
)

// Defaults of the imap settings.
const (
	DefaultIMAPFolder         = "INBOX"
	DefaultIMAPDialTimeout    = 15 * time.Second
	DefaultIMAPCommandTimeout = 60 * time.Second
)

// The gmail backend.
var (
	// GmailOnDelete are the gmail delete policies.
	GmailOnDelete = List[OnDelete]{Archive, Trash, Delete, MarkRead, Keep}
	// GmailDeleteScopes are the OAuth2 scopes that allow Delete
	// (messages.batchDelete); gmail.modify does not.
	GmailDeleteScopes = []string{
		"https://mail.google.com/",
		"https://www.googleapis.com/auth/gmail.messages",
		"https://www.googleapis.com/auth/gmail.messages.delete",
	}
)

// Defaults of the gmail settings.
const (
	// DefaultGmailLabel is the label served when none is set.
	DefaultGmailLabel          = "INBOX"
	DefaultGmailEndpoint       = "https://gmail.googleapis.com/"
	DefaultGmailMaxConcurrent  = 5
	DefaultGmailQuotaPerMinute = 6000 // the per-user limit
	DefaultGmailCallTimeout    = 30 * time.Second
	DefaultGmailLoginWait      = 8 * time.Second
)
