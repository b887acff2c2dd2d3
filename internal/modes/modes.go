// Package modes declares, once, the words a popbridge configuration file
// uses to choose how a backend behaves (the TLS mode and the credentials
// sent upstream, what DELE does at QUIT, the OAuth2 provider) and the
// defaults of the backend settings a file may leave out.
//
// The backends (and backends/oauth) take these types in their Options and
// apply these defaults; package config types its settings with them and
// checks a file against the lists here; each backend's Options.String
// describes an account with them. Error messages list the accepted words from the same
// lists, so a word added here is accepted, described and suggested
// everywhere at once.
//
// The package imports nothing of popbridge, so that config can check a
// file without importing the backends, and with them proxy and cache.
// The words are plain data known when compiling, which is why they are
// declared here rather than registered by the backends at run time: a
// registry would make config.Validate depend on which backends the
// program linked in, and config's tests on the backends.
// Defaults of settings that only code sets (timeouts of the POP3 client,
// TOP tuning, backoff) stay in their backend. A new backend adds its words
// and defaults here, in a file of its own.
package modes

import "strings"

// A List is the words one setting accepts, its default first.
type List[T ~string] []T

// Default returns the word an empty setting means.
func (l List[T]) Default() T { return l[0] }

// Or returns v, or the default when v is empty.
func (l List[T]) Or(v T) T {
	if v == "" {
		return l.Default()
	}
	return v
}

// Has reports whether v is one of the words of l (not the empty word).
func (l List[T]) Has(v T) bool {
	for _, w := range l {
		if w == v {
			return true
		}
	}
	return false
}

// String lists the words for people: "a, b or c".
func (l List[T]) String() string {
	var b strings.Builder
	for i, w := range l {
		switch {
		case i == 0:
		case i == len(l)-1:
			b.WriteString(" or ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(string(w))
	}
	return b.String()
}

// TLS says how the connection to an upstream server is secured.
type TLS string

const (
	// TLSImplicit starts TLS when connecting (RFC 8314: port 993 for
	// IMAP, 995 for POP3).
	TLSImplicit TLS = "implicit"
	// TLSStartTLS connects in clear text and upgrades with STARTTLS (IMAP)
	// or STLS (POP3) before authenticating; a server without it is
	// refused.
	TLSStartTLS TLS = "starttls"
	// TLSNone never encrypts, passwords included: for loopback tests only.
	TLSNone TLS = "none"
)

// TLSModes are the TLS modes of the upstream backends (imap, pop3).
var TLSModes = List[TLS]{TLSImplicit, TLSStartTLS, TLSNone}

// Auth says which credentials go to an upstream server.
type Auth string

const (
	// AuthPassword sends the configured user name and password.
	AuthPassword Auth = "password"
	// AuthXOAUTH2 sends the configured user name and an OAuth2 access
	// token with the XOAUTH2 mechanism.
	AuthXOAUTH2 Auth = "xoauth2"
	// AuthOAuthBearer is AuthXOAUTH2 with OAUTHBEARER (RFC 7628).
	AuthOAuthBearer Auth = "oauthbearer"
	// AuthPassthrough sends the POP3 client's own user name and password,
	// so that the upstream server checks them.
	AuthPassthrough Auth = "passthrough"
)

// Token reports whether a sends an OAuth2 access token.
func (a Auth) Token() bool { return a == AuthXOAUTH2 || a == AuthOAuthBearer }

// OnDelete says what DELE followed by QUIT does to a message. Each backend
// offers some of the policies (its List, e.g. IMAPOnDelete); Keep is
// common to all.
type OnDelete string

const (
	// Keep changes nothing upstream and hides the messages from POP,
	// across restarts (tombstones in the cache store).
	Keep OnDelete = "keep"
	// Remove unlinks the message file (maildir).
	Remove OnDelete = "remove"
	// Delete deletes the messages upstream: DELE then QUIT (pop3), or
	// messages.batchDelete, for good (gmail).
	Delete OnDelete = "delete"
	// Expunge sets \Deleted and removes the messages with UID EXPUNGE
	// (imap).
	Expunge OnDelete = "expunge"
	// Seen sets \Seen and hides the messages from POP (imap).
	Seen OnDelete = "seen"
	// Archive removes the labels served (gmail; for INBOX, Gmail's
	// Archive).
	Archive OnDelete = "archive"
	// Trash moves the messages to the trash, which Gmail empties after
	// 30 days (gmail).
	Trash OnDelete = "trash"
	// MarkRead removes the UNREAD label and hides the messages from POP
	// (gmail).
	MarkRead OnDelete = "mark-read"
)

// movePrefix starts the imap policy that moves messages to a folder.
const movePrefix = "move:"

// Move returns the policy that moves deleted messages to folder (imap).
func Move(folder string) OnDelete { return OnDelete(movePrefix + folder) }

// MoveTarget returns the folder of a Move policy, and whether p is one.
func (p OnDelete) MoveTarget() (folder string, ok bool) {
	return strings.CutPrefix(string(p), movePrefix)
}
