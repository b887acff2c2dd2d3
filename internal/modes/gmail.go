package modes

import "time"

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
