package modes

import "time"

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
